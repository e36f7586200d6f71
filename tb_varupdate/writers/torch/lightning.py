"""`VariableUpdateCallback`: `varupdate` records from PyTorch Lightning's `Trainer`.

```python
import lightning.pytorch as pl
from tb_varupdate.lightning import VariableUpdateCallback

trainer = pl.Trainer(max_epochs=3, callbacks=[VariableUpdateCallback()])
trainer.fit(model, train_loader)   # then: tb-varupdate check lightning_logs
```

No change to the `LightningModule`: the callback builds a
`tb_varupdate.torch.ParameterUpdateTracker` on the module when `fit` starts
and calls its `log(step)` after every batch on which the trainer stepped an
optimizer, so every optimizer it configured is covered (automatic
optimization, or several stepped by hand in manual optimization), batches that
only accumulate gradients write nothing, and `precision="16-mixed"` steps that
`GradScaler` skipped are recorded (non-finite gradient, unchanged values:
healthy). The trainable flag is read at every record, so layers that a
fine-tuning callback (`BackboneFinetuning`) unfreezes later show when they
started to train. Only the global-zero rank writes.

Lightning is imported here and nowhere else in the package; this module
works with `lightning` (`lightning.pytorch`) and with `pytorch_lightning`.
"""

import importlib
import os
import warnings

from tb_varupdate.writers.torch.tracker import ParameterUpdateTracker
from tb_varupdate.writers import common

__all__ = ["VariableUpdateCallback"]

SUPPORTED = (2, 0)  # the oldest Lightning major.minor tested against this API
_PACKAGES = ("lightning.pytorch", "pytorch_lightning")


def _version(module):
    parts = []
    for part in str(getattr(module, "__version__", "0")).split(".")[:2]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _installed():
    """The Lightning packages installed, as modules: lightning.pytorch and/or pytorch_lightning.

    Raises:
      ImportError: neither is installed, or one is older than `SUPPORTED`.
    """
    found = []
    for name in _PACKAGES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if _version(module) < SUPPORTED:
            raise ImportError(
                "tb_varupdate.lightning supports PyTorch Lightning %d.%d or newer; %s %s is "
                "installed. Upgrade with: pip install -U 'tb-varupdate[lightning]'"
                % (SUPPORTED + (name, module.__version__))
            )
        found.append(module)
    if not found:
        raise ImportError(
            "tb_varupdate.lightning needs PyTorch Lightning (the `lightning` or the "
            "`pytorch_lightning` package), which is not installed: pip install 'tb-varupdate[lightning]'"
        )
    return found


_MODULES = _installed()
# Both packages may be installed side by side (`lightning` pulls in
# `pytorch_lightning`), each with its own Trainer that accepts only its own
# Callback class: the callback derives from every installed one.
_BASES = tuple(module.Callback for module in _MODULES)


def _tensorboard_logger(trainer):
    """The trainer's first TensorBoardLogger, or None."""
    for logger in getattr(trainer, "loggers", None) or []:
        if any(isinstance(logger, module.loggers.TensorBoardLogger) for module in _MODULES):
            return logger
    return None


def _logged_step(trainer):
    """The step Lightning logs this batch's scalars at.

    The logger connector passes `fit_loop.epoch_loop._batches_that_stepped` to
    `log_metrics`: during `on_train_batch_end` it is the count of earlier
    batches that stepped, which is `trainer.global_step - 1` with one
    optimizer, and stays one per batch when several are stepped by hand
    (where `global_step` counts each optimizer's steps).
    """
    step = getattr(getattr(trainer.fit_loop, "epoch_loop", None), "_batches_that_stepped", None)
    return int(step) if isinstance(step, int) else max(int(trainer.global_step) - 1, 0)


