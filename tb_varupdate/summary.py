"""`VariableUpdateTracker`: records how every variable changed, once per step.

With `measure.py` (the device-side measurements) and `keras.py`, the only
modules that import TensorFlow. The records it
writes are laid out by `metadata.py` (see docs/FORMAT.md).

Design notes:
* The measurements (`measure.py`) run on each variable's device against a
  snapshot copy, and only a few scalars per variable leave it.
* All per-variable counters are updated as one [V, ...] tensor and written as
  one summary per `log()` call, whatever the number of variables.
* Eager `log()` calls run through an internal `tf.function`, so eager training
  loops pay one function call, not thousands of eager ops; inside a user's
  `tf.function` the ops are built in place, once per trace.
* Logging must never take training down: an unexpected error is a warning
  (once per kind), and the step goes on.
"""

import inspect
import warnings

import numpy as np
import tensorflow as tf

from tb_varupdate import analysis
from tb_varupdate import measure
from tb_varupdate import metadata as md

_INT32_MAX = np.iinfo(np.int32).max

# Counter columns of the tracker's int64 state (a subset of the record columns).
_STATE_COLUMNS = (
    md.CHANGED_STEPS, md.FIRST_UPDATE_STEP, md.LAST_UPDATE_STEP, md.LOGS_AT_LAST_UPDATE,
    md.GRAD_PRESENT_STEPS, md.GRAD_NONE_STEPS, md.GRAD_ZERO_STEPS, md.GRAD_NON_FINITE_STEPS,
    md.FIRST_NON_FINITE_STEP, md.ROWS_CHANGED,
)
_STATE_INDEX = {column: i for i, column in enumerate(_STATE_COLUMNS)}
_STATE_INITIAL = {md.FIRST_UPDATE_STEP: -1, md.LAST_UPDATE_STEP: -1, md.FIRST_NON_FINITE_STEP: -1, md.ROWS_CHANGED: -1}

ON_STUCK_CHOICES = ("warn", "raise", "ignore")


def _call_flat(concrete, tensors):
    """Calls a concrete function with the flat tensors it was traced for.

    `ConcreteFunction.__call__` binds and type-checks each argument against
    the signature again: ~10 µs per tensor, 2.5 ms for 300 gradients, where
    the flat call takes 0.4 ms. The flat call is private API, so it is used
    only when its signature is the one this was written against.
    """
    if _FLAT_CALL_OK:
        return concrete._call_flat(tensors, concrete.captured_inputs)  # pylint: disable=protected-access
    return concrete(*tensors)


def _flat_call_ok():
    try:
        from tensorflow.python.eager.polymorphic_function import concrete_function  # pylint: disable=import-outside-toplevel
        parameters = list(inspect.signature(concrete_function.ConcreteFunction._call_flat).parameters)
    except (ImportError, AttributeError, TypeError, ValueError):
        return False
    return parameters == ["self", "tensor_inputs", "captured_inputs"]


_FLAT_CALL_OK = _flat_call_ok()


class StuckVariableError(RuntimeError):
    """Raised by `log()` with `on_stuck="raise"` when a trainable variable is stuck."""


def _is_keras_variable(obj):
    # Keras 3 variables are not tf.Variables; they hold one in `.value` and
    # name themselves by `.path`. Checked by duck typing so Keras stays optional.
    return not isinstance(obj, tf.Variable) and hasattr(obj, "path") and isinstance(
        getattr(obj, "value", None), tf.Variable
    )


def _is_variable(obj):
    return isinstance(obj, tf.Variable) or _is_keras_variable(obj)


