"""The reference writer: the writer contract on NumPy arrays, with nothing but `common`, `counters` and `events`.

`ReferenceTracker` is what a writer for a new framework (JAX is next) looks
like: a tracker that validates its options and warns once (`common`), a
measure (`_measure`, here NumPy), the fold every writer runs (`counters.fold`
over `counters.NumPyOps`), the variables record's bookkeeping
(`common.VariablesRecord`), event files without TensorFlow (`events`) and the
training-time check (`stuck.StuckCheck`). Tests use it to write real records
without TensorFlow or PyTorch, and `updates_record` for the hand-made records
whose counters a test sets directly (exact values, records no writer writes).
"""

import numpy as np

from tb_varupdate.format import metadata as md
from tb_varupdate.format import variables as vr
from tb_varupdate.verdicts import stuck
from tb_varupdate.writers import common
from tb_varupdate.writers import counters
from tb_varupdate.writers import events

_OPS = counters.NumPyOps()
# A row `log()` got no gradient for (a None gradient is a disconnected one).
_NOT_GIVEN = object()


def updates_record(header, ints, floats):
    """A hand-made updates record: counters set by the caller, not folded from measurements.

    The header is laid out by `counters.header_row`, as `counters.fold` lays out its own.

    Args:
      header: dict with keys "logged", "names_hash", "every_n", and optionally
        "writer_id", "step_regressions", "logs_at_last_finite_grads" (0 if absent),
        and optionally "learning_rates" (up to LEARNING_RATE_SLOTS floats).
      ints: int array [V, NUM_COLUMNS]; its FLOAT_COLUMNS are ignored.
      floats: float array [V, NUM_COLUMNS]; only its FLOAT_COLUMNS are used.

    Returns:
      An int32 array [1 + V, NUM_COLUMNS] ready for a summary write.
    """
    ints = np.asarray(ints, dtype=np.int64)
    body = ints.astype(np.int32)
    float_bits = np.asarray(floats, dtype=np.float32).view(np.int32)
    body[:, md.FLOAT_COLUMNS] = float_bits[:, md.FLOAT_COLUMNS]
    head = np.asarray([counters.header_row(
        header["logged"], header["names_hash"], header["every_n"], header.get("writer_id", 0),
        header.get("step_regressions", 0), header.get("logs_at_last_finite_grads", 0))], dtype=np.int32)
    record = np.concatenate([head, body], axis=0)
    return with_learning_rates(record, header.get("learning_rates", ()))


def with_learning_rates(record, rates):
    """`record` with the learning rates in its header's slots (at most LEARNING_RATE_SLOTS)."""
    rates = list(rates)[:md.LEARNING_RATE_SLOTS]
    if rates:
        first = md.HEADER_LEARNING_RATES
        record[0, first:first + len(rates)] = np.asarray(rates, np.float32).view(np.int32)
    return record


def _checksum(array):
    """What `delta="checksum"` compares: the sum of the bits and the sum of the squares."""
    bits = np.ascontiguousarray(array).view(np.uint8)
    return int(bits.sum(dtype=np.uint64)), float(np.sum(np.square(array, dtype=np.float64)))


def _measure(arrays, previous, gradients, delta):
    """One record's `counters.Measured` of `arrays` against `previous` (snapshots or checksums).

    Args:
      arrays: the tracked arrays, in row order.
      previous: per row, the snapshot (`delta="exact"`) or checksum at the previous record.
      gradients: per row, an array, None (disconnected) or `_NOT_GIVEN`.
      delta: "exact" or "checksum".
    """
    delta_l2, value_l2, grad_l2, changed, finite = [], [], [], [], []
    for array, before, grad in zip(arrays, previous, gradients):
        value = np.asarray(array, np.float64)
        value_l2.append(np.linalg.norm(value.ravel()))
        finite.append(bool(np.all(np.isfinite(value))))
        if delta == common.EXACT:
            delta_l2.append(np.linalg.norm((value - np.asarray(before, np.float64)).ravel()))
            changed.append(not np.array_equal(array, before))
        else:
            delta_l2.append(np.nan)
            changed.append(_checksum(array) != before)
        if grad is None:
            grad_l2.append(md.GRAD_NONE)
        elif grad is _NOT_GIVEN:
            grad_l2.append(md.GRAD_NOT_GIVEN)
        else:
            grad_l2.append(np.linalg.norm(np.asarray(grad, np.float64).ravel()))
    return counters.Measured(
        delta_l2=np.asarray(delta_l2), value_l2=np.asarray(value_l2), grad_l2=np.asarray(grad_l2),
        changed=np.asarray(changed, bool), finite=np.asarray(finite, bool),
        rows_changed=np.full(len(arrays), -1, np.int64),
    )


