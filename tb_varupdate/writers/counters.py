"""How one record's measurements fold into the cumulative counters: shared by every writer.

A writer measures, per variable and per record, a few numbers (`Measured`) on
the variable's device, then calls `fold` to update its cumulative state and
build the updates record (docs/FORMAT.md). `fold` is written once against a
tiny array namespace (`Ops`) so that the TensorFlow writer (graph ops, inside
the user's `tf.function`), the PyTorch writer (torch ops on the parameters'
device) and the NumPy reference used by tests compute exactly the same
counters. No framework import here: each writer passes its own `Ops`.

State, all kept by the writer between records:
* per variable, int64 `[V, len(STATE_COLUMNS)]`: the counter columns;
* per variable, float32 `[V, 2]`: the previous value norm (-1: unknown) and the
  largest relative update so far (-1: none measured yet);
* the header, int64 `[len(HEADER_STATE)]`: records written, the previous
  record's step, records whose step did not grow, and `logged` at the newest
  record whose given gradients were all finite.
"""

import collections

import numpy as np

from tb_varupdate.format import metadata as md

INT32_MAX = int(np.iinfo(np.int32).max)
INT32_MIN = int(np.iinfo(np.int32).min)
# "No such step yet" in the int64 state: no step a run logs (a resumed run's
# offset may make steps negative, so -1 cannot mean none here). The record
# keeps the format's -1 for none (docs/FORMAT.md).
NO_STEP = int(np.iinfo(np.int64).min)
STEP_COLUMNS = (md.FIRST_UPDATE_STEP, md.LAST_UPDATE_STEP, md.FIRST_NON_FINITE_STEP)

# Counter columns of the per-variable int64 state (a subset of the record columns).
STATE_COLUMNS = (
    md.CHANGED_STEPS, md.FIRST_UPDATE_STEP, md.LAST_UPDATE_STEP, md.LOGS_AT_LAST_UPDATE,
    md.GRAD_PRESENT_STEPS, md.GRAD_NONE_STEPS, md.GRAD_ZERO_STEPS, md.GRAD_NON_FINITE_STEPS,
    md.FIRST_NON_FINITE_STEP, md.ROWS_CHANGED,
)
STATE_INDEX = {column: i for i, column in enumerate(STATE_COLUMNS)}
# NO_STEP means "none yet" for steps, -1 "not tracked" for ROWS_CHANGED.
STATE_INITIAL = {md.FIRST_UPDATE_STEP: NO_STEP, md.LAST_UPDATE_STEP: NO_STEP, md.FIRST_NON_FINITE_STEP: NO_STEP,
                 md.ROWS_CHANGED: -1}

# Float state columns.
PREVIOUS_VALUE_L2 = 0
MAX_RELATIVE = 1
FLOAT_INITIAL = (-1.0, -1.0)

# Header state.
LOGGED, LAST_STEP, STEP_REGRESSIONS, LOGS_AT_LAST_FINITE_GRADS = range(4)
HEADER_STATE = (LOGGED, LAST_STEP, STEP_REGRESSIONS, LOGS_AT_LAST_FINITE_GRADS)
HEADER_INITIAL = (0, -1, 0, 0)

Measured = collections.namedtuple("Measured", "delta_l2 value_l2 grad_l2 changed finite rows_changed")
Measured.__doc__ = """One record's measurements, each a length-V array of the writer's framework.

Attributes:
  delta_l2: float, `||w_now - w_prev||` (NaN where sizes are not measured).
  value_l2: float, `||w_now||`.
  grad_l2: float, the gradient norm, `+inf` if non-finite, or the
    `metadata.GRAD_NONE` / `GRAD_NOT_GIVEN` sentinels.
  changed: bool, any element changed since the previous record.
  finite: bool, every element is finite.
  rows_changed: int, rows ever changed for sparse-fed variables, -1 if not tracked.
"""


