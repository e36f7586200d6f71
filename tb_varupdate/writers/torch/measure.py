"""The PyTorch writer's measurements: how much each tensor changed since the last record, on its device.

This runs at every logged step, so it is built like the optimizers' own
multi-tensor path (`torch/optim/adam.py`): a `Plan`, made when tensors join or
are re-pointed, sorts the tracked tensors into blocks of one device and
dtype, and a record is a fixed number of kernels per block, whatever the
number of tensors. Nothing is read back to the host here: the results are
one device tensor, which `pending` reads every few records.

* Blocks, per device and dtype: float tensors of at least `LARGE_ELEMENTS`
  elements are measured as a list by `torch._foreach_*` kernels; smaller ones
  are laid end to end in one vector (one `cat` of cached flat views), their
  snapshots views of one flat scratch, and their norms are one segmented
  reduction (`torch.segment_reduce`). A list costs the host work per tensor
  (a foreach kernel allocates a result per tensor, a loop of kernels on the
  CPU); the flat vector a few kernels however many small tensors there are.
* `delta="exact"` keeps one snapshot per float tensor, which doubles as
  scratch: `snapshot -= value` and the L2 of that (`_norms_of`), then the
  snapshot is copied back from the value. All in place.
* Exact norms: a float32 sum of squares is 0 for changes below ~1e-19 and
  Inf for values above ~1e19. On CUDA the norms accumulate in float64 (one
  pass, the same memory traffic); elsewhere, where float64 reductions are
  ~5x slower (the CPU MLP of benchmarks/: 1.6 ms against 0.34 ms), the L2
  is taken twice, as is and of the values times 2**100
  (`_UP`), and `_exact` keeps the second wherever it is finite. Off CUDA,
  then, nothing is exact at the high end (an L2 above ~1.8e19 reads Inf: a
  value or gradient that large counts as non-finite), and the value norms
  get no second look (values cannot be scaled in place; a scaled copy would
  cost two more passes): a value whose L2 is below ~1e-19 reads 0, and its
  relative update is not measured. docs/FORMAT.md says so.
* `delta="checksum"` keeps no copy: a tensor changed when the sum of its
  bits or its L2 norm changed (one kernel pair per tensor); the size of the
  change is not measured (NaN).
* Integer and bool tensors (BatchNorm's `num_batches_tracked`) are packed by
  shape and compared with their snapshot by one `!=`; they have no size.
* Sparse gradients (`nn.Embedding(sparse=True)`), and gradients of another
  dtype than their tensor, are measured one tensor at a time: rare, and a
  sparse one's changed rows are counted.
"""

import functools
import itertools
import math
import operator

import torch

from tb_varupdate.format import metadata as md
from tb_varupdate.writers import common
from tb_varupdate.writers.common import CHECKSUM, EXACT  # noqa: F401  (the delta choices, named where measured)


# Columns of `Measurement.measure`'s result, the `counters.Measured` fields.
# The first four are filled for all float rows by one copy (`_measure_floats`).
DELTA_L2, VALUE_L2, CHANGED, FINITE, GRAD_L2, ROWS_CHANGED = range(6)
NUM_MEASURED = 6
# Tensors of at least this many elements (256 KB of float32) are measured as
# foreach lists; smaller ones laid end to end in one vector, where a copy costs less
# than a kernel per tensor.
LARGE_ELEMENTS = 1 << 16
_BITS_VIEW = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
# The second look's scale (see `_exact`): a power of two, so scaling is
# exact, and the smallest float32 (1.4e-45) times it squares to a normal float32.
_UP = 2.0 ** 100


@functools.lru_cache(maxsize=None)
def _dtensor_type():
    # Looked up once: is_dtensor runs for every gradient of every record.
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
        return torch.stack(torch._foreach_norm(tensors, 2, dtype=dtype))  # pylint: disable=protected-access

    @staticmethod
    def sub_(tensors, others):
        torch._foreach_sub_(tensors, others)  # pylint: disable=protected-access

    @staticmethod
    def mul_(tensors, scalar):
        torch._foreach_mul_(tensors, scalar)  # pylint: disable=protected-access

    @staticmethod
    def copy_(tensors, others):
        torch._foreach_copy_(tensors, others)  # pylint: disable=protected-access


