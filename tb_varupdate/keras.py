"""`VariableUpdateCallback`: the tracker for Keras 3 `model.fit`, no model changes.

Gradients only exist inside Keras' train step, so when training begins the
callback wraps the model optimizer's `apply` (which `apply_gradients` and the
LossScaleOptimizer both go through) and logs right after each update, inside
the compiled train function. No `on_train_batch_end` override: that would turn
off Keras' asynchronous dispatch.
"""

import os
import warnings

import keras
import tensorflow as tf

from tb_varupdate.summary import VariableUpdateTracker

UPDATE_FREQ_CHOICES = ("batch", "epoch")


def _unscale(gradient, scale):
    if gradient is None:
        return None
    if isinstance(gradient, tf.IndexedSlices):
        return tf.IndexedSlices(gradient.values / tf.cast(scale, gradient.values.dtype), gradient.indices, gradient.dense_shape)
    return gradient / tf.cast(scale, gradient.dtype)


class VariableUpdateCallback(keras.callbacks.Callback):
    """Records every model variable's updates and gradient states during `fit`.

    Example:

    ```python
    model.fit(x, y, epochs=3,
              callbacks=[tb_varupdate.keras.VariableUpdateCallback("logs/run1")])
    ```

    Records go to `<log_dir>/train`, the run `keras.callbacks.TensorBoard(log_dir)`
    uses, under the tag `varupdate/<name>`.

    Args:
      log_dir: the run's log directory.
      update_freq: "batch" (every training step, with gradients), an int N
        (every N steps, with gradients), or "epoch" (once per epoch, without
        gradient information).
      name: the tracker's name (tag `varupdate/<name>`).
      **tracker_kwargs: passed to `VariableUpdateTracker` (`on_stuck`,
        `stuck_after`, `track_rows`).

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
        self._wrapped_optimizer = None

    @property
    def tracker(self):
        """The `VariableUpdateTracker`, once training has begun."""
        return self._tracker

    def on_train_begin(self, logs=None):
        model = self.model
        if self._tracker is None:
            every_n = 1 if self.update_freq in UPDATE_FREQ_CHOICES else self.update_freq
            self._tracker = VariableUpdateTracker(model, name=self.name, every_n_steps=every_n, **self._tracker_kwargs)
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "train"))
        optimizer = getattr(model, "optimizer", None)
        # Continue the step count of a resumed or repeated fit.
        iterations = int(optimizer.iterations.numpy()) if optimizer is not None else 0
        self._tracker._calls.assign(iterations)  # pylint: disable=protected-access
        if self.update_freq == "epoch" or optimizer is None:
            return
        if getattr(model, "jit_compile", False):
            warnings.warn(
                "tb_varupdate: turning off jit_compile for this fit: summaries cannot be "
                "written from an XLA-compiled train step. Use update_freq='epoch' to keep XLA."
            )
            model.jit_compile = False
        self._wrap(optimizer)
        # fit() built its train function before this callback ran; rebuild it
        # so the wrapped optimizer is traced into it.
        model.make_train_function(force=True)

    def _wrap(self, optimizer):
        original_apply = optimizer.apply
        tracker, writer = self._tracker, self._writer

        def apply(grads, trainable_variables=None):
            # A LossScaleOptimizer receives scaled gradients: log the true norms,
            # with the scale read before apply() halves or doubles it.
            scale = getattr(optimizer, "dynamic_scale", None)
            logged_grads = grads if scale is None else [_unscale(g, tf.identity(scale)) for g in grads]
            result = original_apply(grads, trainable_variables)
            if trainable_variables is None:
                gradients = list(logged_grads)
            else:
                gradients = list(zip(logged_grads, trainable_variables))
            with writer.as_default():
                tracker.log(None, gradients=gradients)
            return result

        optimizer.apply = apply
        self._wrapped_optimizer = optimizer

    def _unwrap(self):
        optimizer, self._wrapped_optimizer = self._wrapped_optimizer, None
        if optimizer is not None and "apply" in vars(optimizer):
            del optimizer.apply
            # The cached train function still calls the wrapper; drop it so a
            # later fit() without this callback traces a clean one.
            self.model.train_function = None

    def on_epoch_end(self, epoch, logs=None):
        if self.update_freq == "epoch":
            with self._writer.as_default():
                self._tracker.log(self.model.optimizer.iterations)
        self._writer.flush()

    def on_train_end(self, logs=None):
        self._unwrap()
        if self._writer is not None:
            self._writer.flush()