class ReferenceTracker:
    """Records, per `log()` call, how much each NumPy array changed and its gradient state.

    Example:

    ```python
    weights = {"w": np.zeros(3, np.float32), "b": np.zeros(1, np.float32)}
    tracker = ReferenceTracker(weights, log_dir="logs/run1")
    for step in range(100):
        weights["w"] -= 0.1 * grad_w          # updated in place
        tracker.log(step, gradients={"w": grad_w, "b": None})
    tracker.close()
    ```

    Args:
      arrays: {name: np.ndarray}, updated in place by the caller; or
        {name: (np.ndarray, trainable)}.
      log_dir: a directory for the event file, or None to keep the records in
        `records` only.
      name: the tracker's name; records go to tag `varupdate/<name>`.
      every_n_steps: record only when `step % every_n_steps == 0`.
      on_stuck: "warn", "raise" or "ignore" (`stuck.StuckCheck`).
      stuck_after: records before the first check.
      delta: "exact" (a snapshot per array) or "checksum".
      allow: regular expressions of names accepted as stuck.
      framework: the `framework` its entries say (vr.FRAMEWORKS): whose advice
        the diagnosis gives.

    Attributes:
      records: [(step, int32 updates record)] of every record written.
      document: the variables record (JSON bytes) now.

    Raises:
      ValueError: an argument is out of range.
    """

    def __init__(self, arrays, log_dir=None, *, name="model", every_n_steps=1, on_stuck="warn", stuck_after=10,
                 delta=common.EXACT, allow=(), framework=vr.FRAMEWORK_TF):
        common.check_name(name)
        common.check_every_n_steps(every_n_steps)
        self.delta = common.check_delta(delta)
        if framework not in vr.FRAMEWORKS:
            raise ValueError("framework must be one of %s. Received: framework=%r" % (vr.FRAMEWORKS, framework))
        self.name, self.every_n_steps = name, every_n_steps
        self._check = stuck.StuckCheck(name, on_stuck, stuck_after, allow)
        self._warn = common.Warnings()
        self._names = list(arrays)
        pairs = [value if isinstance(value, tuple) else (value, True) for value in arrays.values()]
        self._arrays = [array for array, _ in pairs]
        self._trainable = np.asarray([bool(trainable) for _, trainable in pairs])
        self._variables = common.VariablesRecord(common.new_writer_id())
        self._variables.update([
            {"name": name_, "shape": list(np.shape(array)), "dtype": str(np.asarray(array).dtype),
             "trainable": bool(trainable), "joined": 0, "framework": framework, "via": vr.VIA_LOG}
            for name_, (array, trainable) in zip(self._names, pairs)
        ])
        self._previous = [self._snapshot(array) for array in self._arrays]
        self._counters, self._floats = counters.initial_state(len(self._arrays))
        self._header = counters.initial_header()
        self._sized = np.asarray([np.issubdtype(np.asarray(a).dtype, np.floating) and delta == common.EXACT
                                  for a in self._arrays])
        self._writer = events.EventFiles(log_dir) if log_dir is not None else None
        self._calls = 0
        self.records = []

    def _snapshot(self, array):
        return np.array(array, copy=True) if self.delta == common.EXACT else _checksum(array)

    @property
    def document(self):
        return self._variables.document

    @property
    def stuck_message(self):
        """The training-time check's message, once it found stuck arrays; else None."""
        return self._check.message

    def log(self, step=None, gradients=None, learning_rates=()):
        """Records the change of every array since the previous record.

        Args:
          step: the training step, or None to count `log()` calls.
          gradients: optional {name: array, or None for a disconnected one};
            names left out are "not given".
          learning_rates: the header's learning-rate slots of this record.

        Returns:
          None. Errors become one warning each; only `on_stuck="raise"` raises.
        """
        with common.never_raise(self._warn):
            step = self._calls if step is None else int(step)
            self._calls += 1
            if step % self.every_n_steps:
                return
            given = {} if gradients is None else gradients
            grads = [given[name] if name in given else _NOT_GIVEN for name in self._names]
            measured = _measure(self._arrays, self._previous, grads, self.delta)
            self._previous = [self._snapshot(array) for array in self._arrays]
            self._counters, self._floats, self._header, record = counters.fold(
                _OPS, self._counters, self._floats, self._header, measured, np.int64(step), self._trainable,
                self._sized, self._variables.names_hash, self.every_n_steps, self._variables.writer_id)
            record = with_learning_rates(record, learning_rates)
            self._write(step, record)
            logged = int(self._header[counters.LOGGED])
            if self._check.is_due(logged):
                self._check.run(self._variables.entries, record, step)

    def _write(self, step, record):
        if self._writer is not None:
            if self._variables.due:
                events.write_variables(self._writer, self.name, self._variables.document, step)
            events.write_updates(self._writer, self.name, record, step)
        self._variables.mark_written()
        self.records.append((step, record))

    def close(self):
        """Flushes and closes the event file, if there is one."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
