"""The record itself: the tracker's state on device and the ops that build, write and check one record.

`Recorder.ops` runs inside the tracker's traced function or the user's
`tf.function`: it measures every variable (`measure.Layout`), folds the
measurements into the cumulative state with `counters.fold` over TensorFlow
ops, writes the updates record (and the variables record when the list
changed), and at the `stuck_after`-th record runs the `stuck.StuckCheck` in a
`py_function` that returns its message instead of raising through the graph.
"""

import tensorflow as tf

from tb_varupdate.format import metadata as md
from tb_varupdate.writers import common
from tb_varupdate.writers import counters
from tb_varupdate.writers.tf import measure
from tb_varupdate.writers.tf.ops import TFOps

_OPS = TFOps()


def _is_check_record(logged, stuck_after):
    """`stuck.is_check_record` as ops: at `stuck_after` records, then at 2x, 4x, ... as many."""
    multiple = logged // stuck_after
    return (tf.equal(logged % stuck_after, 0) & tf.greater(multiple, 0)
            & tf.equal(tf.bitwise.bitwise_and(multiple, multiple - 1), 0))


class Recorder:
    """One tracker's device state and record ops.

    Args:
      name: the tracker's name (its tags).
      every_n_steps: record only when `step % every_n_steps == 0`.
      writer_id: the tracker's HEADER_WRITER_ID.
      check: the tracker's `stuck.StuckCheck`.
      variables: the tracker's `variables.Variables`.
      matcher: the tracker's `gradients.Matcher` (its counts feed a warning).
      warn: the tracker's `common.Warnings`.
      delta: `measure.EXACT` or `measure.CHECKSUM`.
      track_rows: count changed rows of sparse-fed variables.
    """

    def __init__(self, name, every_n_steps, writer_id, check, variables, matcher, warn, delta, track_rows):
        self.name = name
        self.every_n_steps = every_n_steps
        self.writer_id = writer_id
        self._check = check
        self._variables = variables
        self._matcher = matcher
        self._warn = warn
        self.layout = measure.Layout(delta)
        self.track_rows = track_rows
        self.in_eager_call = False
        self.pending_stuck = None  # the check's message in an eager call, raised once the call returns
        # Callables giving each learning-rate slot's rate as a scalar tensor,
        # read in the record's ops (the Keras callback sets them: `optim`).
        self.learning_rates = []
        # Where set (the Keras callback), the trainable flags come from this
        # bool variable at run time, not from the trace: a fit after
        # `trainable` changed without `compile()` reuses the old trace, and
        # its records must show the flags of now (`optim`).
        self.live_trainable = None
        self._variables_record = common.VariablesRecord(writer_id)
        with tf.init_scope():
            self.header = tf.Variable(counters.initial_header(), trainable=False, name="varupdate_header")
            self._names_written = tf.Variable(-1, dtype=tf.int64, trainable=False, name="varupdate_names")
            # log(None) uses this count of log() calls as the step.
            self.calls = tf.Variable(0, dtype=tf.int64, trainable=False, name="varupdate_calls")
            initial, initial_floats = counters.initial_state(0)
            self._counters = tf.Variable(initial, shape=tf.TensorShape([None, initial.shape[1]]), trainable=False,
                                         name="varupdate_counters")
            self._floats = tf.Variable(initial_floats, shape=tf.TensorShape([None, 2]), trainable=False,
                                       name="varupdate_floats")
            # The newest record and its step, for the check once more at the end of a fit (`final_check`).
            self._last_record = tf.Variable(tf.zeros([0, md.NUM_COLUMNS], tf.int32), shape=tf.TensorShape(None),
                                            trainable=False, name="varupdate_last_record")
            self._last_step = tf.Variable(-1, dtype=tf.int64, trainable=False, name="varupdate_last_step")

    def add(self, added, lift):
        """Adds state for newly tracked variables (`Tracked`, in row order); see `measure.Layout.add`."""
        with tf.init_scope():
            fresh, fresh_floats = counters.initial_state(len(added))
            self._counters.assign(tf.concat([self._counters, fresh], 0))
            self._floats.assign(tf.concat([self._floats, fresh_floats], 0))
        self.layout.add([t.variable for t in added], lift)
        self._variables_record.update(self._variables.entries())

    def reencode(self):
        """Encodes the variables record again after an entry changed (not the rows); written at the next record."""
        self._variables_record.update(self._variables.entries())
        with tf.init_scope():
            self._names_written.assign(-1)

    def _trainable_mask(self, trainable):
        """bool [V]: the live flags where they cover every row now, else the trace's."""
        traced = tf.constant(trainable, tf.bool)
        live = self.live_trainable
        if live is None:
            return traced
        current, rows = live.read_value(), len(trainable)
        # Sliced and padded to the rows of this trace, so no op depends on
        # which is used (a tf.cond here let grappler drop the reshape that
        # guarded the shape); the live flags only where they cover every row.
        head = current[:rows]
        padded = tf.ensure_shape(tf.concat([head, tf.zeros([rows - tf.size(head)], tf.bool)], 0), [rows])
        return tf.where(tf.equal(tf.size(current), rows), padded, traced)

    def _with_learning_rates(self, record):
        """`record` with the learning-rate slots of its header filled (docs/FORMAT.md)."""
        if not self.learning_rates:
            return record
        rates = tf.stack([tf.cast(read(), tf.float32) for read in self.learning_rates[:md.LEARNING_RATE_SLOTS]])
        bits = tf.bitcast(rates, tf.int32)[None]
        first, count = md.HEADER_LEARNING_RATES, len(self.learning_rates[:md.LEARNING_RATE_SLOTS])
        head = tf.concat([record[:1, :first], bits, record[:1, first + count:]], axis=1)
        return tf.concat([head, record[1:]], axis=0)

    def ops(self, step, grads, kinds, extra):
        """The ops of one log() call; returns the stuck message ("" if none) as a 0-d string."""
        trainable, _ = extra
        with tf.name_scope("varupdate"):
            calls = self.calls.assign_add(1) - 1
            if step is None:
                step = calls
            if self.every_n_steps == 1:
                return self._record(step, grads, kinds, trainable)
            return tf.cond(
                tf.equal(step % self.every_n_steps, 0),
                lambda: self._record(step, grads, kinds, trainable),
                lambda: tf.constant(""),
            )

    def _record(self, step, grads, kinds, trainable):
        measured = self.layout.measure(grads, kinds, self.track_rows)
        column = lambda index: measured[:, index]  # noqa: E731
        header_before = self.header.read_value()
        sized = tf.constant([t.is_float and self.layout.delta == measure.EXACT for t in self._variables.tracked])
        new_counters, new_floats, header, record = counters.fold(
            _OPS, self._counters.read_value(), self._floats.read_value(), header_before,
            counters.Measured(
                delta_l2=column(measure.DELTA_L2), value_l2=column(measure.VALUE_L2), grad_l2=column(measure.GRAD_L2),
                changed=column(measure.CHANGED) > 0, finite=column(measure.FINITE) > 0,
                rows_changed=tf.cast(column(measure.ROWS_CHANGED), tf.int64),
            ),
            step, self._trainable_mask(trainable), sized, self._variables_record.names_hash, self.every_n_steps, self.writer_id,
        )
        record = self._with_learning_rates(record)
        self._last_record.assign(record)
        self._last_step.assign(tf.cast(step, tf.int64))
        self._counters.assign(new_counters)
        self._floats.assign(new_floats)
        self.header.assign(header)
        names_hash = tf.constant(self._variables_record.names_hash, tf.int64)
        tf.cond(
            tf.not_equal(self._names_written, names_hash),
            lambda: self._write_variables(step, names_hash),
            lambda: tf.constant(False),
        )
        tf.summary.write(md.updates_tag(self.name), record, step=step, metadata=md.create_summary_metadata(md.KIND_UPDATES))
        regressions = counters.STEP_REGRESSIONS
        tf.cond(
            tf.equal(header[regressions], 1) & tf.equal(header_before[regressions], 0),
            lambda: tf.py_function(self._warn_step_regression, [step, header_before[counters.LAST_STEP]], tf.bool),
            lambda: tf.constant(False),
        )
        if not self._check.enabled:
            return tf.constant("")
        # The entries of this trace's rows, as plain data: the check reads them, never the JSON.
        entries = self._variables_record.entries
        return tf.reshape(tf.cond(
            _is_check_record(header[counters.LOGGED], self._check.stuck_after),
            lambda: tf.py_function(lambda r, s: self._run_check(entries, r, s), [record, step], tf.string),
            lambda: tf.constant(""),
        ), [])

    def _write_variables(self, step, names_hash):
        written = tf.summary.write(
            md.variables_tag(self.name), tf.constant(self._variables_record.document), step=step,
            metadata=md.create_summary_metadata(md.KIND_VARIABLES),
        )
        with tf.control_dependencies([written]):
            self._names_written.assign(names_hash)
        return written

    # -- checks at training time (run from py_function, once) ---------------------

    def _warn_step_regression(self, step, previous):
        self._warn.once(
            "step-regression",
            "tb_varupdate: tracker %r got step %d after step %d: its step did not grow. "
            "Verdicts count records, so nothing is hidden, but the tab's steps repeat; "
            "pass a step that grows, e.g. step=optimizer.iterations or a global counter."
            % (self.name, int(step.numpy()), int(previous.numpy())),
            stacklevel=2,
        )
        return True

    def final_check(self):
        """At the end of a fit: the check once more on the newest record (`StuckCheck.is_due_at_end`)."""
        if self._check.is_due_at_end(int(self.header[counters.LOGGED].numpy())):
            self._run_check(self._variables_record.entries, self._last_record.read_value(),
                            self._last_step.read_value())

    def _run_check(self, entries, record, step):
        """The `on_stuck` check of the `stuck_after`-th record; returns its message or ""."""
        given, matched = self._matcher.given, self._matcher.matched
        if given and not matched:
            self._warn.once(
                "none-matched",
                "tb_varupdate: tracker %r was given %d gradients but none matched a tracked "
                "variable, so every gradient is recorded as not given. Pass (gradient, variable) "
                "pairs whose variables are the tracked ones (or pass their model to the tracker)."
                % (self.name, given),
                stacklevel=2,
            )
        record = record.numpy()
        # A variable with no element is `empty`, never stuck: `find` reports none.
        message = self._check.find(entries, record, int(step.numpy()))
        if message is None:
            return ""
        self._check.message = message
        if self._check.on_stuck == "warn":
            self._warn.once("stuck:%d" % int(record[0, md.HEADER_LOGGED]), message, stacklevel=2)
        elif self.in_eager_call:
            self.pending_stuck = message
        return message