class Ops:
    """The array operations `fold` needs; a writer subclasses it for its framework.

    Arrays are the framework's own (tf.Tensor, torch.Tensor, np.ndarray);
    Python operators (`+ - > == & ~`) are used on them directly. `step` and
    the header values are 0-d int64 arrays.
    """

    def where(self, condition, x, y):  # broadcasting, like np.where
        raise NotImplementedError

    def int64(self, x):
        raise NotImplementedError

    def int32(self, x):
        raise NotImplementedError

    def float32(self, x):
        raise NotImplementedError

    def isfinite(self, x):
        raise NotImplementedError

    def maximum(self, x, y):
        raise NotImplementedError

    def all(self, x):  # 0-d bool
        raise NotImplementedError

    def stack_columns(self, columns):  # list of [V] -> [V, len(columns)]
        raise NotImplementedError

    def stack(self, values):  # list of 0-d -> [len(values)]
        raise NotImplementedError

    def concat_rows(self, parts):  # list of [n_i, C] -> [sum n_i, C]
        raise NotImplementedError

    def column(self, matrix, index):
        return matrix[:, index]

    def bitcast_to_int32(self, x):  # float32 [V] -> int32 [V], same bits
        raise NotImplementedError

    def clip_int32(self, x):  # int64 -> int32, saturated to [-2**31, 2**31 - 1]
        raise NotImplementedError

    def constant(self, values, like_int64):  # Python ints -> int64 array on like's device
        raise NotImplementedError

    def concat_columns(self, parts):  # list of [R, c_i] -> [R, sum c_i] (replica columns only)
        raise NotImplementedError


class NumPyOps(Ops):
    """`Ops` over NumPy: the reference the framework writers are tested against."""

    def where(self, condition, x, y):
        return np.where(condition, x, y)

    def int64(self, x):
        return np.asarray(x).astype(np.int64)

    def int32(self, x):
        return np.asarray(x).astype(np.int32)

    def float32(self, x):
        return np.asarray(x).astype(np.float32)

    def isfinite(self, x):
        return np.isfinite(x)

    def maximum(self, x, y):
        return np.maximum(x, y)

    def all(self, x):
        return np.all(x)

    def stack_columns(self, columns):
        return np.stack(columns, axis=1)

    def stack(self, values):
        return np.stack([np.asarray(v) for v in values])

    def concat_rows(self, parts):
        return np.concatenate(parts, axis=0)

    def bitcast_to_int32(self, x):
        return np.ascontiguousarray(x, dtype=np.float32).view(np.int32)

    def clip_int32(self, x):
        return np.clip(x, INT32_MIN, INT32_MAX).astype(np.int32)

    def constant(self, values, like_int64):
        return np.asarray(values, dtype=np.int64)

    def concat_columns(self, parts):
        return np.concatenate(parts, axis=1)


def initial_state(count):
    """NumPy initial per-variable state for `count` new variables: (int64 [V, S], float32 [V, 2])."""
    counters = np.zeros([count, len(STATE_COLUMNS)], np.int64)
    for column, value in STATE_INITIAL.items():
        counters[:, STATE_INDEX[column]] = value
    floats = np.tile(np.asarray(FLOAT_INITIAL, np.float32), (count, 1))
    return counters, floats


def initial_header():
    """NumPy initial header state, int64 [len(HEADER_STATE)]."""
    return np.asarray(HEADER_INITIAL, np.int64)


