"""tb_varupdate.lightning.VariableUpdateCallback on real `Trainer.fit` runs, read back by TensorBoard.

Every test trains a tiny LightningModule for a few steps through the real
Trainer, reads the verdicts back the way `tb-varupdate check` does, and
compares them with which parameters really changed between the start and the
end of training. CPU only: `precision="16-mixed"` is Lightning's
`MixedPrecision` plugin given a CPU `GradScaler`, the code path the flag takes
on CUDA.
"""

import os
import subprocess
import sys
from pathlib import Path
import warnings

import pytest
import torch

pl = pytest.importorskip("lightning.pytorch")
from lightning.pytorch.callbacks import BackboneFinetuning  # noqa: E402
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger  # noqa: E402
from lightning.pytorch.plugins.precision import MixedPrecision  # noqa: E402
from tensorboard.backend.event_processing import event_accumulator  # noqa: E402

import bounded  # noqa: E402
import readback  # noqa: E402
from tb_varupdate import cli  # noqa: E402
from tb_varupdate.lightning import VariableUpdateCallback  # noqa: E402

BATCHES, BATCH = 8, 8  # 8 batches an epoch


def _data(seed=0, features=4):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCHES * BATCH, features, generator=generator)
    y = x.sum(dim=1, keepdim=True)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH)