class _Tracked:
    """One tracked variable and the state kept for it."""

    __slots__ = ("source", "variable", "name", "trainable", "dtype", "is_float", "joined")

    def __init__(self, source, name, joined):
        self.source = source
        self.variable = source.value if _is_keras_variable(source) else source
        self.name = name
        self.trainable = bool(getattr(source, "trainable", True))
        self.dtype = self.variable.dtype.base_dtype
        self.is_float = self.dtype.is_floating
        self.joined = joined

    def entry(self):
        return {
            "name": self.name,
            "shape": [d for d in self.variable.shape.as_list()] if self.variable.shape.rank is not None else None,
            "dtype": self.dtype.name,
            "trainable": self.trainable,
            "joined": self.joined,
        }


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
      variables_or_module: a `tf.Variable` or `keras.Variable`, a list of them,
        or a `tf.Module` / `keras.Model` / `keras.Layer` (all its variables,
        re-read at each eager `log()` so lazily built models are covered).
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

    Raises:
      ValueError: an argument is out of range, or an empty list was given.
    """

    def __init__(self, variables_or_module, name="model", every_n_steps=1, on_stuck="warn", stuck_after=10, track_rows=True,
                 delta="exact"):
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(
                "name must be a non-empty string without '/', used in the tag "
                "'varupdate/<name>'. Received: name=%r" % (name,)
            )
        if not isinstance(every_n_steps, int) or isinstance(every_n_steps, bool) or every_n_steps < 1:
            raise ValueError("every_n_steps must be an int >= 1. Received: every_n_steps=%r" % (every_n_steps,))
        if on_stuck not in ON_STUCK_CHOICES:
            raise ValueError("on_stuck must be one of %s. Received: on_stuck=%r" % (ON_STUCK_CHOICES, on_stuck))
        if not isinstance(stuck_after, int) or stuck_after < 1:
            raise ValueError("stuck_after must be an int >= 1. Received: stuck_after=%r" % (stuck_after,))
        self.name = name
        self.every_n_steps = every_n_steps
        self.on_stuck = on_stuck
        self.stuck_after = stuck_after
        self.track_rows = track_rows
        self._layout = measure.Layout(delta)
        self._source = variables_or_module
        self._tracked = []
        self._by_id = {}
        self._names = set()
        self._warned = set()
        self._log_fns = {}
        self._stuck_message = None
        with tf.init_scope():
            self._logged = tf.Variable(0, dtype=tf.int64, trainable=False, name="varupdate_logged")
            self._names_written = tf.Variable(-1, dtype=tf.int64, trainable=False, name="varupdate_names")
            # log(None) uses this count of log() calls as the step.
            self._calls = tf.Variable(0, dtype=tf.int64, trainable=False, name="varupdate_calls")
            self._counters = tf.Variable(
                tf.zeros([0, len(_STATE_COLUMNS)], tf.int64), shape=tf.TensorShape([None, len(_STATE_COLUMNS)]),
                trainable=False, name="varupdate_counters",
            )
            # [previous value norm, max relative update] per variable.
            self._float_state = tf.Variable(
                tf.zeros([0, 2], tf.float32), shape=tf.TensorShape([None, 2]), trainable=False, name="varupdate_floats",
            )
        self._refresh()
        if not self._tracked and isinstance(variables_or_module, (list, tuple)):
            raise ValueError(
                "VariableUpdateTracker needs variables to track: a tf.Variable, a "
                "keras.Variable, a list of them, or a tf.Module / keras.Model. "
                "Received: an empty %s" % type(variables_or_module).__name__
            )

    # -- which variables ---------------------------------------------------

    def _collect(self):
        """The source's variables not tracked yet (checked to be variables)."""
        source = self._source
        if _is_variable(source):
            found = [source]
        elif isinstance(source, (list, tuple)):
            found = list(source)
        elif hasattr(source, "variables"):
            found = list(source.variables)
        else:
            raise ValueError(
                "variables_or_module must be a variable, a list of variables, or a "
                "tf.Module / keras.Model. Received: %r" % (source,)
            )
        found = [item for item in found if id(item) not in self._by_id]
        for item in found:
            if not _is_variable(item):
                raise ValueError(
                    "expected tf.Variable or keras.Variable items. Received: %r. If this is "
                    "a tensor, the name was probably rebound with `v = v - lr * g`; keep the "
                    "variable and update it with `v.assign_sub(lr * g)`." % (item,)
                )
        return found

    def _unique_name(self, source):
        if _is_keras_variable(source):
            base = source.path
        else:
            base = source.name[:-2] if source.name.endswith(":0") else source.name
        name, suffix = base, 1
        while name in self._names:
            name = "%s_%d" % (base, suffix)
            suffix += 1
        self._names.add(name)
        return name

    def _refresh(self):
        """Tracks variables that appeared since the last call; True if any did."""
        added = []
        for source in self._collect():
            tracked = _Tracked(source, self._unique_name(source), joined=None)
            self._by_id[id(source)] = len(self._tracked)
            self._by_id.setdefault(id(tracked.variable), len(self._tracked))
            self._tracked.append(tracked)
            added.append(tracked)
        if not added:
            return False
        with tf.init_scope():
            logged = int(self._logged.numpy())
            for tracked in added:
                tracked.joined = logged
            fresh = np.zeros([len(added), len(_STATE_COLUMNS)], np.int64)
            for column, value in _STATE_INITIAL.items():
                fresh[:, _STATE_INDEX[column]] = value
            self._counters.assign(tf.concat([self._counters, fresh], 0))
            self._float_state.assign(tf.concat([self._float_state, tf.zeros([len(added), 2])], 0))
            self._layout.add([t.variable for t in added])
        self._entries_bytes, self._names_hash = md.encode_variables([t.entry() for t in self._tracked])
        self._log_fns = {}  # the variable list is baked into the traced functions
        return True

    @property
    def variable_names(self):
        """Names of the tracked variables, in record row order."""
        return [t.name for t in self._tracked]

    # -- matching gradients ------------------------------------------------

    def _warn_once(self, key, message):
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, stacklevel=4)

    def _match_gradients(self, gradients):
        """Gradient per tracked variable, and its kind (measure.NOT_GIVEN, measure.NONE, ...)."""
        count = len(self._tracked)
        grads = [None] * count
        given = [False] * count
        if gradients is not None:
            items = list(gradients)
            if items and all(isinstance(item, (tuple, list)) and len(item) == 2 for item in items):
                for position, (grad, variable) in enumerate(items):
                    index = self._by_id.get(id(variable))
                    if index is None:
                        self._explain_unmatched(position, grad, variable)
                        continue
                    grads[index], given[index] = grad, True
            else:
                trainable = [i for i, t in enumerate(self._tracked) if t.trainable]
                if len(items) == count:
                    order = range(count)
                elif len(items) == len(trainable):
                    order = trainable
                else:
                    self._warn_once(
                        "grad-length",
                        "tb_varupdate: log(gradients=...) got %d gradients but tracks %d "
                        "variables (%d trainable); pass them aligned with the tracked or "
                        "trainable variables, or as (gradient, variable) pairs. Gradients "
                        "are recorded as not given." % (len(items), count, len(trainable)),
                    )
                    order = ()
                for index, grad in zip(order, items):
                    grads[index], given[index] = grad, True
        kinds = []
        for grad, was_given in zip(grads, given):
            if not was_given:
                kinds.append(measure.NOT_GIVEN)
            elif grad is None:
                kinds.append(measure.NONE)
            elif isinstance(grad, tf.IndexedSlices):
                kinds.append(measure.SPARSE)
            else:
                kinds.append(measure.DENSE)
        return grads, tuple(kinds)

    def _explain_unmatched(self, position, grad, variable):
        if tf.is_tensor(variable) and not _is_variable(variable):
            self._warn_once(
                "rebound",
                "tb_varupdate: gradient pair #%d holds a tf.Tensor where a tracked "
                "variable was expected. The Python name of the variable was likely "
                "rebound with `v = v - lr * g`: that creates a new tensor and leaves the "
                "tf.Variable unchanged, so it never trains. Update it in place with "
                "`v.assign_sub(lr * g)` or `optimizer.apply_gradients([(g, v)])`." % position,
            )
        elif _is_variable(variable):
            self._warn_once(
                "untracked:%s" % id(variable),
                "tb_varupdate: gradient pair #%d names a variable this tracker does not "
                "track (%s); it is ignored. Pass it (or its model) to VariableUpdateTracker."
                % (position, getattr(variable, "path", getattr(variable, "name", "?"))),
            )
        else:
            self._warn_once(
                "pair-order",
                "tb_varupdate: gradient pair #%d is not (gradient, variable): received "
                "(%s, %s). Pass pairs as zip(gradients, variables)."
                % (position, type(grad).__name__, type(variable).__name__),
            )

    # -- logging -----------------------------------------------------------

    def log(self, step, gradients=None):
        """Records the change of every tracked variable since the previous record.

        Call it after the optimizer step, inside `writer.as_default()`; works in
        eager code and inside `tf.function`.

        Args:
          step: the training step (int or scalar integer tensor), or None to
            count `log()` calls (0, 1, 2, ...) as steps.
          gradients: optional; the gradients of this step, either aligned with
            the tracked (or the trainable tracked) variables, or an iterable of
            `(gradient, variable)` pairs as given to `apply_gradients`. A
            `None` gradient is recorded as disconnected from the loss.

        Returns:
          None. Errors inside logging become warnings; only `on_stuck="raise"`
          raises (`StuckVariableError`).
        """
        try:
            if tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context():
                # Called from a replica (e.g. inside Keras' distributed train step):
                # log once, in cross-replica context, with the first replica's gradients.
                gradients = None if gradients is None else list(gradients)
                return tf.distribute.get_replica_context().merge_call(
                    lambda strategy, g: self._log_cross_replica(step, g, strategy), args=(gradients,)
                )
            return self._log_cross_replica(step, gradients, None)
        except StuckVariableError:
            raise
        except Exception as err:  # pylint: disable=broad-except
            if isinstance(err, tf.errors.OpError) and self._stuck_message:
                # Raised inside py_function; surface our message, not the graph trace.
                raise StuckVariableError(self._stuck_message) from err
            self._warn_once(
                "error:%s" % type(err).__name__,
                "tb_varupdate: logging failed and was skipped; training goes on. "
                "%s: %s" % (type(err).__name__, err),
            )
            return None

    def _log_cross_replica(self, step, gradients, strategy):
        if strategy is not None and gradients is not None:
            gradients = [self._first_replica(strategy, item) for item in gradients]
        if tf.executing_eagerly() and not isinstance(self._source, (list, tuple)):
            self._refresh()
        if not self._tracked:
            # A model that is built lazily has no variables before its first call.
            self._warn_once(
                "empty",
                "tb_varupdate: tracker %r has no variables yet (is the model built?); "
                "nothing is recorded until it has some." % self.name,
            )
            return
        grads, kinds = self._match_gradients(gradients)
        if step is not None:
            step = tf.cast(step, tf.int64)
        if not tf.executing_eagerly():
            # Inside the user's tf.function: build the ops in place. A nested
            # function call would be a stateful op that waits for the whole
            # step and runs apart from it (measured: +0.7 ms a step on the MLP).
            tf.autograph.experimental.do_not_convert(self._log_graph)(step, grads, kinds)
            return
        self._log_eagerly(step, grads, kinds)

    def _log_eagerly(self, step, grads, kinds):
        """Runs one traced function per gradient layout, called with flat tensors.

        A `tf.function` call re-checks the structure of every argument, which
        took ~25 µs per gradient (7.5 ms for 300 variables); a concrete
        function called with a flat list of tensors takes a fraction of that.
        """
        flat, parts = [], []  # parts: tensors per gradient (0 for None / not given)
        for grad, kind in zip(grads, kinds):
            if kind == measure.DENSE:
                pieces = [tf.convert_to_tensor(grad)]
            elif kind == measure.SPARSE:
                pieces = [grad.values, grad.indices] + ([] if grad.dense_shape is None else [grad.dense_shape])
            else:
                pieces = []
            flat.extend(pieces)
            parts.append(len(pieces))
        key = (step is not None, kinds, tuple(parts), tuple(t.dtype for t in flat))
        function = self._log_fns.get(key)
        if function is None:
            function = self._log_fns[key] = self._trace_eager(step is not None, kinds, parts, flat)
        _call_flat(function, ([step] if step is not None else []) + flat)

    def _trace_eager(self, has_step, kinds, parts, flat):
        specs, position = [tf.TensorSpec([], tf.int64)] if has_step else [], 0
        for kind, count in zip(kinds, parts):
            for offset, tensor in enumerate(flat[position:position + count]):
                shape = tensor.shape
                if kind == measure.SPARSE and offset < 2:
                    shape = [None] + shape.as_list()[1:]  # a different number of rows each step
                specs.append(tf.TensorSpec(shape, tensor.dtype))
            position += count

        def run(*args):
            step, tensors = (args[0], list(args[1:])) if has_step else (None, list(args))
            grads = []
            for kind, count in zip(kinds, parts):
                pieces, tensors = tensors[:count], tensors[count:]
                if kind == measure.DENSE:
                    grads.append(pieces[0])
                elif kind == measure.SPARSE:
                    grads.append(tf.IndexedSlices(*pieces))
                else:
                    grads.append(None)
            self._log_graph(step, grads, kinds)

        return tf.function(run, autograph=False).get_concrete_function(*specs)

    @staticmethod
    def _first_replica(strategy, item):
        def first(value):
            if value is None:
                return None
            return strategy.experimental_local_results(value)[0]

        if isinstance(item, (tuple, list)) and len(item) == 2:
            return (first(item[0]), item[1])
        return first(item)

    def _log_graph(self, step, grads, kinds):
        with tf.name_scope("varupdate"):
            return self._log_graph_ops(step, grads, kinds)

    def _log_graph_ops(self, step, grads, kinds):
        calls = self._calls.assign_add(1) - 1
        if step is None:
            step = calls
        if self.every_n_steps == 1:
            self._record(step, grads, kinds)
        else:
            tf.cond(
                tf.equal(step % self.every_n_steps, 0),
                lambda: self._record(step, grads, kinds),
                lambda: tf.constant(False),
            )
        return tf.constant(True)

    def _record(self, step, grads, kinds):
        measured = self._layout.measure(grads, kinds, self.track_rows)
        delta_l2, value_l2, grad_l2 = (measured[:, i] for i in (measure.DELTA_L2, measure.VALUE_L2, measure.GRAD_L2))
        finite, rows_changed = measured[:, measure.FINITE] > 0, measured[:, measure.ROWS_CHANGED]
        logged = self._logged.assign_add(1)

        counters = self._counters.read_value()
        column = lambda name: counters[:, _STATE_INDEX[name]]  # noqa: E731
        # A value that is NaN/Inf changed only in the first non-finite record:
        # NaN - NaN is not a change at every later step.
        changed = tf.where(finite, measured[:, measure.CHANGED] > 0, column(md.FIRST_NON_FINITE_STEP) < 0)
        step_v = tf.fill(tf.shape(changed), step)
        as_int = lambda flags: tf.cast(flags, tf.int64)  # noqa: E731
        grad_finite = tf.math.is_finite(grad_l2)
        new = {
            md.CHANGED_STEPS: column(md.CHANGED_STEPS) + as_int(changed),
            md.FIRST_UPDATE_STEP: tf.where(changed & (column(md.FIRST_UPDATE_STEP) < 0), step_v, column(md.FIRST_UPDATE_STEP)),
            md.LAST_UPDATE_STEP: tf.where(changed, step_v, column(md.LAST_UPDATE_STEP)),
            md.LOGS_AT_LAST_UPDATE: tf.where(changed, tf.fill(tf.shape(changed), logged), column(md.LOGS_AT_LAST_UPDATE)),
            md.GRAD_PRESENT_STEPS: column(md.GRAD_PRESENT_STEPS) + as_int(grad_finite & (grad_l2 > 0)),
            md.GRAD_NONE_STEPS: column(md.GRAD_NONE_STEPS) + as_int(tf.equal(grad_l2, md.GRAD_NONE)),
            md.GRAD_ZERO_STEPS: column(md.GRAD_ZERO_STEPS) + as_int(tf.equal(grad_l2, 0.0)),
            md.GRAD_NON_FINITE_STEPS: column(md.GRAD_NON_FINITE_STEPS) + as_int(tf.logical_not(grad_finite)),
            md.FIRST_NON_FINITE_STEP: tf.where(
                tf.logical_not(finite) & (column(md.FIRST_NON_FINITE_STEP) < 0), step_v, column(md.FIRST_NON_FINITE_STEP)
            ),
            md.ROWS_CHANGED: tf.where(rows_changed >= 0, tf.cast(rows_changed, tf.int64), column(md.ROWS_CHANGED)),
        }
        self._counters.assign(tf.stack([new[c] for c in _STATE_COLUMNS], axis=1))

        floats = self._float_state.read_value()
        value32 = tf.cast(value_l2, tf.float32)
        scale = tf.maximum(value32, floats[:, 0])
        delta32 = tf.cast(delta_l2, tf.float32)
        relative = tf.where(delta32 > 0, delta32 / tf.maximum(scale, np.finfo(np.float32).tiny), tf.zeros_like(delta32))
        relative = tf.where(tf.math.is_finite(relative), relative, tf.zeros_like(relative))
        max_relative = tf.maximum(floats[:, 1], relative)
        self._float_state.assign(tf.stack([tf.where(tf.math.is_finite(value32), value32, floats[:, 0]), max_relative], axis=1))

        nan32 = tf.fill(tf.shape(max_relative), np.float32(np.nan))
        # Variables whose changes have a size (floats, unless delta="checksum").
        sized = tf.constant([t.is_float and self._layout.delta == measure.EXACT for t in self._tracked])
        float_columns = {
            md.DELTA_L2: tf.cast(delta_l2, tf.float32),
            md.VALUE_L2: value32,
            md.GRAD_L2: tf.cast(grad_l2, tf.float32),
            md.MAX_RELATIVE_UPDATE: tf.where(sized, max_relative, nan32),
        }
        columns = []
        for index in range(md.NUM_COLUMNS):
            if index in float_columns:
                columns.append(tf.bitcast(float_columns[index], tf.int32))
            else:
                columns.append(tf.cast(tf.clip_by_value(new[index], -1, _INT32_MAX), tf.int32))
        body = tf.stack(columns, axis=1)
        header = tf.concat([
            tf.stack([tf.cast(tf.minimum(logged, _INT32_MAX), tf.int32), tf.constant(self._names_hash, tf.int32),
                      tf.constant(self.every_n_steps, tf.int32)]),
            tf.zeros([md.NUM_COLUMNS - 3], tf.int32),
        ], axis=0)
        record = tf.concat([header[tf.newaxis], body], axis=0)

        names_hash = tf.constant(self._names_hash, tf.int64)
        tf.cond(
            tf.not_equal(self._names_written, names_hash),
            lambda: self._write_variables(step, names_hash),
            lambda: tf.constant(False),
        )
        written = tf.summary.write(
            md.updates_tag(self.name), record, step=step, metadata=md.create_summary_metadata(md.KIND_UPDATES)
        )
        if self.on_stuck != "ignore":
            tf.cond(
                tf.equal(logged, self.stuck_after),
                lambda: self._check_stuck_in_graph(record, step),
                lambda: tf.constant(False),
            )
        return written

    def _write_variables(self, step, names_hash):
        written = tf.summary.write(
            md.variables_tag(self.name), tf.constant(self._entries_bytes), step=step,
            metadata=md.create_summary_metadata(md.KIND_VARIABLES),
        )
        with tf.control_dependencies([written]):
            self._names_written.assign(names_hash)
        return written

    # -- failing fast --------------------------------------------------------

    def _check_stuck_in_graph(self, record, step):
        # Records are built in a tf.function, so the check goes through Python
        # with py_function; the tf.cond around it makes it run exactly once.
        tf.py_function(self._report_stuck, [record, step], [])
        return tf.constant(True)

    def _report_stuck(self, record, step):
        record, step = record.numpy(), int(step.numpy())
        entries, _ = md.parse_variables(self._entries_bytes)
        rows = analysis.verdicts(entries, md.parse_updates(record), step)
        stuck = [
            row for row in rows
            if row["trainable"] and row["status"] in (analysis.NEVER_UPDATED, analysis.NON_FINITE)
        ]
        if not stuck:
            return
        lines = ["  %s: %s %s" % (row["variable"], row["status"], row["diagnosis"]) for row in stuck]
        message = (
            "tb_varupdate: after %d logged steps (step %d), %d trainable variable(s) of "
            "tracker %r are stuck:\n%s" % (self.stuck_after, step, len(stuck), self.name, "\n".join(lines))
        )
        if self.on_stuck == "raise":
            self._stuck_message = message
            raise StuckVariableError(message)
        warnings.warn(message, stacklevel=2)