def fold(ops, counters, floats, header, measured, step, trainable, sized, names_hash, every_n, writer_id):
    """Folds one record's measurements into the state and builds the record.

    Args:
      ops: the writer's `Ops`.
      counters: int64 [V, len(STATE_COLUMNS)], the state before this record.
      floats: float32 [V, 2], the float state before this record.
      header: int64 [len(HEADER_STATE)], the header state before this record.
      measured: `Measured` of this record.
      step: 0-d int64, this record's step.
      trainable: bool [V], whether each variable is trainable now.
      sized: bool [V], whether changes have a size (floats, delta="exact").
      names_hash: int, the variables record's `names_hash`.
      every_n: int, the tracker's `every_n_steps`.
      writer_id: int, the tracker's HEADER_WRITER_ID.

    Returns:
      (counters, floats, header, record): the new state and the int32
      updates record [1 + V, NUM_COLUMNS].
    """
    logged_before = header[LOGGED]
    logged = logged_before + 1
    column = lambda name: ops.column(counters, STATE_INDEX[name])  # noqa: E731
    as_int = ops.int64
    # A value that is NaN/Inf changed only in the first non-finite record:
    # NaN - NaN is not a change at every later record.
    changed = ops.where(measured.finite, measured.changed, column(md.FIRST_NON_FINITE_STEP) == NO_STEP)
    grad_l2 = measured.grad_l2
    grad_finite = ops.isfinite(grad_l2)
    new = {
        md.CHANGED_STEPS: column(md.CHANGED_STEPS) + as_int(changed),
        md.FIRST_UPDATE_STEP: ops.where(changed & (column(md.FIRST_UPDATE_STEP) == NO_STEP), step,
                                        column(md.FIRST_UPDATE_STEP)),
        md.LAST_UPDATE_STEP: ops.where(changed, step, column(md.LAST_UPDATE_STEP)),
        md.LOGS_AT_LAST_UPDATE: ops.where(changed, logged, column(md.LOGS_AT_LAST_UPDATE)),
        md.GRAD_PRESENT_STEPS: column(md.GRAD_PRESENT_STEPS) + as_int(grad_finite & (grad_l2 > 0)),
        md.GRAD_NONE_STEPS: column(md.GRAD_NONE_STEPS) + as_int(grad_l2 == md.GRAD_NONE),
        md.GRAD_ZERO_STEPS: column(md.GRAD_ZERO_STEPS) + as_int(grad_l2 == 0.0),
        md.GRAD_NON_FINITE_STEPS: column(md.GRAD_NON_FINITE_STEPS) + as_int(~grad_finite),
        md.FIRST_NON_FINITE_STEP: ops.where(
            ~measured.finite & (column(md.FIRST_NON_FINITE_STEP) == NO_STEP), step, column(md.FIRST_NON_FINITE_STEP)
        ),
        md.ROWS_CHANGED: ops.where(measured.rows_changed >= 0, as_int(measured.rows_changed), column(md.ROWS_CHANGED)),
    }
    counters = ops.stack_columns([new[c] for c in STATE_COLUMNS])

    # The relative update is measured against the larger of the norms before
    # and after, and only where the norm before is known and non-zero: the
    # first change of a zero-initialised bias has no relative size (it would
    # read as 1.0 and hide a learning rate that is too small forever after).
    value32 = ops.float32(measured.value_l2)
    delta32 = ops.float32(measured.delta_l2)
    previous = ops.column(floats, PREVIOUS_VALUE_L2)
    scale = ops.maximum(value32, previous)
    measurable = (previous > 0) & (delta32 > 0) & ops.isfinite(delta32) & ops.isfinite(scale)
    relative = ops.where(measurable, delta32 / ops.where(measurable, scale, np.float32(1)), np.float32(-1))
    max_relative = ops.maximum(ops.column(floats, MAX_RELATIVE), relative)
    floats = ops.stack_columns([ops.where(ops.isfinite(value32), value32, previous), max_relative])
    # Only where sizes are measured, and only once one was: NaN means "none".
    max_written = ops.where(sized & (max_relative >= 0), max_relative, np.float32(np.nan))

    # Header: steps that did not grow, and runs of non-finite gradients.
    regressed = (logged_before > 0) & (step <= header[LAST_STEP])
    all_finite = ops.all(grad_finite)
    header = ops.stack([
        logged,
        step,
        header[STEP_REGRESSIONS] + as_int(regressed),
        ops.where(all_finite, logged, header[LOGS_AT_LAST_FINITE_GRADS]),
    ])

    float_columns = {
        md.DELTA_L2: delta32,
        md.VALUE_L2: value32,
        md.GRAD_L2: ops.float32(grad_l2),
        md.MAX_RELATIVE_UPDATE: max_written,
    }
    int_columns = {**new, md.TRAINABLE: as_int(trainable)}
    body = []
    for index in range(md.NUM_COLUMNS):
        if index in float_columns:
            body.append(ops.bitcast_to_int32(float_columns[index]))
        else:
            # Counters and steps saturate at the int32 range in the record,
            # where -1 is a step column's "none" (NO_STEP in the state).
            value = int_columns[index]
            if index in STEP_COLUMNS:
                value = ops.where(value == NO_STEP, ops.constant(-1, header), value)
            body.append(ops.clip_int32(value))
    head = header_row(header[LOGGED], names_hash, every_n, writer_id, header[STEP_REGRESSIONS],
                      header[LOGS_AT_LAST_FINITE_GRADS])
    head = [value if not isinstance(value, int) else ops.constant(value, header) for value in head]
    head_row = ops.clip_int32(ops.stack(head))
    record = ops.concat_rows([head_row[None], ops.stack_columns(body)])
    return counters, floats, header, record


