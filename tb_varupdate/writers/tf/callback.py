"""`VariableUpdateCallback`: the tracker for Keras 3 `model.fit`, no model changes.

Gradients only exist inside the train step, so for each fit the callback
(`_fit.FitHooks`) wraps the `apply` of every optimizer the model holds
(`model.optimizer` and optimizers kept as attributes, as custom-`train_step`
GANs do; a LossScaleOptimizer's outer one) and the model's `train_step`,
collecting what every `apply` of one step saw and logging once at the step's
end. No `on_train_batch_end` override: that would turn off Keras'
asynchronous dispatch.
"""

import os

import keras
import tensorflow as tf

from tb_varupdate.writers.common import Warnings
from tb_varupdate.writers.tf import fit as _fit
from tb_varupdate.writers.tf import optim as _tf_optim
from tb_varupdate.writers.tf.tracker import VariableUpdateTracker, describe_error

UPDATE_FREQ_CHOICES = ("batch", "epoch")


class VariableUpdateCallback(keras.callbacks.Callback):
    """Records every model variable's updates and gradient states during `fit`.

    Example:

    ```python
    model.fit(x, y, epochs=3,
              callbacks=[tb_varupdate.keras.VariableUpdateCallback("logs/run1")])
    ```

    Records go to `<log_dir>/train`, the run `keras.callbacks.TensorBoard(log_dir)`
    uses, under the tag `varupdate/<name>`, one record per train step with the
    gradients every optimizer applied in it. Reusing the callback in a later
    fit continues its steps. Whatever ends a fit, the model's optimizers,
    `train_step`, `jit_compile` and train function are as they were.

    Args:
      log_dir: the run's log directory.
      update_freq: "batch" (every training step, with gradients), an int N
        (every N steps, with gradients), or "epoch" (once per epoch, without
        gradient information).
      name: the tracker's name (tag `varupdate/<name>`).
      **tracker_kwargs: passed to `VariableUpdateTracker` (`on_stuck`,
        `stuck_after`, `track_rows`, `delta`, `allow`).

    Raises:
      ValueError: `update_freq` is not "batch", "epoch" or an int >= 1.
    """

    def __init__(self, log_dir="logs", update_freq="batch", name="model", **tracker_kwargs):
        super().__init__()
        if not (update_freq in UPDATE_FREQ_CHOICES or (
            isinstance(update_freq, int) and not isinstance(update_freq, bool) and update_freq >= 1
        )):
            raise ValueError(
                'update_freq must be "batch", "epoch" or an int >= 1. Received: update_freq=%r' % (update_freq,)
            )
        self.log_dir = os.fspath(log_dir)
        self.update_freq = update_freq
        self.name = name
        self._tracker_kwargs = tracker_kwargs
        self._tracker = None
        self._writer = None
        self._hooks = None
        self._warn = Warnings()

    @property
    def tracker(self):
        """The `VariableUpdateTracker`, once training has begun."""
        return self._tracker

    def on_train_begin(self, logs=None):
        model = self.model
        if self._tracker is None:
            every_n = 1 if self.update_freq in UPDATE_FREQ_CHOICES else self.update_freq
            self._tracker = VariableUpdateTracker(model, name=self.name, every_n_steps=every_n, **self._tracker_kwargs)
            _tf_optim.mark_fit(self._tracker)
        if self._writer is None:
            self._writer = self._open_writer(os.path.join(self.log_dir, "train"))
            if self._writer is None:
                return  # said in _open_writer; this fit trains without the callback's hooks
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None:
            # Continue the step count of a resumed fit, or of fits without this callback.
            self._tracker.continue_steps_from(int(optimizer.iterations.numpy()))
        self._records_at_begin = self._tracker.records_written
        if self.update_freq == "epoch":
            return
        if self._hooks is None or self._hooks.model is not model:
            self._hooks = _fit.FitHooks(model, self._tracker, self._writer, self._warn)
        self._hooks.begin()

    def _open_writer(self, run_dir):
        """The run's summary writer, or None with one warning when it cannot be created."""
        try:
            writer = tf.summary.create_file_writer(run_dir)
        except Exception as err:  # pylint: disable=broad-except
            # A log_dir under a regular file, or one not writable: the tool must
            # not take training down (Keras' own TensorBoard callback would).
            self._warn.once(
                "log-dir",
                "tb_varupdate: VariableUpdateCallback cannot write to %r (%s), so no variable "
                "updates are recorded in this fit; training goes on. Give a log_dir that is a "
                "directory, or that can be created and written." % (run_dir, describe_error(err)),
                stacklevel=2,
            )
            return None
        _fit.warn_other_writers(self._warn, run_dir, self._tracker)
        return writer

    def on_epoch_end(self, epoch, logs=None):
        if self._writer is None:
            return
        if self.update_freq == "epoch":
            optimizer = getattr(self.model, "optimizer", None)
            iterations = optimizer.iterations if optimizer is not None else None
            with self._writer.as_default():
                # The optimizer's step when it counts (a custom train_step may not use it).
                self._tracker.log(iterations if iterations is not None and int(iterations.numpy()) else None)
        _fit.flush(self._writer, self._warn, self.name)

    def on_train_end(self, logs=None):
        if self._writer is None:
            return
        if self._hooks is not None:
            self._hooks.end()
        _fit.flush(self._writer, self._warn, self.name)
        if self._tracker is not None:
            self._tracker.final_check()
            _fit.warn_if_silent(self._warn, self._tracker, self._hooks, self._records_at_begin)
