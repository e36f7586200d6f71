"""What the Keras callback does to a model during one `fit`, and how it undoes it.

`FitHooks.begin` finds the optimizers that apply gradients in the train step,
wraps their `apply` so that one step's `apply` calls are collected, wraps the
model's `train_step` so that the step logs once at its end, and builds a train
function with both traced in. That function is kept as the model's train
function after the fit, with logging switched off by a variable, so a later
fit without the callback runs the very function a fit without any callback
would have reused (same trace, same trainable set). Tracing can fail where the
model changed under Keras (`trainable` changed without a new `compile()`):
then the hooks stop logging with one warning and the fit goes on with the
function Keras would have used. Every hook is removed whatever ends the fit.
"""

import glob
import json
import os
import threading

import keras
import tensorflow as tf

from tb_varupdate.errors import StuckVariableError
from tb_varupdate.format import metadata as md
from tb_varupdate.writers.tf import optim as _tf_optim
from tb_varupdate.writers.tf.tracker import describe_error, write_failed_message, writer_error

# Tracker (logdir, name) pairs written by live callbacks of this process.
_LIVE = {}


def find_optimizers(model):
    """The optimizers a train step can apply gradients with, outer LossScaleOptimizers only."""
    found = []
    candidates = [getattr(model, "optimizer", None)] + list(vars(model).values())
    for candidate in candidates:
        if isinstance(candidate, keras.optimizers.Optimizer) and all(candidate is not f for f in found):
            found.append(candidate)
    inner = {id(getattr(o, "inner_optimizer", None)) for o in found}
    return [o for o in found if id(o) not in inner]


def _unscale(gradient, scale):
    if gradient is None:
        return None
    if isinstance(gradient, tf.IndexedSlices):
        return tf.IndexedSlices(gradient.values / tf.cast(scale, gradient.values.dtype), gradient.indices, gradient.dense_shape)
    return gradient / tf.cast(scale, gradient.dtype)


