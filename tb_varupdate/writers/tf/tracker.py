"""`VariableUpdateTracker`: records how every variable changed, once per step.

The public tracker is thin; its pieces, each one concept, are the modules
beside it: `variables` (which variables, their names), `gradients` (matching
gradients to rows, and the advice when they do not fit), `trace` (the eager
path's trace cache, with the package's only private TensorFlow calls),
`record` (the device state and the ops of one record: `measure`'s
measurements folded by `writers.counters.fold`, the counter semantics shared
by every writer, over `ops`' TensorFlow `Ops`); `writers.common` (options,
warn-once, `never_raise`) and `verdicts.stuck.StuckCheck` (the training-time
check and its message) are every writer's. Records are laid out by
`format/metadata.py` (docs/FORMAT.md).

Design notes:
* The measurements run on each variable's device against a snapshot copy,
  and only a few scalars per variable leave it.
* All counters are updated as one [V, ...] tensor and written as one summary
  per record, whatever the number of variables.
* Eager `log()` calls run through a concrete function per gradient layout, so
  eager loops pay one function call, not thousands of eager ops; inside a
  user's `tf.function` the ops are built in place, once per trace.
* Logging must never take training down: an unexpected error is a warning
  (once per kind), and the step goes on.
"""

import re
import threading

import tensorflow as tf

from tb_varupdate.errors import StuckVariableError
from tb_varupdate.verdicts import stuck
from tb_varupdate.writers import common
from tb_varupdate.writers import counters
from tb_varupdate.writers.tf.gradients import Matcher, first_replica
from tb_varupdate.writers.tf.record import Recorder
from tb_varupdate.writers.tf.trace import UNKNOWN_WRITER, TraceCache, current_writer, writer_closed
from tb_varupdate.writers.tf.variables import Variables, initialized

__all__ = ["VariableUpdateTracker", "StuckVariableError"]

ON_STUCK_CHOICES = stuck.ON_STUCK_CHOICES

_NO_COPY = (
    "a VariableUpdateTracker cannot be %s: it measures the very variables it was given, so a "
    "copy would measure copies of them that no optimizer updates (every row 'never_updated') "
    "and write a second series into the same tag. Make a new tracker for the copied model "
    "instead: VariableUpdateTracker(model_copy)."
)


def _cause_lines(err):
    """The lines of an error that say what went wrong, without TensorFlow's wrapping."""
    text = err.message if isinstance(err, tf.errors.OpError) and err.message else str(err)
    # An error inside a traced function opens with "Graph execution error:",
    # "Detected at node ... defined at" and the op's Python trace (lines
    # indented by spaces); the cause follows (its own lines indented by tabs).
    lines = [line for line in text.splitlines()
             if not line.startswith((" ", "Graph execution error", "Detected at node"))]
    lines = [re.sub(r"\{\{function_node [^}]*\}\}\s*", "", line).strip() for line in lines]
    lines = [re.sub(r"\s*\[Op:[^\]]*\]( name:\s*\S*)?$", "", line) for line in lines]
    return [line for line in lines if line and not line.startswith("[[")]


def describe_error(err):
    """`err` as "Type: message", without TensorFlow's "{{function_node ...}}" and "[[{{node ...}}]]" wrapping."""
    return "%s: %s" % (type(err).__name__, " ".join(_cause_lines(err)[:2]))


# Words that mark a failed write or flush of a summary writer in an error's
# lines: its resource (closed) or its event file (the disk).
_WRITER_MARKS = ("SummaryWriter", "tfevents")


def writer_error(err):
    """What a failed summary write says ("Type: its lines"), or None when `err` is not one."""
    if not isinstance(err, tf.errors.OpError):
        return None
    lines = _cause_lines(err)
    first = next((i for i, line in enumerate(lines) if any(mark in line for mark in _WRITER_MARKS)), None)
    if first is None:
        return None
    return "%s: %s" % (type(err).__name__, "; ".join(line.rstrip(".") for line in lines[first:first + 3]))


def write_failed_message(name, what, cause, later):
    """The one warning of a failed summary write: what is lost, and what to do.

    Args:
      name: the tracker's name.
      what: what could not be written ("its record of step 3").
      cause: `writer_error`'s text, with TensorFlow's count of the events lost.
      later: what happens to later records.
    """
    return (
        "tb_varupdate: tracker %r could not write %s: the summary writer failed (%s). That is lost, "
        "and so are the records the writer held since its last flush (the events TensorFlow counts "
        "above, up to its max_queue, 10 by default); %s Training goes on. Free disk space or use a "
        "log_dir with room; `tb-varupdate check` reads the records that reached the disk."
        % (name, what, cause, later)
    )


