"""The PyTorch writer's measurements: how much each tensor changed since the last record, on its device.

This runs at every logged step, so it is built like the optimizers' own
multi-tensor path (`torch/optim/adam.py`): a `Plan`, made when tensors join or
are re-pointed, sorts the tracked tensors into blocks of one device and
dtype, and a record is a fixed number of kernels per block, whatever the
number of tensors. Nothing is read back to the host here: the results are
one device tensor, which `_torch_pending` reads every few records.

* Blocks: tensors of at least `LARGE_ELEMENTS` elements are measured as a
  list by `torch._foreach_*` kernels; smaller ones of one shape are packed,
  their snapshots the rows of one matrix, and measured by row reductions (on
  the CPU, where a foreach kernel is a loop of per-tensor kernels, 300 small
  tensors cost ~10 ms a record as lists, a few as packs).
* `delta="exact"` keeps one snapshot per float tensor, which doubles as
  scratch: `snapshot -= value` and the L2 of that (`_exact_l2`), then the
  snapshot is copied back from the value. All in place.
* Exact norms: a float32 sum of squares is 0 for changes below ~1e-19 and
  Inf for values above ~1e19. On CUDA the norms accumulate in float64 (one
  pass, the same memory traffic); elsewhere, where float64 reductions are
  ~10x slower, the L2 is taken twice, as is and times 2**100 (`_UP`), and the
  finite one of the second, which no square underflows, is kept.
* `delta="checksum"` keeps no copy: a tensor changed when the sum of its
  bits or its L2 norm changed (one kernel pair per tensor); the size of the
  change is not measured (NaN).
* Integer and bool tensors (BatchNorm's `num_batches_tracked`) are compared
  with their snapshot by multi-tensor kernels; they have no size.
* Sparse gradients (`nn.Embedding(sparse=True)`), and gradients of another
  dtype than their tensor, are measured one tensor at a time: rare, and a
  sparse one's changed rows are counted.
"""

import math

import torch

from tb_varupdate import metadata as md

EXACT, CHECKSUM = "exact", "checksum"
DELTA_CHOICES = (EXACT, CHECKSUM)

# Columns of `Measurement.measure`'s result, the `counters.Measured` fields.
DELTA_L2, VALUE_L2, GRAD_L2, CHANGED, FINITE, ROWS_CHANGED = range(6)
NUM_MEASURED = 6
# Tensors of at least this many elements (256 KB of float32) are measured as
# foreach lists; smaller ones packed by shape, where a stack copy costs less
# than a kernel per tensor.
LARGE_ELEMENTS = 1 << 16
_BITS_VIEW = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
# The second look's scale (see `_exact_l2`): a power of two, so scaling is
# exact, and the smallest float32 (1.4e-45) times it squares to a normal float32.
_UP = 2.0 ** 100


def _dtensor_type():
    try:
        from torch.distributed.tensor import DTensor  # pylint: disable=import-outside-toplevel
    except ImportError:  # torch without DTensor
        return None
    return DTensor


def is_dtensor(tensor):
    """Whether `tensor` is a `DTensor` (a sharded or replicated parameter: FSDP2, tensor parallel)."""
    dtensor = _dtensor_type()
    return dtensor is not None and isinstance(tensor, dtensor)


def local(tensor):
    """What this rank holds and measures, detached: a DTensor's local shard, else the tensor itself."""
    if is_dtensor(tensor):
        return tensor.to_local().detach()
    return tensor.detach()