class FitHooks:
    """The callback's hooks on one model.

    Args:
      model: the Keras model.
      tracker: its `VariableUpdateTracker`.
      writer: the summary writer of the run.
      warn: the callback's `common.Warnings`.
    """

    def __init__(self, model, tracker, writer, warn):
        self.model = model
        self._tracker = tracker
        self._writer = writer
        self._warn = warn
        self._local = threading.local()  # replicas trace the step in their own threads
        with tf.init_scope():
            self._active = tf.Variable(False, trainable=False, name="varupdate_active")
        self._function = None  # our train function, while it is the model's
        self._wrapped = []
        self._saved = None
        self.traced_trainable = None  # ids of the trainable variables when the step was last traced
        self.stopped = None  # why logging stopped in this fit, if it did
        self.optimizers = []

    # -- begin / end ------------------------------------------------------------

    def begin(self):
        model = self.model
        self.stopped = None
        self.optimizers = find_optimizers(model)
        _tf_optim.read_learning_rates(self._tracker, self.optimizers)
        _tf_optim.refresh_trainable(self._tracker)
        self._saved = {"jit_off": False, "train_function": model.train_function}
        if self._function is not None and model.train_function is self._function:
            self._reuse()
        else:
            self._function = None
            if model.jit_compile:
                self._saved["jit_off"] = True
                self._warn.once(
                    "jit",
                    "tb_varupdate: turning off jit_compile for this fit (it is restored after "
                    "it): summaries cannot be written from an XLA-compiled train step. Use "
                    "update_freq='epoch' to keep XLA.",
                )
                model.jit_compile = False
            self._build()
            self._wrap_optimizers()
        self._active.assign(True)

    def end(self):
        """Undoes what `begin` did (idempotent); our function stays, with logging off."""
        self._active.assign(False)
        flush(self._writer, self._warn, self._tracker.name)
        for optimizer in self._wrapped:
            if "apply" in vars(optimizer):
                del optimizer.apply
        self._wrapped = []
        saved, self._saved = self._saved, None
        if saved is None:
            return
        model = self.model
        if saved["jit_off"]:
            model.jit_compile = True
            if self.traced_trainable is None or saved["train_function"] is None:
                # Ours never ran a step: the next fit uses what Keras had.
                model.train_function = saved["train_function"]
                self._function = None
            # Else ours stays, logging off, though it is not XLA-compiled: Keras'
            # own function of this fit was made but never traced, and tracing it
            # in a later fit after `trainable` changed without compile() fails in
            # the optimizer ("Unknown variable"), where Keras alone would have
            # reused this fit's trace. A compile() gives Keras a new function.
        elif model.train_function is not self._function and model.train_function is not saved["train_function"]:
            model.train_function = saved["train_function"]

    def _reuse(self):
        """The model still runs our function: check it traced the trainable set the model has now."""
        traced = self.traced_trainable or getattr(self._function, "varupdate_trainable", None)
        now = tuple(id(v) for v in self.model.trainable_variables)
        if traced is not None and traced != now:
            self._warn.once(
                "trainable-changed",
                "tb_varupdate: the model's trainable variables changed since compile() (%d "
                "trainable then, %d now), but Keras keeps training the set it traced until "
                "compile() is called again, and the records show that set. Call "
                "model.compile(...) again after changing `trainable`." % (len(traced), len(now)),
            )

    # -- the train function -----------------------------------------------------

    def _build(self):
        model = self.model
        original_step = model.train_step
        hooks = self

        def train_step(data):
            outer = getattr(hooks._local, "pairs", None)
            hooks._local.pairs = []
            try:
                with _tf_optim.watch_gradients(hooks._tracker):
                    logs = original_step(data)
                pairs = hooks._local.pairs
                # The set the traced step trains, lazily built models included
                # (SimCLR's encoder appears in the first trace, after compile()).
                hooks.traced_trainable = tuple(id(v) for v in hooks.model.trainable_variables)
            finally:
                hooks._local.pairs = outer
            with hooks._writer.as_default():
                hooks._tracker.log(None, gradients=_last_per_variable(pairs) or None, when=hooks._active)
            return logs

        model.train_step = train_step
        self.traced_trainable = None
        try:
            model.make_train_function(force=True)  # returns None in Keras 3.15
            traced_in = model.train_function
        finally:
            del model.train_step
        trainable = tuple(id(v) for v in model.trainable_variables)

        def function(iterator):
            return hooks._call(traced_in, iterator)

        function.varupdate_trainable = trainable
        self._function = function
        model.train_function = function

    def _call(self, traced_in, iterator):
        try:
            result = traced_in(iterator)
        except (StopIteration, tf.errors.OutOfRangeError) as err:
            # A file over its size limit (EFBIG) is an OutOfRangeError too: fit
            # would take it for the end of the data and cut the epoch short.
            cause = writer_error(err)
            if cause is not None:
                return self._write_failed(cause)
            raise  # the end of an epoch's data, which fit handles
        except tf.errors.InvalidArgumentError as err:
            self.end()
            message = self._tracker._check.message  # pylint: disable=protected-access
            # The tracker's assert op fails with the check's message (TF may shorten it).
            if message and ("varupdate_stuck" in str(err) or message[:60] in str(err)):
                raise StuckVariableError(message) from err
            raise
        except tf.errors.OpError as err:
            cause = writer_error(err)
            if cause is None:
                self.end()
                raise
            return self._write_failed(cause)
        except Exception as err:  # pylint: disable=broad-except
            # A Python error is raised while tracing, before any op ran: Keras'
            # own function gets the step (and raises it again if it is the model's).
            return self._stop(err)(iterator)
        except BaseException:
            self.end()
            raise
        return result

    def _write_failed(self, cause):
        """The summary write in the train step failed (a full disk): logging stops, the fit goes on.

        Returns:
          What the failed step would have returned: the step ran up to the
          write, its optimizer update and metric updates included.
        """
        try:
            # log(None)'s step: the count of calls, which the failed step had already advanced.
            what = "its record of step %d" % (int(self._tracker._recorder.calls.numpy()) - 1)  # pylint: disable=protected-access
        except (AttributeError, tf.errors.OpError):
            what = "its record of this train step"
        self._warn.once("write-failed", write_failed_message(
            self._tracker.name, what, cause,
            "the callback records nothing more in this fit."))
        self._fall_back("the summary writer failed (%s)" % cause)
        return self.model.get_metrics_result()

    def _fall_back(self, why):
        """Ends the hooks and gives the model the train function Keras would have used; returns it."""
        model, saved = self.model, self._saved
        self.stopped = why
        self._function = None
        self.end()
        function = saved["train_function"] if saved else None
        if function is None:
            model.make_train_function(force=True)
            function = model.train_function
        model.train_function = function
        return function

    def _stop(self, err):
        function = self._fall_back("%s: %s" % (type(err).__name__, err))
        hint = ""
        if "Unknown variable" in str(err) or "originally built with" in str(err):
            hint = " The trainable variables changed after compile(): call model.compile(...) again after changing `trainable`."
        self._warn.once(
            "stopped",
            "tb_varupdate: logging stopped for this fit: the train step could not be traced with "
            "the tracker (%s). Training goes on exactly as without the callback.%s" % (self.stopped, hint),
        )
        return function

    # -- optimizers -----------------------------------------------------------

    def _wrap_optimizers(self):
        for optimizer in self.optimizers:
            if "apply" in vars(optimizer):
                continue  # already wrapped by another callback: its own apply is called through it
            optimizer.apply = self._wrapped_apply(optimizer, optimizer.apply)
            self._wrapped.append(optimizer)

    def _wrapped_apply(self, optimizer, original_apply):
        hooks = self

        def apply(grads, trainable_variables=None):
            grads = list(grads)
            # A LossScaleOptimizer receives scaled gradients: log the true norms,
            # with the scale read before apply() halves or doubles it.
            scale = getattr(optimizer, "dynamic_scale", None)
            logged = grads if scale is None else [_unscale(g, tf.identity(scale)) for g in grads]
            result = original_apply(grads, trainable_variables)
            if trainable_variables is not None:
                _tf_optim.note_apply(hooks._tracker, hooks.optimizers, optimizer, trainable_variables)
                logged = list(zip(logged, trainable_variables))
            pairs = getattr(hooks._local, "pairs", None)
            if pairs is not None and trainable_variables is not None:
                pairs.extend(logged)
            else:
                # Outside the wrapped train step (or without variables to pair with): log now.
                with hooks._writer.as_default():
                    hooks._tracker.log(None, gradients=logged, when=hooks._active)
            return result

        return apply