class Regressor(pl.LightningModule):
    """A backbone and a head; `aux_head` is defined but (the bug) never used in forward."""

    def __init__(self, with_unused_head=False, lr=0.05):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16))
        self.head = torch.nn.Linear(16, 1)
        if with_unused_head:
            self.aux_head = torch.nn.Linear(16, 1)
        self.lr = lr

    def forward(self, x):
        return self.head(torch.tanh(self.backbone(x)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=self.lr)


class Gan(pl.LightningModule):
    """Manual optimization with two optimizers, stepped discriminator first."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.automatic_optimization = False
        self.generator = torch.nn.Linear(2, 4)
        self.discriminator = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        real, _ = batch
        opt_g, opt_d = self.optimizers()
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        noise = torch.randn(real.shape[0], 2)
        ones, zeros = torch.ones(real.shape[0], 1), torch.zeros(real.shape[0], 1)
        d_loss = bce(self.discriminator(real), ones) + bce(self.discriminator(self.generator(noise).detach()), zeros)
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        g_loss = bce(self.discriminator(self.generator(noise)), ones)
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        self.log("g_loss", g_loss)

    def configure_optimizers(self):
        return (torch.optim.Adam(self.generator.parameters(), lr=1e-2),
                torch.optim.Adam(self.discriminator.parameters(), lr=1e-2))


def _trainer(root, callbacks, logger=True, **kwargs):
    kwargs.setdefault("max_epochs", 2)
    if logger is True:
        logger = TensorBoardLogger(str(root), name="run")
    return pl.Trainer(default_root_dir=str(root), logger=logger, callbacks=callbacks, log_every_n_steps=1,
                      enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                      accelerator="cpu", **kwargs)


def _values(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def _assert_verdicts_match(rows, before, module):
    """A parameter is `never_updated` exactly when its value never changed."""
    now = _values(module)
    changed = {name for name in before if not torch.equal(before[name], now[name])}
    assert set(rows) == set(before)
    assert {name for name, row in rows.items() if row["status"] != "never_updated"} == changed


def _scalar_steps(run_dir, tag):
    accumulator = event_accumulator.EventAccumulator(str(run_dir))
    accumulator.Reload()
    return [event.step for event in accumulator.Scalars(tag)]


def _fit(tmp_path, module, callback=None, callbacks=None, **kwargs):
    trainer = _trainer(tmp_path, callbacks or [callback or VariableUpdateCallback()], **kwargs)
    before = _values(module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's own hints (few workers, small logging interval)
        trainer.fit(module, _data())
    return trainer, before


def test_healthy_run_every_parameter_updates_at_the_logged_scalars_steps(tmp_path):
    module = Regressor()
    every_4 = VariableUpdateCallback(name="every_4", every_n_steps=4)
    trainer, before = _fit(tmp_path, module, callbacks=[VariableUpdateCallback(), every_4])
    rows = readback.verdicts(tmp_path, run="run/version_0")
    _assert_verdicts_match(rows, before, module)
    assert {row["status"] for row in rows.values()} == {"updating"}
    records = [step for step, _ in readback.records(trainer.logger.log_dir)]
    assert records == _scalar_steps(trainer.logger.log_dir, "loss") == list(range(2 * BATCHES))
    assert [step for step, _ in readback.records(trainer.logger.log_dir, name="every_4")] == [0, 4, 8, 12]


def test_unused_head_and_layer_frozen_by_mistake_with_gradient_accumulation(tmp_path):
    module = Regressor(with_unused_head=True)
    module.backbone[2].requires_grad_(False)  # meant to freeze the first layer
    trainer, before = _fit(tmp_path, module, accumulate_grad_batches=4)
    rows = readback.verdicts(tmp_path, run="run/version_0")
    _assert_verdicts_match(rows, before, module)
    assert {name: (rows[name]["status"], rows[name]["gradient"]) for name in ("aux_head.weight", "aux_head.bias")} == {
        "aux_head.weight": ("never_updated", "missing"), "aux_head.bias": ("never_updated", "missing")}
    assert rows["aux_head.weight"]["problem"] and "not on the path to the loss" in rows["aux_head.weight"]["diagnosis"]
    frozen = rows["backbone.2.weight"]
    assert (frozen["status"], frozen["trainable"], frozen["problem"]) == ("never_updated", False, False)
    # One record per optimizer step: 16 batches, 4 accumulated per step.
    assert [step for step, _ in readback.records(trainer.logger.log_dir)] == [0, 1, 2, 3]
    assert rows["head.weight"]["logged_steps"] == 4


def test_gan_with_manual_optimization_records_both_optimizers_once_per_batch(tmp_path):
    module = Gan()
    trainer, before = _fit(tmp_path, module, max_epochs=1)
    rows = readback.verdicts(tmp_path, run="run/version_0")
    _assert_verdicts_match(rows, before, module)
    assert {row["status"] for row in rows.values()} == {"updating"}
    assert trainer.global_step == 2 * BATCHES  # Lightning counts each optimizer's steps...
    steps = [step for step, _ in readback.records(trainer.logger.log_dir)]
    assert steps == _scalar_steps(trainer.logger.log_dir, "g_loss") == list(range(BATCHES))  # ...the logger batches


def test_fit_twice_continues_one_tracker(tmp_path):
    module = Regressor(with_unused_head=True)
    callback = VariableUpdateCallback()
    trainer = _trainer(tmp_path, [callback], max_epochs=1)
    before = _values(module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, _data())
        tracker = callback.tracker
        trainer.fit_loop.max_epochs = 2
        trainer.fit(module, _data(seed=1))
    assert callback.tracker is tracker
    report = cli.check(str(tmp_path))
    assert not report["runs"]["run/version_0"]["varupdate/model"].get("warnings")
    rows = readback.verdicts(tmp_path, run="run/version_0")
    _assert_verdicts_match(rows, before, module)
    assert rows["head.weight"]["logged_steps"] == 2 * BATCHES
    assert [step for step, _ in readback.records(trainer.logger.log_dir)] == list(range(2 * BATCHES))


def test_backbone_finetuning_unfreezes_and_the_trainable_flag_follows(tmp_path):
    module = Regressor()
    finetuning = BackboneFinetuning(unfreeze_backbone_at_epoch=1, backbone_initial_ratio_lr=0.5, verbose=False)
    callback = VariableUpdateCallback()
    trainer, before = _fit(tmp_path, module, callbacks=[finetuning, callback], max_epochs=3)
    rows = readback.verdicts(tmp_path, run="run/version_0")
    _assert_verdicts_match(rows, before, module)
    backbone = rows["backbone.0.weight"]
    assert (backbone["status"], backbone["trainable"], backbone["problem"]) == ("updating", True, False)
    trainable = [bool(update.trainable[0]) for _, update in readback.records(trainer.logger.log_dir)]
    assert trainable == [False] * BATCHES + [True] * 2 * BATCHES  # row 0 is backbone.0.weight
    assert backbone["changed_steps"] == 2 * BATCHES


def test_without_a_tensorboard_logger_it_writes_its_own_run(tmp_path):
    module = Regressor()
    _fit(tmp_path, module, logger=CSVLogger(str(tmp_path / "csv")), max_epochs=1)
    rows = readback.verdicts(tmp_path / "varupdate")
    assert {row["status"] for row in rows.values()} == {"updating"}


def test_bf16_mixed_precision_on_cpu(tmp_path):
    module = Regressor()
    _, before = _fit(tmp_path, module, precision="bf16-mixed", max_epochs=1)
    rows = readback.verdicts(tmp_path, run="run/version_0")
    _assert_verdicts_match(rows, before, module)


def test_fp16_amp_skipped_steps_are_healthy(tmp_path):
    """`precision="16-mixed"`'s own plugin, given a CPU GradScaler (the flag alone means bf16 on a CPU)."""

    class Overflowing(Regressor):
        def training_step(self, batch, batch_idx):
            # The first 3 steps overflow fp16 gradients at any loss scale: GradScaler skips them.
            return super().training_step(batch, batch_idx) * (1e30 if self.global_step < 3 else 1.0)

    module = Overflowing()
    before = _values(module)
    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    trainer, _ = _fit(tmp_path, module, plugins=[plugin])
    rows = readback.verdicts(tmp_path, run="run/version_0")
    _assert_verdicts_match(rows, before, module)
    assert [row["gradient_steps"]["non_finite"] for row in rows.values()] == [3] * len(rows)
    assert {row["status"] for row in rows.values()} == {"updating"} and not any(r["problem"] for r in rows.values())
    assert len(readback.records(trainer.logger.log_dir)) == 2 * BATCHES  # skipped steps are records too


# Run by the DDP test in a process of its own: Lightning spawns the two ranks from it.
DDP_FIT = """
import pathlib, sys
from lightning.pytorch.strategies import DDPStrategy
import test_lightning as t
t._fit(pathlib.Path(sys.argv[1]), t.Regressor(with_unused_head=True), max_epochs=1, devices=2,
       strategy=DDPStrategy(start_method="spawn", find_unused_parameters=True))
"""
DDP_DEADLINE_S = 300


def test_ddp_two_processes_rank_zero_writes_and_names_the_unused_head(tmp_path):
    """DDP over gloo, 2 spawned CPU processes: one event file, and the head DDP calls "unused" by name."""
    # In a process group of its own, so that on the deadline the ranks are killed too.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    result = bounded.run([sys.executable, "-c", DDP_FIT, str(tmp_path)], DDP_DEADLINE_S, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    # The workers wrote version_0 (the parent's logger, asked after they ended, would name a new version).
    assert len(list((tmp_path / "run" / "version_0").glob("events.out.tfevents.*"))) == 1
    rows = readback.verdicts(tmp_path, run="run/version_0")
    assert {name for name, row in rows.items() if row["problem"]} == {"aux_head.weight", "aux_head.bias"}
    assert rows["aux_head.weight"]["gradient"] == "missing"
    assert {row["logged_steps"] for row in rows.values()} == {BATCHES // 2}  # each rank takes half the batches


def test_pytorch_lightning_trainer_is_accepted_too(tmp_path):
    pytorch_lightning = pytest.importorskip("pytorch_lightning")

    class Module(pytorch_lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            return torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    trainer = pytorch_lightning.Trainer(default_root_dir=str(tmp_path), logger=False, max_epochs=1,
                                        callbacks=[VariableUpdateCallback(log_dir=str(tmp_path / "pl"))],
                                        enable_progress_bar=False, enable_checkpointing=False,
                                        enable_model_summary=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Module(), _data())
    assert {row["status"] for row in readback.verdicts(tmp_path / "pl").values()} == {"updating"}


def test_an_unwritable_log_dir_warns_and_training_goes_on(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    module = Regressor()
    trainer = _trainer(tmp_path, [VariableUpdateCallback(log_dir=str(blocker / "run"))], max_epochs=1)
    with pytest.warns(UserWarning, match="tb_varupdate"):
        trainer.fit(module, _data())
    assert trainer.global_step == BATCHES


def test_invalid_arguments_fail_at_construction():
    with pytest.raises(ValueError, match="every_n_steps"):
        VariableUpdateCallback(every_n_steps=0)
    with pytest.raises(ValueError, match="name"):
        VariableUpdateCallback(name="a/b")


def test_missing_lightning_is_a_clear_import_error():
    code = ("import sys; sys.modules['lightning'] = None; sys.modules['lightning.pytorch'] = None; "
            "sys.modules['pytorch_lightning'] = None; import tb_varupdate.lightning")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "pip install 'tb-varupdate[lightning]'" in result.stderr


class _LateHead(Regressor):
    """The optimizer is built from the parameters that exist then; a head added in `on_fit_start` is in none."""

    def on_fit_start(self):
        self.late_head = torch.nn.Linear(16, 1)

    def forward(self, x):
        hidden = torch.tanh(self.backbone(x))
        return self.head(hidden) + self.late_head(hidden) if hasattr(self, "late_head") else self.head(hidden)


def test_learning_rates_and_param_groups_reach_the_diagnosis(tmp_path):
    """The callback hands Lightning's optimizers to the tracker: lr recorded, a parameter in no group named so."""
    model = _LateHead(lr=0.05)
    before = _values(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _trainer(tmp_path, [VariableUpdateCallback()]).fit(model, _data())
    rows = readback.verdicts(tmp_path, run="run/version_0", tag="varupdate/model")
    (_, newest), = readback.records(tmp_path / "run" / "version_0")[-1:]
    assert newest.learning_rates[0] == pytest.approx(0.05)
    for name in ("late_head.weight", "late_head.bias"):
        assert rows[name]["status"] == "never_updated" and rows[name]["problem"]
        assert "in none of the optimizers' `param_groups`" in rows[name]["diagnosis"]
        assert "rebound" not in rows[name]["diagnosis"]
    assert all(rows[name]["status"] == "updating" for name in before)
