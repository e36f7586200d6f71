"""The device-side measurements of a record: how much each variable changed.

This is where the cost of logging is, so it is kept apart from the tracker's
bookkeeping (`tracker.py`) and shaped by what was measured (BENCHMARKS.md):

* A large variable is read in as few passes as the measurement allows: one
  fused squared difference against its snapshot and its sum (what the bare
  floor in BENCHMARKS.md does), one `l2_loss` pass over the value and one
  over the gradient (no squares materialised), and the snapshot copy. Rare
  cases (sums that underflow or overflow float32) pay an extra pass only when
  they happen, behind one cond.
* Small variables (biases, norms, small layers) are packed by size: one
  float32 [members, size] snapshot per device and size holds them, and
  row-wise reductions measure them together in float64 with a fixed number of
  ops. A graph with ~70 ops per variable made a 300-variable model's step
  2.3x slower, mostly in executor overhead, not arithmetic.
* `delta="checksum"` keeps no copy of the parameters: a variable changed when
  the wrapping sum of its bits or its sum of squares changed. It gives up the
  size of each change (DELTA_L2 is NaN, so no charts of movement and no
  `tiny_updates` verdict) and sparse rows-changed counts, and misses a change
  that only permutes the values.

`Layout.measure` returns, per tracked variable in row order, the columns of
`MEASURED` as a float64 [V, 6] tensor.
"""

import contextlib

import numpy as np
import tensorflow as tf

from tb_varupdate.format import metadata as md
from tb_varupdate.writers import common
from tb_varupdate.writers.common import CHECKSUM, EXACT  # noqa: F401  (the delta choices, named where measured)

# Columns of `Layout.measure`'s result. CHANGED and FINITE are 0/1;
# ROWS_CHANGED is -1 where rows are not counted.
DELTA_L2, VALUE_L2, GRAD_L2, CHANGED, FINITE, ROWS_CHANGED = range(6)
MEASURED = 6

# Gradient kinds per tracked variable, fixed at trace time.
NOT_GIVEN, NONE, DENSE, SPARSE = "not_given", "none", "dense", "sparse"

# Float variables of at most this many elements are packed. Packing costs a
# stack (a copy of the small variables) and float64 passes per record, and
# saves several graph ops per variable; at 16k elements they cost about the same.
PACK_MAX_ELEMENTS = 1 << 14

# Variables of at least this many elements (16 MB of float32) are measured one
# after another; see `Layout.measure`.
CHAIN_MIN_ELEMENTS = 1 << 22

_NAN = np.nan


def _sums_of_squares(tensors):
    """Sums of squares of same-dtype float32/64 `tensors`; see `_checked_sums`."""
    fast = tf.stack([tf.nn.l2_loss(t) for t in tensors]) * 2
    return _checked_sums(fast, [lambda t=t: t for t in tensors])


def _checked_sums(fast_sums, tensor_fns):
    """Exact sums of squares from fast ones: float64 [n], and bool [n] any non-zero.

    `fast_sums` are float32 (or float64) sums of squares of the tensors that
    `tensor_fns` rebuild. The usual case (all sums positive and finite) costs
    one cond for all of them. Otherwise each tensor is looked at again,
    exactly: a sum of 0 may be squares that underflowed (elements below
    ~1e-19), measured again scaled up by a power of two; Inf may be an
    overflow (above ~1.8e19), counted again in float64; NaN stays NaN. The
    tensors are rebuilt only then, so the usual case never materialises them.
    """
    usual = tf.reduce_all(fast_sums > 0) & tf.reduce_all(tf.math.is_finite(fast_sums))
    return tf.cond(
        usual,
        lambda: (tf.cast(fast_sums, tf.float64), tf.fill([len(tensor_fns)], True)),
        lambda: tuple(
            tf.stack(column)
            for column in zip(*[_exact_sum_of_squares(fn(), fast_sums[i]) for i, fn in enumerate(tensor_fns)])
        ),
    )