class _Flat:
    """The block operations over one vector holding its tensors end to end: a kernel or two each.

    Args:
      lengths: the element count of each tensor, in order (none empty).
      device: where the vector lives.
    """

    def __init__(self, lengths, device):
        self.lengths = torch.tensor(lengths, dtype=torch.int64, device=device)

    def norms(self, flat, dtype):
        squares = flat.to(dtype).square()
        # unsafe: no check that the lengths add up (they do by construction), which would read them on the host.
        return torch.segment_reduce(squares, "sum", lengths=self.lengths, unsafe=True).sqrt()

    @staticmethod
    def sub_(flat, other):
        flat.sub_(other)

    @staticmethod
    def mul_(flat, scalar):
        flat.mul_(scalar)

    @staticmethod
    def copy_(flat, other):
        flat.copy_(other)


def flat_view(tensor):
    """A 1-D view of `tensor`'s elements in memory order, or None if they are not one dense block.

    Also for a non-contiguous layout such as channels_last: the order does not
    matter to a norm, as long as value and snapshot are read alike.
    """
    expected = 1
    for size, stride in sorted(((size, stride) for size, stride in zip(tensor.shape, tensor.stride()) if size != 1),
                               key=lambda pair: pair[1]):
        if stride != expected:
            return None
        expected *= size
    return tensor.as_strided((tensor.numel(),), (1,))


# How a block's L2 norms are taken (see the module docstring).
FLOAT64, PLAIN, SCALED = "float64", "plain", "scaled"


def _norms_of(ops, data, dtype, how):
    """(L2 [n], L2 of `data` times `_UP` [n] or None) of a block's tensors, in its dtype's opmath or float64.

    Args:
      ops: `_Lists` or a `_Flat`.
      data: the block's tensors (a list or a matrix).
      dtype: their dtype.
      how: FLOAT64 (accumulated in float64: no square underflows), PLAIN, or
        SCALED (also the second look, which scales `data` in place).
    """
    if how == FLOAT64:
        return ops.norms(data, torch.float64), None
    plain = ops.norms(data, _opmath(dtype))
    if how == PLAIN:
        return plain, None
    ops.mul_(data, _UP)
    return plain, ops.norms(data, _opmath(dtype))


def _exact(plains, scaleds):
    """(float64 L2, bool non-zero) of the blocks' `_norms_of` results, concatenated.

    The second look, where finite, has no square that underflows (the
    smallest float32, 1.4e-45, times 2**100 is 1.8e-15) and is the more
    precise; where the scaling overflowed (values above ~1e-11), the plain
    norm has none. Either being non-zero is an exact "non-zero".
    """
    plain = torch.cat(plains).to(torch.float64)
    if all(scaled is None for scaled in scaleds):
        return plain, plain != 0
    scaled = torch.cat([plain_part * _UP if scaled_part is None else scaled_part
                        for plain_part, scaled_part in zip(plains, scaleds)]).to(torch.float64) / _UP
    return torch.where(torch.isfinite(scaled), scaled, plain), (plain != 0) | (scaled != 0)


def _bits_sum(tensor):
    """0-d int64 on the tensor's device: a checksum of a float tensor's bits."""
    flat = tensor.detach().reshape(-1)
    return flat.view(_BITS_VIEW[flat.element_size()]).sum(dtype=torch.int64)


# Each Row state gets a new number, so a plan tells that rows were re-pointed by comparing
# one list of ints, not by walking the rows in Python.
_GENERATIONS = itertools.count()
_GENERATION = operator.attrgetter("generation")
# What decides how a gradient is measured. Not its device: torch refuses a `.grad` on
# another device than its tensor's, and autograd accumulates it there.
_KIND = operator.attrgetter("is_sparse", "dtype")


