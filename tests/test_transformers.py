"""tb_varupdate.transformers.VariableUpdateCallback on real `Trainer.train` runs, read back by TensorBoard.

Tiny randomly initialised GPT-2 and BERT models from configs (nothing is
downloaded: HF_HUB_OFFLINE=1), synthetic token ids, a few optimizer steps on
the CPU through the real Trainer. Each test compares the verdicts with which
parameters really changed between the start and the end of training.
"""

import os
import subprocess
import sys
import warnings

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
from tensorboard.backend.event_processing import event_accumulator  # noqa: E402

import readback  # noqa: E402
from tb_varupdate.transformers import VariableUpdateCallback  # noqa: E402

VOCAB, LENGTH, ROWS, BATCH = 64, 8, 32, 8


class Tokens(torch.utils.data.Dataset):
    """Synthetic token ids; `labels` are the ids (language model) or a class per row."""

    def __init__(self, lm=True):
        self.ids = torch.randint(0, VOCAB, (ROWS, LENGTH), generator=torch.Generator().manual_seed(0))
        self.lm = lm

    def __len__(self):
        return ROWS

    def __getitem__(self, index):
        labels = self.ids[index] if self.lm else torch.tensor(index % 2)
        return {"input_ids": self.ids[index], "labels": labels}


def _gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, n_positions=LENGTH, vocab_size=VOCAB)
    return transformers.GPT2LMHeadModel(config)


def _bert_config(**kwargs):
    return transformers.BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=32, max_position_embeddings=LENGTH, **kwargs)


class ClsClassifier(torch.nn.Module):
    """A common hand-made head: a linear layer on the [CLS] hidden state.

    `BertModel` still computes its pooler, whose output nothing uses.
    """

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.bert = transformers.BertModel(_bert_config())
        self.classifier = torch.nn.Linear(16, 2)

    def forward(self, input_ids, labels=None):
        logits = self.classifier(self.bert(input_ids=input_ids).last_hidden_state[:, 0])
        return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}


def _train(tmp_path, model, dataset, callback=None, **kwargs):
    """Trains `model`; returns (its parameters before, the TensorBoard integration's run directory)."""
    kwargs = dict(dict(per_device_train_batch_size=BATCH, num_train_epochs=1, learning_rate=1e-2, logging_steps=1,
                       save_strategy="no", report_to="tensorboard", use_cpu=True, disable_tqdm=True), **kwargs)
    args = transformers.TrainingArguments(str(tmp_path / "out"), **kwargs)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = transformers.Trainer(model=model, args=args, train_dataset=dataset,
                                   callbacks=[callback or VariableUpdateCallback()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the Trainer's hints about the tiny setup
        trainer.train()
    board = [c for c in trainer.callback_handler.callbacks if type(c).__name__ == "TensorBoardCallback"]
    return before, board[0].logging_dir if board else None


def _rows(tmp_path, run_dir):
    return readback.verdicts(tmp_path / "out", run=os.path.relpath(run_dir, tmp_path / "out"))


def _assert_verdicts_match(rows, before, model):
    """A parameter is `never_updated` exactly when its value never changed; frozen ones never change."""
    rows = {name: row for name, row in rows.items() if row["role"] == "parameter"}  # not BERT's id buffers
    now = dict(model.named_parameters())
    changed = {name for name in before if not torch.equal(before[name], now[name].detach())}
    assert set(rows) == set(before)
    assert {name for name, row in rows.items() if row["status"] != "never_updated"} == changed
    assert not any(row["changed_steps"] for row in rows.values() if not row["trainable"])


def test_gpt2_frozen_embeddings_with_gradient_accumulation(tmp_path):
    model = _gpt2()
    model.transformer.wpe.requires_grad_(False)
    before, run_dir = _train(tmp_path, model, Tokens(), gradient_accumulation_steps=2, weight_decay=0.1)
    rows = _rows(tmp_path, run_dir)
    _assert_verdicts_match(rows, before, model)
    frozen = rows["transformer.wpe.weight"]
    assert (frozen["status"], frozen["trainable"], frozen["problem"]) == ("never_updated", False, False)
    assert rows["transformer.h.0.attn.c_attn.weight"]["status"] == "updating"
    # 4 batches, 2 accumulated per optimizer step: records at the Trainer's steps 1 and 2, as its scalars.
    steps = [step for step, _ in readback.records(run_dir)]
    accumulator = event_accumulator.EventAccumulator(run_dir)
    accumulator.Reload()
    assert steps == [event.step for event in accumulator.Scalars("train/loss")] == [1, 2]


def test_lora_adapters_update_and_the_frozen_base_stays_quiet(tmp_path):
    model = transformers.BertForSequenceClassification(_bert_config(num_labels=2))
    model = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["query", "value"],
                                                       modules_to_save=["classifier"]))
    before, run_dir = _train(tmp_path, model, Tokens(lm=False), weight_decay=0.1)
    rows = _rows(tmp_path, run_dir)
    _assert_verdicts_match(rows, before, model)
    adapters = [name for name in rows if ".lora_" in name]
    assert len(adapters) == 4 and all(rows[name]["status"] == "updating" for name in adapters)
    assert all(not row["trainable"] for name, row in rows.items() if ".lora_" not in name and "modules_to_save" not in name)
    assert not any(row["problem"] for row in rows.values())


def test_lora_target_that_matches_an_unused_module_is_flagged_at_its_zero_init(tmp_path):
    # "dense" also matches bert.pooler.dense, whose output the [CLS] head ignores.
    model = peft.get_peft_model(ClsClassifier(), peft.LoraConfig(r=2, target_modules=["query", "dense"],
                                                                 modules_to_save=["classifier"]))
    before, run_dir = _train(tmp_path, model, Tokens(lm=False))
    rows = _rows(tmp_path, run_dir)
    _assert_verdicts_match(rows, before, model)
    stuck = {name for name, row in rows.items() if row["problem"]}
    assert stuck == {name for name in rows if ".pooler.dense.lora_" in name} and len(stuck) == 2
    lora_b = rows[next(name for name in stuck if ".lora_B." in name)]
    assert (lora_b["status"], lora_b["gradient"]) == ("never_updated", "missing")
    assert "still at its zero init" in lora_b["diagnosis"] and "target_modules" in lora_b["diagnosis"]
    assert all(rows[name]["status"] == "updating" for name in rows if ".query.lora_" in name)


def test_without_tensorboard_reporting_it_writes_under_output_dir(tmp_path):
    model = _gpt2()
    before, run_dir = _train(tmp_path, model, Tokens(), report_to="none", max_steps=2)
    assert run_dir is None
    rows = readback.verdicts(tmp_path / "out" / "runs" / "varupdate")
    _assert_verdicts_match(rows, before, model)


def test_tensorboard_logging_dir_from_the_environment_is_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "out" / "board"))
    model = _gpt2()
    before, run_dir = _train(tmp_path, model, Tokens(), max_steps=2)
    assert run_dir == str(tmp_path / "out" / "board")
    _assert_verdicts_match(readback.verdicts(tmp_path / "out", run="board"), before, model)


def test_invalid_arguments_fail_at_construction():
    with pytest.raises(ValueError, match="every_n_steps"):
        VariableUpdateCallback(every_n_steps=True)


def test_missing_transformers_is_a_clear_import_error():
    code = "import sys; sys.modules['transformers'] = None; import tb_varupdate.transformers"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "pip install 'tb-varupdate[transformers]'" in result.stderr