# Elements are multiplied by these before squaring when their squares
# underflow: the smallest subnormal times the scale still squares to a normal
# number, and the largest value that underflowed does not overflow once scaled.
_UNDERFLOW_SCALE = {tf.float32: 2.0**100, tf.float64: 2.0**500}


def _exact_sum_of_squares(tensor, fast_sum):
    """(sum of squares as float64, any element non-zero) for a tensor whose fast sum was 0 or not finite."""

    def scaled():
        scale = _UNDERFLOW_SCALE[tensor.dtype]
        scaled_sum = tf.nn.l2_loss(tensor * tf.constant(scale, tensor.dtype)) * 2
        return tf.cast(scaled_sum, tf.float64) / (scale * scale), scaled_sum > 0

    def recounted():
        if tensor.dtype == tf.float64:
            return fast_sum, tf.constant(True)
        return tf.reduce_sum(tf.square(tf.cast(tensor, tf.float64))), tf.constant(True)

    return tf.cond(tf.equal(fast_sum, 0.0), scaled, recounted)


def _bits_sum(values):
    """A checksum of the bits of float `values`: their sum as unsigned ints, as int64."""
    unsigned = {2: tf.uint16, 4: tf.uint32, 8: tf.uint64}[values.dtype.size]
    bits = tf.bitcast(values, unsigned)
    if unsigned == tf.uint16:
        bits = tf.cast(bits, tf.uint32)
    # Unsigned sums wrap, which a checksum may; the cast keeps the bits.
    return tf.cast(tf.reduce_sum(bits), tf.int64)


def grad_l2(grad, kind):
    """The GRAD_L2 column of one gradient: a norm or a `metadata.GRAD_*` sentinel."""
    if kind == NOT_GIVEN:
        return tf.constant(md.GRAD_NOT_GIVEN, tf.float64)
    if kind == NONE:
        return tf.constant(md.GRAD_NONE, tf.float64)
    values = grad.values if kind == SPARSE else tf.convert_to_tensor(grad)
    if values.dtype not in (tf.float32, tf.float64):
        values = tf.cast(values, tf.float32)
    grad_sq = _sums_of_squares([values])[0][0]
    # Measured exactly, a sum of squares is 0 only when every element is.
    return tf.where(tf.math.is_finite(grad_sq), tf.sqrt(grad_sq), tf.constant(np.inf, tf.float64))


def _rows_variable(variable):
    """Rows ever changed, for variables that may be fed sparse (embedding) gradients."""
    shape = variable.shape
    if shape.rank and shape.rank >= 2 and shape[0] is not None:
        return tf.Variable(tf.zeros([shape[0]], tf.bool), trainable=False, name="varupdate_rows")
    return None


def _count_rows(rows, now, before):
    """Marks the rows of `now` that differ from `before`; the count ever marked, float64."""
    row_changed = tf.reduce_any(tf.not_equal(now, before), axis=list(range(1, now.shape.rank)))
    marked = rows.assign(tf.logical_or(rows, row_changed))
    return tf.cast(tf.math.count_nonzero(marked), tf.float64)


def _creation_scope(lift):
    """Where the state of a variable is created: eagerly (`tf.init_scope`), or in the trace.

    A variable created in the very trace that builds the record (a model built
    by its first call inside a `tf.function`) has no value yet: its snapshot is
    then created in the trace, where tf.function initialises it when the
    record's ops first run, after the step's update: that first change is not
    measured (the variable's changes count from its second record).
    """
    return tf.init_scope() if lift else contextlib.nullcontext()


def _packable(variable):
    return (
        variable.dtype.base_dtype in (tf.float16, tf.bfloat16, tf.float32)
        and variable.shape.is_fully_defined()
        and variable.shape.num_elements() <= PACK_MAX_ELEMENTS
    )