class Row:
    """One tracked tensor: the parameter or buffer, its snapshot (or checksum), its changed-rows mask."""

    __slots__ = ("tensor", "local", "snapshot", "is_float", "rows", "bits", "value_l2", "generation")

    def __init__(self, tensor, delta):
        self.tensor = tensor
        self.is_float = tensor.is_floating_point()
        self.rows = self.snapshot = self.bits = self.value_l2 = self.local = None
        self.reset(tensor, delta)

    def reset(self, tensor, delta):
        """Points the row at `tensor` (a layer was replaced): measured from its value now."""
        self.tensor = tensor
        self.generation = next(_GENERATIONS)
        # What this rank holds and measures: a DTensor's local shard (`_torch_dist.Sharded` adds them up).
        self.local = data = local(tensor)
        if delta == EXACT or not self.is_float:
            self.snapshot = data.clone()
        else:
            # As `measure` takes it, so an unchanged value compares equal.
            self.bits = _bits_sum(data)
            how = FLOAT64 if data.device.type == "cuda" else PLAIN
            self.value_l2 = _norms_of(_Lists, [data], data.dtype, how)[0][0].to(torch.float64)


def home_device(rows):
    """Where the results of `rows` (`Row`s) land: the first accelerator's device among them, else the CPU."""
    return next((row.local.device for row in rows if row.local.device.type != "cpu"), torch.device("cpu"))


LIST, FLAT, STACKED = "list", "flat", "stacked"


class _Block:
    """Tensors of one device and dtype measured together.

    Args:
      rows: every tracked `Row`.
      members: the indices of this block's rows.
      kind: LIST (a foreach list), FLAT (small floats end to end in one
        vector, each snapshot a view of one flat scratch) or STACKED (integer
        and bool tensors of one shape, the rows of one matrix).
      home: the device the results land on.
    """

    def __init__(self, rows, members, kind, home):
        self.members, self.kind = members, kind
        self.rows = [rows[i] for i in members]
        self.positions = torch.tensor(members, dtype=torch.int64, device=home)
        self.values = [row.local for row in self.rows]
        self.dtype, self.device = self.values[0].dtype, self.values[0].device
        self.ops = _Lists
        if kind == FLAT:
            self.views = [flat_view(value) for value in self.values]
            self.ops = _Flat([view.numel() for view in self.views], self.device)
            self.scratch = torch.cat([flat_view(row.snapshot) for row in self.rows])
            start = 0
            for row in self.rows:
                snapshot, start = row.snapshot, start + row.snapshot.numel()
                row.snapshot = self.scratch[start - snapshot.numel():start].as_strided(snapshot.shape,
                                                                                       snapshot.stride())
        elif kind == STACKED:
            self.scratch = torch.stack([row.snapshot for row in self.rows]).reshape(len(members), -1)
            for k, row in enumerate(self.rows):
                row.snapshot = self.scratch[k].view(self.values[0].shape)
        elif self.rows[0].snapshot is not None:
            self.scratch = [row.snapshot for row in self.rows]
        else:
            self.scratch = None  # checksum floats keep no copy

    def now(self):
        """The members' values now: the list itself, or a flat or stacked copy."""
        if self.kind == FLAT:
            return torch.cat(self.views)
        if self.kind == STACKED:
            return torch.stack(self.values).reshape(len(self.members), -1)
        return self.values