def _last_per_variable(pairs):
    """The pairs of one train step, one per variable: the gradient it was applied last.

    A step may apply one variable several times (a WGAN's critic steps); its
    record holds one gradient per variable, by design the last one, so this
    is no duplicate for the tracker to warn about.
    """
    last = {}
    for grad, variable in pairs:
        last[id(variable)] = (grad, variable)
    return list(last.values())


def flush(writer, warn, name):
    """Flushes the run's writer; a failed flush (a full disk) is the one write-failed warning."""
    try:
        writer.flush()
    except tf.errors.OpError as err:
        # Only the writer's op runs here: whatever it raises is a failed write.
        warn.once("write-failed", write_failed_message(
            name, "the records it held", writer_error(err) or describe_error(err),
            "later records are lost for as long as writing fails."))


def warn_other_writers(warn, run_dir, tracker):
    """Warns when another tracker already wrote, or writes, the same tag in `run_dir`."""
    key = (os.path.abspath(run_dir), tracker.name)
    others = set()
    live = _LIVE.get(key)
    if live is not None and live != tracker.writer_id:
        others.add(live)
    _LIVE[key] = tracker.writer_id
    tag = md.variables_tag(tracker.name)
    files = sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*")))
    # Reading is bounded: the variables record is written once per writer start.
    if files and sum(os.path.getsize(f) for f in files) <= 64 << 20:
        try:
            for event in _events(files):
                for value in event.summary.value:
                    if value.tag == tag:
                        document = json.loads(tf.make_ndarray(value.tensor).item())
                        if document.get("writer_id") not in (None, tracker.writer_id):
                            others.add(document["writer_id"])
        except Exception:  # pylint: disable=broad-except
            pass  # a file being written or truncated: this check is only advice
    if others:
        warn.once(
            "other-writers",
            "tb_varupdate: %s already holds records of tracker %r from another writer "
            "(writer_id %s); this callback starts a second series in the same tag, which the "
            "tab and `tb-varupdate check` cannot merge. Use a new log_dir or name=..., or reuse "
            "one callback object across fits to continue its series." % (
                run_dir, tracker.name, ", ".join(str(o) for o in sorted(others))),
        )


def _events(files):
    for path in files:
        yield from tf.compat.v1.train.summary_iterator(path)


def warn_if_silent(warn, tracker, hooks, records_at_begin):
    """At the end of a fit: one warning if nothing was recorded or no gradient matched."""
    written = tracker.records_written - records_at_begin
    given, matched = tracker.gradients_given
    if written == 0:
        if hooks is not None and hooks.stopped:
            why = "logging stopped (%s)" % hooks.stopped
        elif hooks is not None and not hooks.optimizers:
            why = "the model holds no optimizer (model.optimizer or an optimizer attribute)"
        else:
            why = "no train step ran with the callback"
        warn.once(
            "silent",
            "tb_varupdate: VariableUpdateCallback wrote no records in this fit: %s. Check that "
            "fit ran at least one step, and that the optimizers the train step uses are "
            "attributes of the model." % why,
        )
    elif given and not matched:
        warn.once(
            "unmatched",
            "tb_varupdate: the optimizers applied %d gradients but none matched a variable of "
            "the model, so no gradient was recorded. Keep the optimized layers as attributes "
            "of the model passed to fit()." % given,
        )