def header_row(logged, names_hash, every_n, writer_id, step_regressions, logs_at_last_finite_grads):
    """The updates record's header row (docs/FORMAT.md): NUM_COLUMNS values, each in its column, 0 elsewhere.

    The learning-rate slots stay 0 here: the writers fill them as they write.
    """
    head = [0] * md.NUM_COLUMNS
    head[md.HEADER_LOGGED] = logged
    head[md.HEADER_NAMES_HASH] = names_hash
    head[md.HEADER_EVERY_N] = every_n
    head[md.HEADER_WRITER_ID] = writer_id
    head[md.HEADER_STEP_REGRESSIONS] = step_regressions
    head[md.HEADER_LOGS_AT_LAST_FINITE_GRADS] = logs_at_last_finite_grads
    return head


def initial_replicas(count):
    """NumPy initial replica state of `count` variables: (int64 [V] first diverged step, float32 [V] largest spread)."""
    return np.full([count], NO_STEP, np.int64), np.full([count], -1.0, np.float32)


def fold_replicas(ops, first_diverged, spread, record, checked, measured_spread, step):
    """Folds one record's replica check (if any) into the replica state and appends version 4's columns.

    Args:
      ops: the writer's `Ops` (with `concat_columns`).
      first_diverged: int64 [V], the step replicas first differed, NO_STEP if never.
      spread: float32 [V], the largest spread seen, -1 if never compared.
      record: the int32 record [1 + V, NUM_COLUMNS] from `fold`.
      checked: bool [V], compared at this record (all False between checks).
      measured_spread: float [V], the ranks' spread at this record (0: equal).
      step: 0-d int64, this record's step.

    Returns:
      (first_diverged, spread, record): the new state and the int32 record
      [1 + V, NUM_COLUMNS_V4].
    """
    measured32 = ops.float32(measured_spread)
    diverged = checked & (measured32 != 0)
    first_diverged = ops.where(diverged & (first_diverged == NO_STEP), step, first_diverged)
    spread = ops.where(checked, ops.maximum(spread, measured32), spread)
    written = ops.where(spread >= 0, spread, np.float32(np.nan))
    # -1 is the record's "never" (NO_STEP in the state), as for the other step columns.
    never = ops.where(first_diverged == NO_STEP, ops.constant(-1, step), first_diverged)
    body = ops.stack_columns([ops.bitcast_to_int32(written), ops.clip_int32(never)])
    head = ops.clip_int32(ops.stack([ops.constant(0, step), ops.constant(0, step)]))
    return first_diverged, spread, ops.concat_columns([record, ops.concat_rows([head[None], body])])