class _Gather:
    """Gradients of a flat block laid end to end with one `cat` per kind of shape, not an op per tensor.

    Tensors of one rank and one shape after their first axis concatenate along
    it as they are; each such group is then flattened once (a 0-d group is
    stacked). The norms come out in `order`, the group after group order.
    """

    def __init__(self, dense, values, device, row_of):
        groups = {}
        for k in dense:
            groups.setdefault((values[k].dim(), tuple(values[k].shape[1:])), []).append(k)
        # Per group: cat or stack, and what picks its gradients out of a record's list (one
        # per row; member k is row `row_of[k]`) at C speed.
        self.groups = [(torch.cat if rank > 0 else torch.stack, _picker([row_of[k] for k in members]))
                       for (rank, _), members in groups.items()]
        self.order = [k for members in groups.values() for k in members]
        self.ops = _Flat([values[k].numel() for k in self.order], device)

    def flat(self, grads):
        """One new vector of the gradients (`grads`: per row of the plan), in `order`."""
        parts = [join(pick(grads)).reshape(-1) for join, pick in self.groups]
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def _picker(indices):
    """A function of a list giving its items at `indices`, as a sequence (`operator.itemgetter` gives one item alone)."""
    if len(indices) == 1:
        index = indices[0]
        return lambda items: (items[index],)
    return operator.itemgetter(*indices)


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
        self.home = home_device(self.rows)
        by_key = {}
        for index, row in enumerate(self.rows):
            if row.local.numel() == 0:
                continue  # never changes (or another rank's shard): the defaults below hold
            tensor = row.local
            if not row.is_float:
                # Integer and bool tensors are stacked by shape whatever their size: few,
                # mostly 0-d counters, compared by one `!=` of plain kernels on any device.
                kind, shape = STACKED, tuple(tensor.shape)
            else:
                flat = (delta == EXACT and tensor.numel() < LARGE_ELEMENTS and flat_view(tensor) is not None
                        and row.snapshot.stride() == tensor.stride())
                kind, shape = (FLAT if flat else LIST), None
            by_key.setdefault((kind, tensor.device, tensor.dtype, shape), []).append(index)
        self.floats, self.others = [], []
        for (kind, _, _, _), members in by_key.items():
            block = _Block(self.rows, members, kind, self.home)
            (self.others if kind == STACKED else self.floats).append(block)
        # On CUDA a float64 accumulation costs no more memory traffic than float32;
        # elsewhere it is slower than the second look scaled in place (module docstring).
        self.how = FLOAT64 if self.home.type == "cuda" else SCALED
        self.float_positions = torch.tensor([i for block in self.floats for i in block.members],
                                            dtype=torch.int64, device=self.home)
        self._splits = {}  # the kinds of a record's gradients -> their `_Split`
        # A row re-pointed since (`Row.reset`) needs a new plan; packing above re-points only this plan's.
        self._generations = list(map(_GENERATION, self.rows))
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
        """Whether this plan still measures exactly `rows` (the same rows, none re-pointed since)."""
        return len(rows) == self.count and list(map(_GENERATION, rows)) == self._generations

    def split(self, grads):
        """The `_Split` of a record's gradients, cached per their kinds: which are present, sparse, of what dtype."""
        is_tensor = list(map(isinstance, grads, itertools.repeat(torch.Tensor)))
        key = (tuple(is_tensor), tuple(map(_KIND, itertools.compress(grads, is_tensor))))
        found = self._splits.get(key)
        if found is None:
            found = self._splits[key] = _Split(self, grads)
        return found


class _Split:
    """How one record's gradients are measured, per float block; the same for every record with the same kinds.

    Attributes:
      blocks: per float block, `(dense, alone, gather)`: the member positions
        whose gradient is measured with the block's kernels, and those measured
        one at a time (sparse, or of another dtype or device); a flat block's
        `_Gather`, or for a list block what picks its dense gradients out of a
        record's list and the snapshots they take turns in.
      present: int64 [n] on the plan's home: the rows of the dense gradients, in
        the order their norms come out (block after block).
    """

    def __init__(self, plan, grads):
        self.blocks, present = [], []
        for block in plan.floats:
            dense, alone = [], []
            for k, index in enumerate(block.members):
                grad = grads[index]
                if isinstance(grad, torch.Tensor):
                    same = not grad.is_sparse and grad.dtype == block.dtype and grad.device == block.device
                    (dense if same else alone).append(k)
            if not dense:
                gather = None
            elif block.kind == FLAT:
                gather = _Gather(dense, block.values, block.device, block.members)
                dense = gather.order
            else:
                scratch = [block.scratch[k] for k in dense] if block.scratch is not None else None
                gather = (_picker([block.members[k] for k in dense]), scratch)
            present += [block.members[k] for k in dense]
            self.blocks.append((dense, alone, gather))
        self.present = torch.tensor(present, dtype=torch.int64, device=plan.home)


