"""Demo runs through the PyTorch trainers: one Lightning `Trainer.fit`, one Hugging Face `Trainer.train`.

Each trains a tiny model with a realistic bug for a few steps on the CPU,
recorded by the trainer's `VariableUpdateCallback` with no change to the
model. Importing this module imports Lightning, transformers and peft;
`demo.run_all` leaves these runs out when they are not installed. Nothing is
downloaded: the BERT model is built from a small config with random weights.
"""

import os
import tempfile
import warnings

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lightning.pytorch as pl  # noqa: E402
import peft  # noqa: E402
import transformers  # noqa: E402

from demo import catalogue  # noqa: E402
from tb_varupdate.lightning import VariableUpdateCallback as LightningCallback  # noqa: E402
from tb_varupdate.transformers import VariableUpdateCallback as TransformersCallback  # noqa: E402

SEED = 7
UPDATING, NEVER = "updating", "never_updated"
PRESENT, MISSING, NOT_LOGGED = "present", "missing", "not_logged"

SCENARIOS = []
_scenario = catalogue.registry(SCENARIOS, lambda: torch.manual_seed(SEED))


def _regression(rows=64, batch=8):
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(rows, 3, generator=generator) * 2 - 1
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch)


class _TwoHeads(pl.LightningModule):
    """A body with a main head and an auxiliary head whose loss term was dropped."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Linear(3, 8)
        self.head = torch.nn.Linear(8, 1)
        self.aux_head = torch.nn.Linear(8, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.head(torch.tanh(self.body(x))), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@_scenario("lightning_unused_head",
           "Lightning Trainer.fit (accumulate_grad_batches=2, one callback): aux_head is defined but unused",
           {"body.weight": (UPDATING, PRESENT), "body.bias": (UPDATING, PRESENT),
            "head.weight": (UPDATING, PRESENT), "head.bias": (UPDATING, PRESENT),
            "aux_head.weight": (NEVER, MISSING), "aux_head.bias": (NEVER, MISSING)})
def lightning_unused_head(run_dir):
    # The records go into the TensorBoardLogger's run, beside its "loss" scalar.
    logger = pl.loggers.TensorBoardLogger(os.path.dirname(run_dir), name=os.path.basename(run_dir), version="")
    trainer = pl.Trainer(max_epochs=3, accumulate_grad_batches=2, logger=logger, log_every_n_steps=1,
                         callbacks=[LightningCallback(stuck_after=8)], accelerator="cpu",
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="lightning")  # its hints about the tiny setup
        trainer.fit(_TwoHeads(), _regression())


class _ClsClassifier(torch.nn.Module):
    """BERT with a hand-made head on the [CLS] hidden state: the pooler runs, its output is unused."""

    def __init__(self):
        super().__init__()
        config = transformers.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=32, max_position_embeddings=8)
        self.bert = transformers.BertModel(config)
        self.classifier = torch.nn.Linear(16, 2)

    def forward(self, input_ids, labels=None):
        logits = self.classifier(self.bert(input_ids=input_ids).last_hidden_state[:, 0])
        return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}


def _lora_model():
    # "dense" was meant for the feed-forward layers; it also matches bert.pooler.dense.
    config = peft.LoraConfig(r=2, target_modules=["query", "dense"], modules_to_save=["classifier"])
    return peft.get_peft_model(_ClsClassifier(), config)


def _lora_expected():
    """Every row's verdict: adapters and the saved head update, the pooler's adapter and the frozen base do not."""
    model = _lora_model()
    expected = {name: (NEVER, NOT_LOGGED) for name, _ in model.named_buffers()}  # BERT's id buffers
    for name, parameter in model.named_parameters():
        updates = parameter.requires_grad and ".pooler.dense.lora_" not in name
        expected[name] = (UPDATING, PRESENT) if updates else (NEVER, MISSING)
    return expected


_LORA_EXPECTED = _lora_expected()


@_scenario("hf_lora_target_misses",
           "Hugging Face Trainer + PEFT LoRA: target 'dense' also hits the unused pooler, whose adapter stays at "
           "its zero init; the frozen base stays quiet",
           _LORA_EXPECTED,
           not_trainable={name for name in _LORA_EXPECTED if ".lora_" not in name and "modules_to_save" not in name})
def hf_lora_target_misses(run_dir):
    ids = torch.randint(0, 64, (32, 8), generator=torch.Generator().manual_seed(0))
    train = [{"input_ids": row, "labels": int(row[0] % 2)} for row in ids]
    with tempfile.TemporaryDirectory() as output_dir, warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="transformers")  # its hints about the tiny setup
        args = transformers.TrainingArguments(output_dir, report_to="none", num_train_epochs=3, learning_rate=1e-2,
                                              per_device_train_batch_size=8, save_strategy="no", use_cpu=True,
                                              disable_tqdm=True, logging_strategy="no")
        callback = TransformersCallback(log_dir=run_dir, stuck_after=8)
        trainer = transformers.Trainer(model=_lora_model(), args=args, train_dataset=train, callbacks=[callback])
        trainer.remove_callback(transformers.PrinterCallback)  # keeps the demo's own progress lines alone
        trainer.train()