def _opmath(dtype):
    """The dtype norms of `dtype` tensors accumulate in: float32 for 16-bit floats."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class _Lists:
    """The block operations over a list of tensors: one multi-tensor kernel each."""

    @staticmethod
    def norms(tensors, dtype):
        return torch.stack(torch._foreach_norm(tensors, 2, dtype=dtype)).to(torch.float64)  # pylint: disable=protected-access

    @staticmethod
    def sub_(tensors, others):
        torch._foreach_sub_(tensors, others)  # pylint: disable=protected-access

    @staticmethod
    def mul_(tensors, scalar):
        torch._foreach_mul_(tensors, scalar)  # pylint: disable=protected-access

    @staticmethod
    def copy_(tensors, others):
        torch._foreach_copy_(tensors, others)  # pylint: disable=protected-access


class _Rows:
    """The block operations over a matrix whose rows are the tensors: one kernel each."""

    @staticmethod
    def norms(matrix, dtype):
        return torch.linalg.vector_norm(matrix, dim=1, dtype=dtype).to(torch.float64)

    @staticmethod
    def sub_(matrix, other):
        matrix.sub_(other)

    @staticmethod
    def mul_(matrix, scalar):
        matrix.mul_(scalar)

    @staticmethod
    def copy_(matrix, other):
        matrix.copy_(other)


def _exact_l2(ops, data, dtype, device, scratch):
    """(float64 L2 [n], bool non-zero [n]) of a block's tensors, exact for tiny and huge values alike.

    Args:
      ops: `_Lists` or `_Rows`.
      data: the block's tensors (a list or a matrix).
      dtype: their dtype.
      device: their device.
      scratch: whether `data` may be overwritten (the second look scales it in place).
    """
    if device.type == "cuda":
        norms = ops.norms(data, torch.float64)
        return norms, norms != 0
    opmath = _opmath(dtype)
    plain = ops.norms(data, opmath)
    if not scratch:
        return plain, plain != 0
    ops.mul_(data, _UP)
    scaled = ops.norms(data, opmath) / _UP
    # Where the scaling overflowed (values above ~1e-11) the plain norm has no underflow.
    return torch.where(torch.isfinite(scaled), scaled, plain), (plain != 0) | (scaled != 0)


def _bits_sum(tensor):
    """0-d int64 on the tensor's device: a checksum of a float tensor's bits."""
    flat = tensor.detach().reshape(-1)
    return flat.view(_BITS_VIEW[flat.element_size()]).sum(dtype=torch.int64)


class Row:
    """One tracked tensor: the parameter or buffer, its snapshot (or checksum), its changed-rows mask."""

    __slots__ = ("tensor", "local", "snapshot", "is_float", "rows", "bits", "value_l2")

    def __init__(self, tensor, delta):
        self.tensor = tensor
        self.is_float = tensor.is_floating_point()
        self.rows = self.snapshot = self.bits = self.value_l2 = self.local = None
        self.reset(tensor, delta)

    def reset(self, tensor, delta):
        """Points the row at `tensor` (a layer was replaced): measured from its value now."""
        self.tensor = tensor
        # What this rank holds and measures: a DTensor's local shard (`_torch_dist.Sharded` adds them up).
        self.local = data = local(tensor)
        if delta == EXACT or not self.is_float:
            self.snapshot = data.clone()
        else:
            # As `measure` takes it, so an unchanged value compares equal.
            self.bits = _bits_sum(data)
            self.value_l2 = _exact_l2(_Lists, [data], data.dtype, data.device, scratch=False)[0][0]


class _Block:
    """Tensors of one device and dtype measured together: a foreach list, or a pack of one shape.

    Args:
      rows: every tracked `Row`.
      members: the indices of this block's rows.
      packed: stack the members as the rows of one matrix (small, one shape).
      home: the device the results land on.
    """

    def __init__(self, rows, members, packed, home):
        self.members = members
        self.rows = [rows[i] for i in members]
        self.positions = torch.tensor(members, dtype=torch.int64, device=home)
        self.values = [row.local for row in self.rows]
        self.dtype, self.device = self.values[0].dtype, self.values[0].device
        self.shape = self.values[0].shape
        self.ops = _Rows if packed else _Lists
        if self.dtype == torch.bool:
            # foreach arithmetic has no bool kernels: the same bytes as int8.
            self.values = [v.view(torch.int8) for v in self.values]
        if packed:
            # The snapshots become rows of one matrix; each row's snapshot a view of it.
            self.scratch = torch.stack([row.snapshot for row in self.rows]).reshape(len(members), -1)
            for k, row in enumerate(self.rows):
                row.snapshot = self.scratch[k].view(self.shape)
        elif self.rows[0].snapshot is not None:
            self.scratch = [row.snapshot.view(torch.int8) if self.dtype == torch.bool else row.snapshot
                            for row in self.rows]
        else:
            self.scratch = None  # checksum floats keep no copy
        self._present = {}  # tuple of member positions with a gradient -> their row indices on `home`

    def now(self):
        """The members' values now: the list itself, or a pack's stacked copy."""
        if self.ops is _Rows:
            return torch.stack(self.values).reshape(len(self.members), -1)
        return self.values

    def difference(self, k):
        """Member `k`'s difference from its snapshot, in its own shape, while the scratch holds differences."""
        return self.scratch[k].view(self.shape) if self.ops is _Rows else self.scratch[k]

    def present(self, positions, home):
        """The row indices (on `home`) of the members at `positions` (a tuple), cached."""
        found = self._present.get(positions)
        if found is None:
            found = self._present[positions] = torch.tensor(
                [self.members[k] for k in positions], dtype=torch.int64, device=home)
        return found