class Measurement:
    """Measures a `Plan`'s rows; `measure` returns one [NUM_MEASURED, rows] float64 tensor on the device."""

    def __init__(self, delta=EXACT):
        self.delta = common.check_delta(delta)
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
          grads: per row, the gradient tensor (dense or sparse), None or
            `GRAD_NONE` (no gradient), or `GRAD_NOT_GIVEN` for tensors that have
            none (buffers).
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
            if plan.floats:
                self._measure_floats(plan, grads, out, track_rows)
        return out

    def _measure_floats(self, plan, grads, out, track_rows):
        """The float blocks: a few kernels each, then one assembly of all their results into `out`."""
        home = out.device
        values, deltas, scaled_deltas, checksum_changed = [], [], [], []
        grad_norms, scaled_grad_norms = [], []
        split = plan.split(grads)
        for block, (dense, alone, gather) in zip(plan.floats, split.blocks):
            ops, how = block.ops, plan.how
            now = block.now()
            value_l2, _ = _norms_of(ops, now, block.dtype, FLOAT64 if how == FLOAT64 else PLAIN)
            values.append(value_l2)
            if self.delta == EXACT:
                ops.sub_(block.scratch, now)
                for k in alone if track_rows else ():
                    if grads[block.members[k]].is_sparse and block.values[k].dim() >= 2:
                        # The snapshot holds the difference now, in the tensor's own shape.
                        _count_rows(block.rows[k], block.rows[k].snapshot, out, block.members[k])
                plain, scaled = _norms_of(ops, block.scratch, block.dtype, how)
                deltas.append(plain)
                scaled_deltas.append(scaled)
            else:
                checksum_changed.append(_checksum_changed(block, value_l2))
            if dense:
                plain, scaled = self._grad_norms(block, grads, gather, how)
                grad_norms.append(plain)
                scaled_grad_norms.append(scaled)
            if self.delta == EXACT:
                ops.copy_(block.scratch, now)
            for k in alone:
                grad = grads[block.members[k]]
                norm = torch.linalg.vector_norm(grad.coalesce().values() if grad.is_sparse else grad,
                                                dtype=torch.float64)
                out[GRAD_L2, block.members[k]] = torch.where(torch.isnan(norm), math.inf, norm).to(home)
        value_l2 = torch.cat(values).to(home, torch.float64)
        if self.delta == EXACT:
            delta_l2, changed = _exact(deltas, scaled_deltas)
        else:
            delta_l2, changed = torch.full_like(value_l2, math.nan), torch.cat(checksum_changed)
        measured = torch.stack([delta_l2.to(home), value_l2, changed.to(home, torch.float64),
                                torch.isfinite(value_l2).to(torch.float64)])
        out[DELTA_L2:FINITE + 1].index_copy_(1, plan.float_positions, measured)
        if grad_norms:
            grad_l2, _ = _exact(grad_norms, scaled_grad_norms)
            grad_l2 = torch.where(torch.isnan(grad_l2), math.inf, grad_l2)  # NaN gradients read as non-finite
            out[GRAD_L2].index_copy_(0, split.present, grad_l2.to(home))

    def _grad_norms(self, block, grads, gather, how):
        """(L2, second look) of the block's dense gradients, in `_Split.present`'s order.

        Exact wherever the snapshots or a copy give scratch for a second look.
        """
        if block.kind == FLAT:
            # A new vector: scratch for the second look. Any element order serves a norm.
            return _norms_of(gather.ops, gather.flat(grads), block.dtype, how)
        pick, scratch = gather
        dense_grads = pick(grads)
        if how == FLOAT64 or self.delta != EXACT:  # (checksum keeps no scratch)
            return _norms_of(_Lists, dense_grads, block.dtype, FLOAT64)
        # The snapshots are scratch until copied back: the gradients' turn.
        torch._foreach_copy_(scratch, dense_grads)  # pylint: disable=protected-access
        return _norms_of(_Lists, scratch, block.dtype, how)


def _measure_others(block, out):
    """Integer and bool tensors (one pack): changed when any element differs from the snapshot."""
    now = block.now()
    changed = (now != block.scratch).any(dim=1)
    out[CHANGED].index_copy_(0, block.positions, changed.to(out.device, torch.float64))
    block.scratch.copy_(now)


def _checksum_changed(block, value_l2):
    """`delta="checksum"`: bool [n], where the bits sum or the L2 differs from the previous record's."""
    changed = []
    for row, value, norm in zip(block.rows, block.values, value_l2.to(torch.float64).unbind()):
        bits = _bits_sum(value)
        changed.append((bits != row.bits) | (norm != row.value_l2))
        row.bits, row.value_l2 = bits, norm
    return torch.stack(changed).to(value_l2.device)


def _count_rows(row, difference, out, index):
    """Marks the rows whose difference is non-zero; writes the count ever marked."""
    now = difference.reshape(difference.shape[0], -1).ne(0).any(dim=1)
    row.rows = now if row.rows is None else row.rows | now
    out[ROWS_CHANGED, index] = row.rows.sum().to(out.device, torch.float64)