class VariableUpdateTracker:
    """Records, per `log()` call, how much each variable changed and its gradient state.

    Example:

    ```python
    tracker = tb_varupdate.VariableUpdateTracker(model)
    writer = tf.summary.create_file_writer("logs/run1")
    with writer.as_default():
        for step, (x, y) in enumerate(dataset):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            tracker.log(step, gradients=zip(grads, model.trainable_variables))
    ```

    Then open TensorBoard's "Variable Updates" tab, or run
    `tb-varupdate check logs`.

    Args:
      variables_or_module: a `tf.Variable` or `keras.Variable`, a
        `tf.Module` / `keras.Model` / `keras.Layer` (all its variables,
        re-read at each `log()` so lazily built models are covered), or a
        list of either (`[discriminator, generator]`).
      name: the tracker's name; records go to tag `varupdate/<name>`.
      every_n_steps: record only when `step % every_n_steps == 0`; deltas then
        span the interval since the previous record.
      on_stuck: "warn" (default), "raise" or "ignore": what to do when, after
        `stuck_after` records, a trainable variable has never changed or went
        non-finite. Checked once, so each variable is reported once.
      stuck_after: number of records before that check.
      track_rows: count the rows of a variable fed sparse gradients
        (`tf.IndexedSlices`, i.e. embeddings) that ever changed.
      delta: "exact" (default) keeps one copy of each variable on its device
        to measure each change exactly. "checksum" keeps no copy (for models
        where one more copy of the parameters does not fit): a change is seen
        when the sum of the variable's bits or of its squares changes, so its
        size is not measured (no movement charts, no `tiny_updates` verdict,
        no sparse row counts), and a change that only permutes values is missed.
      allow: regular expressions of variable names accepted as stuck by the
        `on_stuck` check, as `tb-varupdate check --allow` accepts them.

    Raises:
      ValueError: an argument is out of range, or an empty list was given.
    """

    def __init__(self, variables_or_module, name="model", every_n_steps=1, on_stuck="warn", stuck_after=10, track_rows=True,
                 delta="exact", allow=()):
        common.check_name(name)
        common.check_every_n_steps(every_n_steps)
        self._check = stuck.StuckCheck(name, on_stuck, stuck_after, allow)
        self.name = name
        self.every_n_steps = every_n_steps
        self.on_stuck = on_stuck
        self.stuck_after = stuck_after
        self.track_rows = track_rows
        self.writer_id = common.new_writer_id()
        self._variables = Variables(variables_or_module)
        self._warn = common.Warnings()
        self._matcher = Matcher(self._variables, self._warn)
        self._recorder = Recorder(name, every_n_steps, self.writer_id, self._check, self._variables, self._matcher,
                                  self._warn, delta, track_rows)
        self._traces = TraceCache(self._recorder.ops)
        # log() from several threads is serialized: the counters are read, folded
        # and assigned by separate ops, so concurrent records lost increments.
        self._lock = threading.RLock()
        self._refresh()

    # -- which variables ---------------------------------------------------

    def _refresh(self):
        """Tracks the variables that appeared since the last call; True if any did."""
        with tf.init_scope():
            added = self._variables.refresh(joined=int(self._recorder.header[counters.LOGGED].numpy()))
            lift = [initialized(t.source) for t in added]
        if not added:
            return False
        self._recorder.add(added, lift)
        self._traces.clear()  # the variable list is baked into the traced functions
        return True

    @property
    def _layout(self):
        # benchmarks/training.py counts the measurement groups through this.
        return self._recorder.layout

    @property
    def variable_names(self):
        """Names of the tracked variables, in record row order."""
        return [t.name for t in self._variables.tracked]

    @property
    def records_written(self):
        """Records this tracker has built so far (reads a device value: call it rarely)."""
        return int(self._recorder.header[counters.LOGGED].numpy())

    @property
    def gradients_given(self):
        """(gradients given to `log()`, of them matched to a tracked variable), counted per call or trace."""
        return self._matcher.given, self._matcher.matched

    def continue_steps_from(self, step):
        """Makes `log(None)` count on from `step` if it is ahead (a resumed or repeated fit)."""
        with tf.init_scope():
            self._recorder.calls.assign(tf.maximum(self._recorder.calls, tf.cast(step, tf.int64)))

    # -- logging -----------------------------------------------------------

    def log(self, step, gradients=None, when=None):
        """Records the change of every tracked variable since the previous record.

        Call it after the optimizer step, inside `writer.as_default()`; works in
        eager code and inside `tf.function`, and under `tf.distribute` inside or
        outside `strategy.run` (per-replica gradients are read from the first
        replica; variables are identical across replicas after the update).

        Args:
          step: the training step (int or scalar integer tensor), or None to
            count `log()` calls (0, 1, 2, ...) as steps. Counters count
            records, so a step that does not grow hides nothing, but it gets
            one warning: pass a step that grows.
          gradients: optional; the gradients of this step, either aligned with
            the tracked (or the trainable tracked) variables, or an iterable of
            `(gradient, variable)` pairs as given to `apply_gradients`. A
            `None` gradient is recorded as disconnected from the loss.
          when: optional boolean (a scalar tensor inside `tf.function`): no
            record is made where it is false.

        Returns:
          None. Errors inside logging become warnings; only `on_stuck="raise"`
          raises (`StuckVariableError`; inside a `tf.function` the function
          fails with the same message).
        """
        with common.never_raise(self._warn, lambda err: self._write_failed(err, step)):
            if tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context():
                # In a replica (Keras' distributed train step, strategy.run):
                # log once, in cross-replica context, with the first replica's gradients.
                # The merge runs in another thread, whose summary state does not
                # hold a writer entered inside the replica function: carry it over.
                gradients = None if gradients is None else list(gradients)
                writer = current_writer()
                tf.distribute.get_replica_context().merge_call(
                    lambda _, merged: self._log_with(writer, step, merged, when), args=(gradients,)
                )
            else:
                with self._lock:
                    self._log(step, gradients, when)
        message, self._recorder.pending_stuck = self._recorder.pending_stuck, None
        if message is not None:
            raise StuckVariableError(message)

    def final_check(self):
        """Checks the newest record once more: call it when training ends (the Keras callback does, per fit).

        The check runs at `stuck_after` records, then at each doubling; this
        catches what stalled since the last one (a schedule that reached 0).
        It warns (with `on_stuck="warn"`), never raises.
        """
        with common.never_raise(self._warn), self._lock:
            self._recorder.final_check()

    def _write_failed(self, err, step):
        """One warning, saying what was lost, when `err` is the summary writer's; False if it is not."""
        cause = writer_error(err)
        if cause is None:
            return False
        try:
            step = "step %d" % int(step if step is not None else self._recorder.calls.numpy() - 1)
        except (TypeError, ValueError, tf.errors.OpError):
            step = "this step"
        if writer_closed(current_writer()):
            self._warn.once(
                "writer-closed",
                "tb_varupdate: tracker %r could not write its record of %s: the default summary writer "
                "was closed (writer.close() ran, but log() is still called inside its as_default()). "
                "That record and every later one logged to this writer are lost; training goes on. "
                "Close the writer after the last log(), or log inside an open writer's as_default()."
                % (self.name, step),
                stacklevel=7,
            )
            return True
        self._warn.once("write-failed", write_failed_message(
            self.name, "its record of " + step, cause, "later records are lost for as long as writing fails."),
            stacklevel=7)
        return True

    def _log_with(self, writer, step, gradients, when):
        with self._lock:
            if writer is None or writer is UNKNOWN_WRITER or current_writer() is writer:
                return self._log(step, gradients, when)
            with writer.as_default():
                return self._log(step, gradients, when)

    def __deepcopy__(self, memo):
        raise TypeError(_NO_COPY % "copied")

    def __reduce_ex__(self, protocol):
        # Pickling and copy.copy() come here.
        raise TypeError(_NO_COPY % "copied or pickled")

    def _log(self, step, gradients, when=None):
        if self._variables.has_modules:
            self._refresh()
        if not self._variables.tracked:
            self._warn.once(
                "empty",
                "tb_varupdate: tracker %r has no variables yet (is the model built?); "
                "nothing is recorded until it has some." % self.name,
            )
            return
        writer = current_writer()
        if writer is None:
            self._warn.once(
                "no-writer",
                "tb_varupdate: tracker %r was called with no default summary writer, so "
                "nothing is written. Call log() inside `with writer.as_default():` "
                "(writer = tf.summary.create_file_writer(logdir))." % self.name,
            )
        grads, kinds = self._matcher.match(gradients)
        step = None if step is None else tf.cast(first_replica(step), tf.int64)
        trainable = self._variables.trainable_mask()
        if not tf.executing_eagerly():
            # Inside the user's tf.function: build the ops in place. A nested
            # function call would be a stateful op that waits for the whole
            # step and runs apart from it (measured: +0.7 ms a step on the MLP).
            record_ops = tf.autograph.experimental.do_not_convert(self._recorder.ops)
            if when is None:
                message = record_ops(step, grads, kinds, (trainable, writer))
            else:
                message = tf.cond(tf.cast(when, tf.bool), lambda: record_ops(step, grads, kinds, (trainable, writer)),
                                  lambda: tf.constant(""))
            if self._check.on_stuck == "raise":
                tf.debugging.Assert(tf.equal(message, ""), [message], name="varupdate_stuck")
            return
        if when is not None and not bool(when):
            return
        self._recorder.in_eager_call = True
        try:
            self._traces.call(step, grads, kinds, (trainable, writer))
        finally:
            self._recorder.in_eager_call = False
