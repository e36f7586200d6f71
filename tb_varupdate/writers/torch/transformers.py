"""`VariableUpdateCallback`: `varupdate` records from the Hugging Face `transformers.Trainer`.

```python
from transformers import Trainer, TrainingArguments
from tb_varupdate.transformers import VariableUpdateCallback

args = TrainingArguments("out", report_to="tensorboard")
trainer = Trainer(model=model, args=args, train_dataset=train, callbacks=[VariableUpdateCallback()])
trainer.train()   # then: tb-varupdate check out/runs
```

No change to the model: the callback builds a
`tb_varupdate.torch.ParameterUpdateTracker` on the Trainer's model when
training begins and calls its `log(step)` in `on_optimizer_step`, the one hook
that runs after `optimizer.step()` and before `zero_grad()` (at `on_step_end`
the gradients are gone). So micro-batches of `gradient_accumulation_steps`
write nothing, and a step that AMP skipped is recorded (non-finite gradient,
unchanged values: healthy). The step is the one the Trainer logs its scalars
at (`state.global_step` once the step is counted). Frozen parameters (frozen
embeddings; everything but the adapters of a PEFT/LoRA model) are
non-trainable rows that should stay quiet, and a LoRA `lora_B` that never
leaves its zero init is diagnosed as such (the tracker's `zero_init`).

Records go into the run that the Trainer's TensorBoard integration
(`report_to="tensorboard"`) writes, as a second event file there. This module
is the only one in the package that imports transformers; the name is the
package's own submodule, and `import transformers` below is absolute, so it
is the library.
"""

import importlib
import inspect
import os
import warnings

from tb_varupdate.writers.torch.tracker import ParameterUpdateTracker
from tb_varupdate.writers import common

__all__ = ["VariableUpdateCallback"]


def _library():
    """The transformers library, checked to offer `TrainerCallback.on_optimizer_step`.

    Raises:
      ImportError: transformers is missing, or too old to call callbacks after
        the optimizer step (before 4.41).
    """
    try:
        library = importlib.import_module("transformers")
    except ImportError as err:
        raise ImportError(
            "tb_varupdate.transformers needs the Hugging Face `transformers` library, which "
            "is not installed: pip install 'tb-varupdate[transformers]'"
        ) from err
    if not hasattr(getattr(library, "TrainerCallback", None), "on_optimizer_step"):
        raise ImportError(
            "tb_varupdate.transformers needs transformers 4.41 or newer (TrainerCallback."
            "on_optimizer_step, the hook that runs while the gradients are still there); "
            "transformers %s is installed: pip install -U 'tb-varupdate[transformers]'"
            % getattr(library, "__version__", "?")
        )
    return library


_transformers = _library()


def _tensorboard_dir():
    """The run directory of the Trainer's TensorBoard integration, or None without one.

    A callback is not given the Trainer, but `CallbackHandler.call_event`, our
    caller, is the Trainer's handler: its `TensorBoardCallback` has just
    opened its writer in its own `on_train_begin`, which runs first (the
    reporting integrations come before the user's callbacks). Its default
    directory holds a timestamp, so it is read, not recomputed.
    """
    frame = inspect.currentframe()
    try:
        while frame is not None:
            handler = frame.f_locals.get("self")
            if isinstance(handler, _transformers.trainer_callback.CallbackHandler):
                for callback in handler.callbacks:
                    if type(callback).__name__ == "TensorBoardCallback":
                        return _writer_dir(callback)
                break
            frame = frame.f_back
    finally:
        del frame  # a frame held by a local keeps every caller's locals alive
    return None


def _writer_dir(callback):
    """Where a TensorBoardCallback writes: its writer's directory, else its `logging_dir` (5.x)."""
    get_logdir = getattr(getattr(callback, "tb_writer", None), "get_logdir", None)  # torch's and tensorboardX's
    directory = get_logdir() if callable(get_logdir) else None
    return directory or getattr(callback, "logging_dir", None)


class VariableUpdateCallback(_transformers.TrainerCallback):
    """Records each parameter's change and gradient state from `Trainer.train`.

    Args:
      name: the records' name; tag `varupdate/<name>`.
      every_n_steps: record only at steps that are multiples of it (as
        `logging_steps` does for the scalars).
      on_stuck: "warn", "raise" or "ignore": what the tracker's training-time
        check does about trainable parameters that never changed.
      allow: regular expressions of parameter names accepted as stuck.
      log_dir: where to write instead. Default: the TensorBoard integration's
        run; without one (`report_to` without "tensorboard"),
        `$TENSORBOARD_LOGGING_DIR`, else `<output_dir>/runs/varupdate`.
      **tracker_options: other `ParameterUpdateTracker` options
        (`stuck_after`, `delta`, `buffers`, `zero_init`).

    Raises:
      ValueError: `name` or `every_n_steps` is invalid.
    """

    def __init__(self, name="model", every_n_steps=1, on_stuck="warn", allow=(), log_dir=None, **tracker_options):
        common.check_name(name)
        common.check_every_n_steps(every_n_steps)
        self.name, self.every_n_steps, self.log_dir = name, every_n_steps, log_dir
        self._options = dict(tracker_options, on_stuck=on_stuck, allow=tuple(allow))
        self.tracker, self._key = None, None

    def _destination(self, args):
        return (self.log_dir or _tensorboard_dir() or os.getenv("TENSORBOARD_LOGGING_DIR")
                or os.path.join(args.output_dir, "runs", "varupdate"))

    def on_train_begin(self, args, state, control, model=None, **kwargs):  # pylint: disable=unused-argument
        """Builds the tracker on the world-zero process, or keeps the previous `train()`'s."""
        if not state.is_world_process_zero:
            return
        try:
            log_dir = self._destination(args)
            key = (id(model), log_dir)
            if self.tracker is None or key != self._key:
                if self.tracker is not None:
                    self.tracker.close()
                self.tracker = ParameterUpdateTracker(
                    model, log_dir=log_dir, name=self.name, every_n_steps=self.every_n_steps, **self._options)
                self._key = key
        except Exception as err:  # pylint: disable=broad-except
            warnings.warn("tb_varupdate: VariableUpdateCallback could not start and records nothing; "
                          "training goes on. %s: %s" % (type(err).__name__, err), stacklevel=2)

    def on_optimizer_step(self, args, state, control, **kwargs):  # pylint: disable=unused-argument
        """Records this step: the Trainer counts it (global_step + 1) right after this hook."""
        if self.tracker is not None:
            if kwargs.get("optimizer") is not None:
                # Its param groups' learning rates go into the records.
                self.tracker.read_learning_rates(kwargs["optimizer"])
            self.tracker.log(state.global_step + 1)  # never raises but for on_stuck="raise"

    def on_train_end(self, args, state, control, **kwargs):  # pylint: disable=unused-argument
        """Puts the records on disk; the tracker stays for another `train()` of the same model."""
        if self.tracker is not None:
            self.tracker.flush()