class _Single:
    """One variable measured on its own: large, float64, integer, bool or of unknown shape."""

    def __init__(self, index, variable, delta, lift=True):
        self.indices = [index]
        self.variable = variable
        self.dtype = variable.dtype.base_dtype
        self.is_float = self.dtype.is_floating
        self.exact = delta == EXACT or not self.is_float
        with _creation_scope(lift), tf.device(variable.device):
            value = variable.read_value()
            if self.exact:
                self.snapshot = tf.Variable(value, trainable=False, name="varupdate_snapshot")
                self.rows = _rows_variable(variable)
            else:
                self.bits = tf.Variable(_bits_sum(value), trainable=False, name="varupdate_bits")
                self.value_sq = tf.Variable(
                    _sums_of_squares([tf.cast(value, tf.float32) if self.dtype != tf.float64 else value])[0][0],
                    trainable=False, name="varupdate_value_sq",
                )
                self.rows = None

    def grad_norms(self, grads, kinds):
        with tf.device(self.variable.device):
            return grad_l2(grads[0], kinds[0])[tf.newaxis]

    def measure(self, grad_norms, kinds, track_rows):
        kind = kinds[0]
        nan = tf.constant(_NAN, tf.float64)
        with tf.device(self.variable.device):
            current = self.variable.read_value()
            compute = tf.float64 if self.dtype == tf.float64 else tf.float32
            rows_changed = tf.constant(-1.0, tf.float64)
            if not self.is_float:
                previous = self.snapshot.read_value()
                changed = tf.reduce_any(tf.not_equal(current, previous))
                finite = tf.constant(True)
                delta_l2 = value_l2 = nan
                updates = [self.snapshot.assign(current)]
            elif self.exact:
                previous = self.snapshot.read_value()
                now, before = tf.cast(current, compute), tf.cast(previous, compute)
                # One fused op squares the difference: the delta itself is only
                # materialised if its sum needs a second look.
                fast = tf.stack([tf.reduce_sum(tf.math.squared_difference(now, before)), tf.nn.l2_loss(now) * 2])
                squares, non_zero = _checked_sums(fast, [lambda: now - before, lambda: now])
                delta_sq, value_sq = squares[0], squares[1]
                # A NaN delta is a change too (the record decides how to count it).
                changed = non_zero[0]
                finite = tf.math.is_finite(value_sq)
                delta_l2, value_l2 = tf.sqrt(delta_sq), tf.sqrt(value_sq)
                if track_rows and kind == SPARSE and self.rows is not None:
                    rows_changed = _count_rows(self.rows, current, previous)
                with tf.control_dependencies([changed, delta_sq, value_sq, rows_changed]):
                    updates = [self.snapshot.assign(current)]
            else:
                now = tf.cast(current, compute)
                value_sq = _sums_of_squares([now])[0][0]
                bits = _bits_sum(now)
                changed = tf.logical_or(
                    tf.not_equal(bits, self.bits.read_value()), tf.not_equal(value_sq, self.value_sq.read_value())
                )
                finite = tf.math.is_finite(value_sq)
                delta_l2, value_l2 = nan, tf.sqrt(value_sq)
                with tf.control_dependencies([changed]):
                    updates = [self.bits.assign(bits), self.value_sq.assign(value_sq)]
            with tf.control_dependencies(updates):
                row = tf.stack([
                    delta_l2, value_l2, grad_norms[0],
                    tf.cast(changed, tf.float64), tf.cast(finite, tf.float64), rows_changed,
                ])
        return row[tf.newaxis]