class VariableUpdateCallback(*_BASES):
    """Records each parameter's change and gradient state from `Trainer.fit`.

    Records go into the run of the trainer's `TensorBoardLogger` (through its
    `SummaryWriter`, next to the logged scalars and at their step), else into
    `log_dir`. Open TensorBoard's "Variable Updates" tab, or run
    `tb-varupdate check <logger's save_dir>`.

    `fit` called again with the same module and destination continues the
    same records (one tracker); another module or destination starts a new one.

    Args:
      name: the records' name; tag `varupdate/<name>`.
      every_n_steps: record only at logged steps that are multiples of it.
      on_stuck: "warn", "raise" or "ignore": what the tracker's training-time
        check does about trainable parameters that never changed.
      allow: regular expressions of parameter names accepted as stuck.
      log_dir: where to write instead of the logger's run. Default: the
        `TensorBoardLogger`'s run if there is one, else
        `<trainer.default_root_dir>/varupdate`.
      **tracker_options: other `ParameterUpdateTracker` options
        (`stuck_after`, `delta`, `buffers`, `zero_init`).

    Raises:
      ValueError: `name` or `every_n_steps` is invalid.
    """

    def __init__(self, name="model", every_n_steps=1, on_stuck="warn", allow=(), log_dir=None, **tracker_options):
        super().__init__()
        common.check_name(name)
        common.check_every_n_steps(every_n_steps)
        self.name, self.every_n_steps, self.log_dir = name, every_n_steps, log_dir
        self._options = dict(tracker_options, on_stuck=on_stuck, allow=tuple(allow))
        self.tracker, self._key, self._last_global_step = None, None, None

    def _destination(self, trainer):
        """`{"writer": SummaryWriter}` or `{"log_dir": path}`: where records go."""
        if self.log_dir is not None:
            return {"log_dir": self.log_dir}
        logger = _tensorboard_logger(trainer)
        if logger is None:
            return {"log_dir": os.path.join(trainer.default_root_dir, "varupdate")}
        from torch.utils.tensorboard import SummaryWriter  # pylint: disable=import-outside-toplevel

        experiment = logger.experiment
        if isinstance(experiment, SummaryWriter):
            return {"writer": experiment}
        # tensorboardX's writer takes other protos: a second event file in the same run.
        return {"log_dir": logger.log_dir}

    def on_fit_start(self, trainer, pl_module):
        """Builds the tracker (global-zero rank only), or keeps the previous fit's."""
        if not trainer.is_global_zero:
            return
        try:
            destination = self._destination(trainer)
            key = (id(pl_module), tuple((k, id(v) if k == "writer" else v) for k, v in destination.items()))
            if self.tracker is None or key != self._key:
                self._close()
                self.tracker = ParameterUpdateTracker(
                    pl_module, name=self.name, every_n_steps=self.every_n_steps, **destination, **self._options)
                self._key = key
            self._last_global_step = trainer.global_step
        except Exception as err:  # pylint: disable=broad-except
            self._warn("could not start", err)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # pylint: disable=unused-argument
        """Records after a batch whose optimizer step(s) ran; not after accumulating ones."""
        if self.tracker is None or trainer.global_step == self._last_global_step:
            return
        self._last_global_step = trainer.global_step
        try:
            # The optimizers' learning rates go into the records (set up by now, whatever the strategy).
            self.tracker.read_learning_rates(*getattr(trainer, "optimizers", ()))
        except Exception:  # pylint: disable=broad-except
            pass  # only a richer diagnosis is lost
        self.tracker.log(_logged_step(trainer))  # never raises but for on_stuck="raise"

    def on_fit_end(self, trainer, pl_module):  # pylint: disable=unused-argument
        """Puts the records on disk; the tracker stays for another `fit`."""
        if self.tracker is not None:
            self.tracker.flush()

    def on_exception(self, trainer, pl_module, exception):  # pylint: disable=unused-argument
        """Puts the records written before the failure on disk."""
        if self.tracker is not None:
            self.tracker.flush()

    def _close(self):
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None

    def _warn(self, what, err):
        warnings.warn("tb_varupdate: VariableUpdateCallback %s and records nothing; training goes on. %s: %s"
                      % (what, type(err).__name__, err), stacklevel=2)