class Plan:
    """What one record measures, built when the tracked rows change, not at every record.

    Args:
      rows: the tracked `Row`s, in record order.
      delta: "exact" or "checksum".
      no_grad: per row, its gradient column when it has no gradient tensor
        (`GRAD_NONE`, or `GRAD_NOT_GIVEN` for buffers).
    """

    def __init__(self, rows, delta, no_grad):
        self.rows = list(rows)
        self.count = len(self.rows)
        devices = [row.local.device for row in self.rows]
        # Results land on one device: the first accelerator's, else the CPU.
        self.home = next((d for d in devices if d.type != "cpu"), torch.device("cpu"))
        by_key = {}
        for index, row in enumerate(self.rows):
            if row.local.numel() == 0:
                continue  # never changes (or another rank's shard): the defaults below hold
            tensor = row.local
            packed = row.is_float and delta == EXACT and tensor.numel() < LARGE_ELEMENTS
            key = (row.is_float, tensor.device, tensor.dtype, tuple(tensor.shape) if packed else None)
            by_key.setdefault(key, []).append(index)
        self.floats, self.others = [], []
        for (is_float, _, _, shape), members in by_key.items():
            block = _Block(self.rows, members, shape is not None, self.home)
            (self.floats if is_float else self.others).append(block)
        # What the blocks hold (packing re-points snapshots): a row re-pointed since needs a new plan.
        self._held = [(row.tensor, row.snapshot) for row in self.rows]
        empty = [i for i, row in enumerate(self.rows) if row.local.numel() == 0]
        defaults = torch.zeros(NUM_MEASURED, self.count, dtype=torch.float64)
        defaults[DELTA_L2] = 0.0 if delta == EXACT else math.nan
        defaults[DELTA_L2, [i for i, row in enumerate(self.rows) if not row.is_float]] = math.nan
        defaults[VALUE_L2, empty] = 0.0
        defaults[GRAD_L2] = torch.tensor(no_grad, dtype=torch.float64)
        defaults[FINITE] = 1.0
        defaults[ROWS_CHANGED] = -1.0
        self.defaults = defaults.to(self.home)

    def is_for(self, rows):
        """Whether this plan still measures exactly `rows` (same tensors, same snapshots)."""
        return len(rows) == self.count and all(
            row is mine and row.tensor is tensor and row.snapshot is snapshot
            for row, mine, (tensor, snapshot) in zip(rows, self.rows, self._held))


