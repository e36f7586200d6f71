"""Training overhead in the PyTorch trainers: step time with each `VariableUpdateCallback`, as a ratio to none.

For each trainer (Lightning `Trainer.fit`, Hugging Face `Trainer.train`) the
same model trains in one process in interleaved rounds: a fit without the
callback, a fit with it (a fresh callback and trainer each round; which goes
first alternates), both with the trainer's TensorBoard logging on. A timing
callback placed last takes the wall time between consecutive step ends, so
setup and teardown are left out and the callback's record is in; the median
over every timed step of a variant is reported.
"""

import os
import sys
import tempfile
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from torch_training import mlp  # noqa: E402

THREADS = 1
VARIANTS = ("no callback", "VariableUpdateCallback")


def _step_times(ends, warmup):
    """Seconds between consecutive step ends, after `warmup` steps."""
    return np.diff(np.asarray(ends[warmup:]))


def _lightning(quick, rounds, steps):
    import lightning.pytorch as pl  # pylint: disable=import-outside-toplevel
    from tb_varupdate.lightning import VariableUpdateCallback  # pylint: disable=import-outside-toplevel

    class Timer(pl.Callback):
        def __init__(self):
            self.ends = []

        def on_train_batch_end(self, *args):
            self.ends.append(time.perf_counter())

    class Classifier(pl.LightningModule):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.model(x), y)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-4)

    width, batch = (256, 64) if quick else (1024, 256)
    torch.manual_seed(0)
    module = Classifier(mlp(width))
    data = torch.utils.data.TensorDataset(torch.randn(batch * (steps + 2), width), torch.randint(0, 10, (batch * (steps + 2),)))

    def fit(variant, logdir):
        timer = Timer()
        callbacks = [VariableUpdateCallback(on_stuck="ignore")] if variant != "no callback" else []
        trainer = pl.Trainer(max_epochs=1, logger=pl.loggers.TensorBoardLogger(logdir, name=variant.replace(" ", "_")),
                             callbacks=callbacks + [timer], enable_progress_bar=False, enable_model_summary=False,
                             enable_checkpointing=False, accelerator="cpu")
        trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=batch))
        return timer.ends

    description = "Lightning %s `Trainer.fit`, %s-parameter MLP (as in the PyTorch section), batch %d, Adam, TensorBoardLogger" % (
        pl.__version__, "%.2fM" % (sum(p.numel() for p in module.parameters()) / 1e6), batch)
    return description, _interleaved(fit, rounds)


def _transformers(quick, rounds, steps):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers  # pylint: disable=import-outside-toplevel
    from tb_varupdate.transformers import VariableUpdateCallback  # pylint: disable=import-outside-toplevel

    class Timer(transformers.TrainerCallback):
        def __init__(self):
            self.ends = []

        def on_step_end(self, *args, **kwargs):
            self.ends.append(time.perf_counter())

    layers, width, length, batch = (1, 32, 16, 4) if quick else (4, 256, 64, 8)
    config = transformers.GPT2Config(n_layer=layers, n_embd=width, n_head=4, n_positions=length, vocab_size=1000)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    ids = torch.randint(0, 1000, (batch * (steps + 2), length), generator=torch.Generator().manual_seed(0))
    train = [{"input_ids": row, "labels": row} for row in ids]

    def fit(variant, logdir):
        timer = Timer()
        callbacks = [VariableUpdateCallback(on_stuck="ignore")] if variant != "no callback" else []
        args = transformers.TrainingArguments(os.path.join(logdir, variant.replace(" ", "_")), report_to="tensorboard",
                                              per_device_train_batch_size=batch, num_train_epochs=1, save_strategy="no",
                                              use_cpu=True, disable_tqdm=True, logging_steps=10, dataloader_num_workers=0)
        trainer = transformers.Trainer(model=model, args=args, train_dataset=train, callbacks=callbacks + [timer])
        trainer.remove_callback(transformers.PrinterCallback)
        trainer.train()
        return timer.ends

    description = "transformers %s `Trainer.train`, GPT-2 (%d layers, width %d, %.2fM parameters), sequences of %d, batch %d, AdamW, report_to=\"tensorboard\"" % (
        transformers.__version__, layers, width, sum(p.numel() for p in model.parameters()) / 1e6, length, batch)
    return description, _interleaved(fit, rounds)


def _interleaved(fit, rounds):
    """{variant: median step seconds} over `rounds` fits of each, alternating which goes first."""
    diffs = {variant: [] for variant in VARIANTS}
    with tempfile.TemporaryDirectory() as logdir, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the trainers' hints about this setup
        fit(VARIANTS[0], logdir)  # warm up imports and kernels
        for round_index in range(rounds):
            order = VARIANTS if round_index % 2 == 0 else VARIANTS[::-1]
            for variant in order:
                diffs[variant].extend(_step_times(fit(variant, logdir), warmup=2))
    return {variant: float(np.median(values)) for variant, values in diffs.items()}


def run(quick):
    # As in torch_training.py: TensorFlow blocked (a PyTorch-only environment)
    # and one intra-op thread on this shared 2-core machine.
    sys.modules.setdefault("tensorflow", None)
    torch.set_num_threads(THREADS)
    rounds, steps = (2, 4) if quick else (6, 20)
    parts = []
    for short, measure in (("Lightning", _lightning), ("Hugging Face Trainer", _transformers)):
        common.progress("trainers: %s" % short)
        description, times = measure(quick, rounds, steps)
        base = times["no callback"]
        rows = [(name, common.ms(seconds), "%.3fx" % (seconds / base), "%+.2f ms" % ((seconds - base) * 1e3))
                for name, seconds in times.items()]
        parts.append("**%s** (median step of %d interleaved fits of %d steps each; torch %s, %d thread):\n\n%s" % (
            description, rounds, steps, torch.__version__, torch.get_num_threads(),
            common.table(("variant", "step", "ratio", "added"), rows)))
    body = "\n\n".join(parts + [
        "Each callback is a `ParameterUpdateTracker` recording every optimizer step, so its cost is the "
        "PyTorch section's tracker cost on the same tensors; the trainers add a hook call each step. "
        "TensorFlow is blocked in this process, as in a PyTorch-only environment."])
    # No target: the issue asks for the ratios, not a bound (the tracker's own is in the PyTorch section).
    return common.Section("Training overhead, PyTorch trainers", body, [])


if __name__ == "__main__":
    sys.exit(common.main_for(run))