class _Pack:
    """Small float variables of one size on one device, measured as rows of a matrix.

    Stacked into a [members, size] matrix, they are reduced along axis 1 by a
    handful of ops whatever their number (measured faster than segment sums
    over one flat vector, which scatter). In float64, squares of float16/32
    values neither overflow nor underflow: a sum of squares is 0 exactly when
    every element is, and finite exactly when all are.
    """

    def __init__(self, indices, variables, delta, lift=True):
        self.indices = list(indices)
        self.variables = list(variables)
        self.exact = delta == EXACT
        self.device = variables[0].device
        with _creation_scope(lift), tf.device(self.device):
            matrix = self._matrix([v.read_value() for v in variables])
            if self.exact:
                self.snapshot = tf.Variable(matrix, trainable=False, name="varupdate_packed_snapshot")
                self.rows = [_rows_variable(v) for v in variables]
            else:
                self.bits = tf.Variable(_row_bits(matrix), trainable=False, name="varupdate_packed_bits")
                self.value_sq = tf.Variable(_row_squares(matrix), trainable=False, name="varupdate_packed_value_sq")

    @staticmethod
    def _matrix(tensors):
        """`tensors` (same element count) as the float32 rows of one matrix."""
        rows = [t if t.shape.rank == 1 else tf.reshape(t, [-1]) for t in tensors]
        return tf.stack([r if r.dtype == tf.float32 else tf.cast(r, tf.float32) for r in rows])

    def grad_norms(self, grads, kinds):
        """GRAD_L2 per member: dense gradients reduced together, the rest one by one."""
        count = len(self.variables)
        values = np.zeros([count], np.float64)
        for i, kind in enumerate(kinds):
            if kind in (NOT_GIVEN, NONE):
                values[i] = md.GRAD_NOT_GIVEN if kind == NOT_GIVEN else md.GRAD_NONE
        result = tf.constant(values)
        computed = [i for i, kind in enumerate(kinds) if kind in (DENSE, SPARSE)]
        if not computed:
            return result
        norms = []
        with tf.device(self.device):
            dense = [i for i in computed if kinds[i] == DENSE]
            if dense:
                grad_sq = _row_squares(self._matrix([tf.convert_to_tensor(grads[i]) for i in dense]))
                norms.append(tf.where(tf.math.is_finite(grad_sq), tf.sqrt(grad_sq), tf.constant(np.inf, tf.float64)))
            sparse = [i for i in computed if kinds[i] == SPARSE]
            if sparse:
                norms.append(tf.stack([grad_l2(grads[i], SPARSE) for i in sparse]))
            return tf.tensor_scatter_nd_update(result, [[i] for i in dense + sparse], tf.concat(norms, 0))

    def measure(self, grad_norms, kinds, track_rows):
        count = len(self.variables)
        with tf.device(self.device):
            reads = [v.read_value() for v in self.variables]
            now = self._matrix(reads)
            value_sq = _row_squares(now)
            rows_changed = tf.fill([count], tf.constant(-1.0, tf.float64))
            if self.exact:
                before = self.snapshot.read_value()
                delta_sq = _row_squares(tf.cast(now, tf.float64) - tf.cast(before, tf.float64))
                # Exact in float64: 0 only when every element is equal (NaN is a change).
                changed = tf.not_equal(delta_sq, 0.0)
                delta_l2 = tf.sqrt(delta_sq)
                counted = [i for i, kind in enumerate(kinds) if track_rows and kind == SPARSE and self.rows[i] is not None]
                if counted:
                    shaped = lambda matrix, i: tf.reshape(matrix[i], self.variables[i].shape)  # noqa: E731
                    # The value now from its read, not as a row of `now` shaped back: grappler
                    # folds stack-slice-reshape of a reshape into the first reshape and then
                    # fails its topological sort on stderr ("Non-existent input
                    # .../varupdate/Reshape_N"), e.g. in a Keras NMT transformer's fit.
                    as_float = lambda i: tf.cast(reads[i], tf.float32)  # noqa: E731
                    rows_changed = tf.tensor_scatter_nd_update(
                        rows_changed, [[i] for i in counted],
                        tf.stack([_count_rows(self.rows[i], as_float(i), shaped(before, i)) for i in counted]),
                    )
                with tf.control_dependencies([delta_sq, rows_changed]):
                    updates = [self.snapshot.assign(now)]
            else:
                bits = _row_bits(now)
                changed = tf.logical_or(
                    tf.not_equal(bits, self.bits.read_value()), tf.not_equal(value_sq, self.value_sq.read_value())
                )
                delta_l2 = tf.fill([count], tf.constant(_NAN, tf.float64))
                with tf.control_dependencies([changed]):
                    updates = [self.bits.assign(bits), self.value_sq.assign(value_sq)]
            with tf.control_dependencies(updates):
                return tf.stack([
                    delta_l2, tf.sqrt(value_sq), grad_norms,
                    tf.cast(changed, tf.float64), tf.cast(tf.math.is_finite(value_sq), tf.float64), rows_changed,
                ], axis=1)