class Measurement:
    """Measures a `Plan`'s rows; `measure` returns one [NUM_MEASURED, rows] float64 tensor on the device."""

    def __init__(self, delta=EXACT):
        if delta not in DELTA_CHOICES:
            raise ValueError("delta must be one of %s. Received: delta=%r" % (DELTA_CHOICES, delta))
        self.delta = delta
        self.plan = None

    def plan_for(self, rows, grads):
        """The plan of `rows`, rebuilt only when a row joined or was re-pointed."""
        if self.plan is None or not self.plan.is_for(rows):
            no_grad = [md.GRAD_NOT_GIVEN if isinstance(g, float) and g == md.GRAD_NOT_GIVEN else md.GRAD_NONE
                       for g in grads]
            self.plan = Plan(rows, self.delta, no_grad)
        return self.plan

    def measure(self, rows, grads, track_rows=True):
        """One record's measurements, left on the device.

        Args:
          rows: the tracked `Row`s, in record order.
          grads: per row, the gradient tensor (dense or sparse), `GRAD_NONE`
            (no gradient), or `GRAD_NOT_GIVEN` for tensors that have none (buffers).
          track_rows: count the rows changed of tensors fed sparse gradients.

        Returns:
          float64 [NUM_MEASURED, len(rows)] on the plan's home device, rows as
          `counters.Measured`'s fields (CHANGED and FINITE as 0/1).
        """
        plan = self.plan_for(rows, grads)
        out = plan.defaults.clone()
        with torch.no_grad():
            for block in plan.others:
                _measure_others(block, out)
            for block in plan.floats:
                self._measure_floats(block, grads, out, track_rows)
        return out

    def _measure_floats(self, block, grads, out, track_rows):
        home, ops = out.device, block.ops
        now = block.now()
        value_l2, _ = _exact_l2(ops, now, block.dtype, block.device, scratch=False)
        out[VALUE_L2].index_copy_(0, block.positions, value_l2.to(home))
        out[FINITE].index_copy_(0, block.positions, torch.isfinite(value_l2).to(home, torch.float64))
        dense, alone = [], []  # member positions: gradients measured together, and one at a time
        for k, index in enumerate(block.members):
            grad = grads[index]
            if isinstance(grad, torch.Tensor):
                same = not grad.is_sparse and grad.dtype == block.dtype and grad.device == block.device
                (dense if same else alone).append(k)
        if self.delta == EXACT:
            ops.sub_(block.scratch, now)
            for k in alone if track_rows else ():
                if grads[block.members[k]].is_sparse and block.values[k].dim() >= 2:
                    _count_rows(block.rows[k], block.difference(k), out, block.members[k])
            delta_l2, changed = _exact_l2(ops, block.scratch, block.dtype, block.device, scratch=True)
            out[DELTA_L2].index_copy_(0, block.positions, delta_l2.to(home))
            out[CHANGED].index_copy_(0, block.positions, changed.to(home, torch.float64))
        else:
            _checksum_changed(block, value_l2, out)
        if dense:
            grad_l2 = self._grad_norms(block, [grads[block.members[k]] for k in dense], dense)
            out[GRAD_L2].index_copy_(0, block.present(tuple(dense), home), grad_l2.to(home))
        if self.delta == EXACT:
            ops.copy_(block.scratch, now)
        for k in alone:
            grad = grads[block.members[k]]
            norm = torch.linalg.vector_norm(grad.coalesce().values() if grad.is_sparse else grad, dtype=torch.float64)
            out[GRAD_L2, block.members[k]] = torch.where(torch.isnan(norm), math.inf, norm).to(home)

    def _grad_norms(self, block, dense_grads, dense):
        """float64 [len(dense)]: the exact L2 of the block's dense gradients; NaN reads as Inf (non-finite)."""
        if block.ops is _Rows:
            data, scratch = torch.stack(dense_grads).reshape(len(dense), -1), True  # a copy of our own
        elif self.delta == EXACT and block.device.type != "cuda":
            # The snapshots are scratch until copied back: the gradients' turn.
            data, scratch = [block.scratch[k] for k in dense], True
            torch._foreach_copy_(data, dense_grads)  # pylint: disable=protected-access
        else:
            data, scratch = dense_grads, False
        norms, _ = _exact_l2(block.ops, data, block.dtype, block.device, scratch)
        return torch.where(torch.isnan(norms), math.inf, norms)


def _measure_others(block, out):
    """Integer and bool tensors: changed when any element differs from the snapshot."""
    torch._foreach_sub_(block.scratch, block.values)  # pylint: disable=protected-access
    torch._foreach_abs_(block.scratch)  # pylint: disable=protected-access
    largest = torch.stack(torch._foreach_max(block.scratch))  # pylint: disable=protected-access
    out[CHANGED].index_copy_(0, block.positions, (largest != 0).to(out.device, torch.float64))
    torch._foreach_copy_(block.scratch, block.values)  # pylint: disable=protected-access


def _checksum_changed(block, value_l2, out):
    """`delta="checksum"`: changed where the bits sum or the L2 differs from the previous record's."""
    changed = []
    for row, value, norm in zip(block.rows, block.values, value_l2.unbind()):
        bits = _bits_sum(value)
        changed.append((bits != row.bits) | (norm != row.value_l2))
        row.bits, row.value_l2 = bits, norm
    out[CHANGED].index_copy_(0, block.positions, torch.stack(changed).to(out.device, torch.float64))


def _count_rows(row, difference, out, index):
    """Marks the rows whose difference is non-zero; writes the count ever marked."""
    now = difference.reshape(difference.shape[0], -1).ne(0).any(dim=1)
    row.rows = now if row.rows is None else row.rows | now
    out[ROWS_CHANGED, index] = row.rows.sum().to(out.device, torch.float64)