def _row_squares(matrix):
    """Per-row sums of squares in float64."""
    wide = tf.cast(matrix, tf.float64)
    return tf.reduce_sum(wide * wide, axis=1)


def _row_bits(matrix):
    """Per-row checksums of a float32 matrix's bits, as int64."""
    return tf.reduce_sum(tf.cast(tf.bitcast(matrix, tf.uint32), tf.int64), axis=1)


class Layout:
    """The measurement groups of a tracker's variables; grows as variables join."""

    def __init__(self, delta=EXACT):
        self.delta = common.check_delta(delta)
        self.groups = []
        self.count = 0

    def add(self, variables, lift=None):
        """Adds groups for `variables` (tf.Variables), given rows count, count+1, ...

        Variables already measured keep their groups (and snapshots), so a
        variable joining late never resets another's delta.

        Args:
          variables: the new tf.Variables, in row order.
          lift: per variable, create its state eagerly (True, the default) or
            in the current trace (False: see `_creation_scope`).
        """
        lift = [True] * len(variables) if lift is None else list(lift)
        packs = {}
        for offset, (variable, lifted) in enumerate(zip(variables, lift)):
            index = self.count + offset
            if _packable(variable):
                key = (variable.device, variable.shape.num_elements(), lifted)
                packs.setdefault(key, []).append((index, variable))
            else:
                self.groups.append(_Single(index, variable, self.delta, lifted))
        for (_, _, lifted), members in packs.items():
            self.groups.append(_Pack([i for i, _ in members], [v for _, v in members], self.delta, lifted))
        self.count += len(variables)

    def measure(self, grads, kinds, track_rows):
        """Measures every variable; float64 [count, MEASURED] in row order.

        Args:
          grads: per row, the gradient (a tensor, `tf.IndexedSlices` or None).
          kinds: per row, NOT_GIVEN, NONE, DENSE or SPARSE.
          track_rows: count changed rows of variables fed SPARSE gradients.
        """
        parts, order = [], []
        # Gradient norms first and unordered: they can run while the optimizer
        # applies, so no gradient outlives its update waiting for the tracker
        # (measured: logging after the update held all gradients, +2 copies of
        # the parameters at peak).
        per_group = []
        for group in self.groups:
            group_kinds = [kinds[i] for i in group.indices]
            per_group.append((group, group_kinds, group.grad_norms([grads[i] for i in group.indices], group_kinds)))
        previous_large = []
        for group, group_kinds, grad_norms in per_group:
            # Large variables one at a time: a delta as large as its variable
            # then lives only while it is measured, so the transient memory is
            # one variable, not another copy of the model. Smaller ones run in
            # parallel (chaining the MLP's 1M-element kernels cost 0.7 ms a step).
            large = isinstance(group, _Single) and (group.variable.shape.num_elements() or 0) >= CHAIN_MIN_ELEMENTS
            with tf.control_dependencies(previous_large if large else []):
                parts.append(group.measure(grad_norms, group_kinds, track_rows))
            if large:
                previous_large = parts[-1:]
            order.extend(group.indices)
        measured = tf.concat(parts, 0)
        if order == list(range(self.count)):
            return measured
        return tf.gather(measured, np.argsort(np.asarray(order)))
