"""The PyTorch writer's measurements: how much each tensor changed since the last record.

This is where logging costs, so it uses what the optimizers themselves use:
`torch._foreach_*` multi-tensor ops over all tensors of one device and dtype
at once, in place, against one snapshot copy per tensor:

* `delta="exact"`: small tensors of one shape are packed, their snapshots the
  rows of one matrix: the values are stacked, and the norms of the values and
  of their difference from the snapshots are row reductions (a few kernels for
  any number of tensors: 300 small tensors cost 25 ms a record one kernel per
  tensor, 10 ms packed). Large tensors are measured one at a time while in
  cache: `torch.dist(value, snapshot)` and the value's norm. Gradients'
  norms likewise (small ones stacked by shape, the rest by `torch._foreach_norm`).
  Then the snapshots are copied. All norms go to the host in one `.cpu()`
  per device.
* Float32 norms can underflow (a change below ~1e-19 sums to 0; deep tanh
  networks have gradients that small) or overflow (values above ~1e19 sum to
  Inf). Only those results are measured again, in float64, on the host's
  word: the rows of a stacked matrix a matrix at a time, the others by
  multi-tensor kernels (a 300-tensor tanh stack, half of whose gradients
  underflow at every record: 2.6 ms of second looks a record one norm per
  tensor, under 1 ms by rows). An unchanged (frozen) tensor
  has a zero difference and pays that one extra pass.
* `delta="checksum"` keeps no copy: a tensor changed when the sum of its bits
  or its L2 norm changed; the size of the change is not measured (NaN).
* Integer and bool tensors (counters such as BatchNorm's
  `num_batches_tracked`) are compared element-wise with their snapshot; they
  have no size.

Returns NumPy arrays: `counters.fold` then runs over them as torch CPU tensors.
"""

import math

import numpy as np
import torch

EXACT, CHECKSUM = "exact", "checksum"
DELTA_CHOICES = (EXACT, CHECKSUM)

_NAN = float("nan")
# Tensors of at least this many elements (256 KB of float32) are measured one
# at a time (distance to the snapshot, value norm) while in cache; smaller ones
# by multi-tensor kernels, whose launch cost matters more than the passes.
# Measured on the 2.6M-parameter MLP: 1.17x step time against 1.22x for
# foreach over every tensor (benchmarks/torch_training.py).
LARGE_ELEMENTS = 1 << 16
_BITS_VIEW = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def _norms(tensors, ord=2):  # pylint: disable=redefined-builtin
    """[n] float norms of same-device, same-dtype `tensors` (one multi-tensor kernel)."""
    if not tensors:
        return torch.zeros([0])
    return torch.stack(torch._foreach_norm(tensors, ord)).to(torch.float64)  # pylint: disable=protected-access


def _exact_norms(tensors):
    """float64 NumPy [n]: L2 norms accumulated in float64, so float16/32 squares neither underflow nor overflow."""
    result = np.zeros(len(tensors))
    groups = {}
    for position, tensor in enumerate(tensors):
        groups.setdefault((tensor.device, tensor.dtype), []).append(position)
    for positions in groups.values():
        norms = torch._foreach_norm(  # pylint: disable=protected-access
            [tensors[p] for p in positions], 2, dtype=torch.float64)
        result[positions] = torch.stack(norms).cpu().numpy()
    return result


def _exact_norms_where(flagged, stacks, tensor_of, out):
    """Writes into `out` the `_exact_norms` of every index flagged (a bool NumPy mask).

    `stacks` are (matrix, indices) whose rows are already those tensors,
    flattened (the packs' values and differences, same-shape gradients): their
    flagged rows are reduced a matrix at a time, a few kernels however many
    rows, where a norm per tensor would pay a dispatch each. The other
    flagged tensors (`tensor_of(index)`) take one multi-tensor kernel per
    device and dtype.
    """
    if not flagged.any():
        return
    rest = flagged.copy()
    for matrix, indices in stacks:
        rest[indices] = False
        picked = np.flatnonzero(flagged[indices])
        if len(picked):
            rows = matrix[torch.from_numpy(picked)].to(torch.float64)
            out[indices[picked]] = torch.linalg.vector_norm(rows, dim=1).cpu().numpy()
    loose = np.flatnonzero(rest)
    if len(loose):
        out[loose] = _exact_norms([tensor_of(int(i)) for i in loose])


def _bits_sum(tensor):
    """A checksum of a float tensor's bits: the sum of its bit patterns as int64."""
    flat = tensor.detach().reshape(-1)
    return int(flat.view(_BITS_VIEW[flat.element_size()]).sum(dtype=torch.int64))


class Row:
    """One tracked tensor: the parameter or buffer, its snapshot and its rows mask."""

    __slots__ = ("tensor", "snapshot", "is_float", "rows", "bits", "value_l2")

    def __init__(self, tensor, delta):
        self.is_float = tensor.is_floating_point()
        self.rows = None  # bool [rows] of rows ever changed, once a sparse gradient arrives
        self.bits = self.value_l2 = None
        self.snapshot = None
        self.tensor = tensor
        self.reset(tensor, delta)

    def reset(self, tensor, delta):
        """Points the row at `tensor` (a layer was replaced): measured from its value now."""
        self.tensor = tensor
        data = tensor.detach()
        if delta == EXACT or not self.is_float:
            self.snapshot = data.clone()
        else:
            # The same float32 norm as `measure`'s, so an unchanged value compares equal.
            self.bits, self.value_l2 = _bits_sum(data), float(_norms([data])[0])


class _Pack:
    """Snapshots of small same-shape tensors as the rows of one matrix, measured by row reductions."""

    def __init__(self, rows, members):
        self.matrix = torch.stack([rows[i].snapshot for i in members]).reshape(len(members), -1)
        self.views = []
        for k, i in enumerate(members):
            rows[i].snapshot = self.matrix[k].view(rows[i].tensor.shape)
            self.views.append(rows[i].snapshot)


class Measurement:
    """Measures a list of `Row`s; `measure` returns `counters.Measured` fields as NumPy arrays."""

    def __init__(self, delta=EXACT):
        if delta not in DELTA_CHOICES:
            raise ValueError("delta must be one of %s. Received: delta=%r" % (DELTA_CHOICES, delta))
        self.delta = delta
        self._packs = self._used = {}  # tuple of row indices -> _Pack

    def measure(self, rows, grads, track_rows=True):
        """One record's measurements.

        Args:
          rows: the tracked `Row`s, in record order.
          grads: per row, the gradient tensor (dense or sparse), None (no
            gradient), or a float (`metadata.GRAD_NOT_GIVEN`) for tensors that have none
            (buffers).
          track_rows: count the rows changed of tensors fed sparse gradients.

        Returns:
          dict of `counters.Measured` fields, each a NumPy array [len(rows)].
        """
        count = len(rows)
        delta_l2 = np.full(count, _NAN)
        value_l2 = np.full(count, _NAN)
        grad_l2 = np.zeros(count)
        changed = np.zeros(count, bool)
        finite = np.ones(count, bool)
        rows_changed = np.full(count, -1, np.int64)
        with torch.no_grad():
            groups = {}
            for index, row in enumerate(rows):
                if row.is_float:
                    groups.setdefault((row.tensor.device, row.tensor.dtype), []).append(index)
                else:
                    now = row.tensor.detach()
                    changed[index] = not torch.equal(now, row.snapshot)
                    if changed[index]:
                        row.snapshot.copy_(now)
            grad_values = {}
            for index, grad in enumerate(grads):
                if isinstance(grad, float):
                    grad_l2[index] = grad
                else:
                    grad_values[index] = grad.coalesce().values() if grad.is_sparse else grad
            pending = []  # (kind, indices, device tensor of norms), fetched in one go
            # Small dense gradients of one shape are stacked and reduced by rows
            # (one kernel, not one per tensor); the rest by foreach kernels,
            # per device and dtype, as the optimizers batch them.
            grad_groups, grad_stacks = {}, {}
            for index, values in grad_values.items():
                if values.is_sparse or grads[index].is_sparse or values.numel() >= LARGE_ELEMENTS:
                    grad_groups.setdefault((values.device, values.dtype), []).append(index)
                else:
                    grad_stacks.setdefault((values.device, values.dtype, values.shape), []).append(index)
            for indices in grad_groups.values():
                pending.append(("grad", indices, _norms([grad_values[i] for i in indices])))
            stacked_grads = []  # (matrix, indices) of the gradients stacked here
            for indices in grad_stacks.values():
                stacked = torch.stack([grad_values[i] for i in indices]).reshape(len(indices), -1)
                pending.append(("grad", indices, torch.linalg.vector_norm(stacked, dim=1)))
                stacked_grads.append((stacked, np.array(indices)))
            self._used = {}  # the packs of this record; the others are dropped below
            value_stacks = []  # (matrix, indices) of the packed values
            difference_stacks = []  # (matrix, indices) of their differences from the snapshots
            differences = {}  # index -> its difference from the snapshot, for the few that need it alone
            copies = []  # (snapshots, values) to copy once every norm is read
            for indices in groups.values():
                small = [i for i in indices if rows[i].tensor.numel() < LARGE_ELEMENTS]
                large = [i for i in indices if rows[i].tensor.numel() >= LARGE_ELEMENTS]
                if small and self.delta == EXACT:
                    by_shape = {}
                    for i in small:
                        by_shape.setdefault(rows[i].tensor.shape, []).append(i)
                    for members in by_shape.values():
                        pack = self._pack(rows, members)
                        now = torch.stack([rows[i].tensor for i in members]).reshape(len(members), -1)
                        difference = now - pack.matrix
                        pending.append(("value", members, torch.linalg.vector_norm(now, dim=1)))
                        pending.append(("delta", members, torch.linalg.vector_norm(difference, dim=1)))
                        member_indices = np.array(members)
                        value_stacks.append((now, member_indices))
                        difference_stacks.append((difference, member_indices))
                        copies.append(([pack.matrix], [now]))
                elif small:
                    pending.append(("value", small, _norms([rows[i].tensor for i in small])))
                for i in large:
                    # One tensor at a time, while it is in cache: the distance
                    # to its snapshot reads both without writing a difference.
                    value = rows[i].tensor
                    pending.append(("value", [i], torch.linalg.vector_norm(value)[None]))
                    if self.delta == EXACT:
                        pending.append(("delta", [i], torch.dist(value, rows[i].snapshot)[None]))
                if large and self.delta == EXACT:
                    copies.append(([rows[i].snapshot for i in large], [rows[i].tensor for i in large]))

            def difference(i):
                if i not in differences:
                    differences[i] = rows[i].tensor - rows[i].snapshot
                return differences[i]

            # The one transfer: every norm of every group (the device waits here).
            by_device = {}
            for kind, indices, norms in pending:
                by_device.setdefault(norms.device, []).append((kind, indices, norms))
            for parts in by_device.values():
                fetched = torch.cat([norms.to(torch.float64) for _, _, norms in parts]).cpu().numpy()
                position = 0
                for kind, indices, _ in parts:
                    target = {"grad": grad_l2, "value": value_l2, "delta": delta_l2}[kind]
                    target[indices] = fetched[position:position + len(indices)]
                    position += len(indices)
            # Rare exact second looks (see the module docstring), batched.
            has_grad = np.zeros(count, bool)
            has_grad[list(grad_values)] = True
            flagged = has_grad & ((grad_l2 == 0.0) | ~np.isfinite(grad_l2))
            _exact_norms_where(flagged, stacked_grads, grad_values.__getitem__, grad_l2)
            grad_l2[flagged & ~np.isfinite(grad_l2)] = math.inf  # NaN gradients read as non-finite
            is_float = np.zeros(count, bool)
            is_float[[i for indices in groups.values() for i in indices]] = True
            _exact_norms_where(is_float & ~np.isfinite(value_l2), value_stacks, lambda i: rows[i].tensor, value_l2)
            finite[is_float] = np.isfinite(value_l2[is_float])
            if self.delta == EXACT:
                # A zero may be differences below ~1e-19, whose squares underflow
                # in float32; Inf beside finite values is an overflow.
                flagged = is_float & ((delta_l2 == 0.0) | (~np.isfinite(delta_l2) & finite))
                _exact_norms_where(flagged, difference_stacks, difference, delta_l2)
                changed[is_float] = delta_l2[is_float] != 0.0
                for i in grad_values if track_rows else ():
                    if grads[i].is_sparse and rows[i].is_float and rows[i].tensor.dim() >= 2:
                        rows_changed[i] = self._count_rows(rows[i], difference(i))
            else:
                for i in np.flatnonzero(is_float):
                    row = rows[i]
                    bits = _bits_sum(row.tensor)
                    changed[i] = bits != row.bits or value_l2[i] != row.value_l2
                    row.bits, row.value_l2 = bits, value_l2[i]
            for snapshots, values in copies:
                torch._foreach_copy_(snapshots, values)  # pylint: disable=protected-access
            self._packs = self._used
        return {
            "delta_l2": delta_l2, "value_l2": value_l2, "grad_l2": grad_l2,
            "changed": changed, "finite": finite, "rows_changed": rows_changed,
        }

    def _pack(self, rows, members):
        """The packed snapshot of `members` (same device, dtype and shape), built or rebuilt as needed.

        Each member's `Row.snapshot` becomes a view of one row of the pack's
        matrix; a row re-pointed at a new tensor (`Row.reset`) holds its own
        snapshot again, and the pack is rebuilt from the rows' snapshots.
        """
        key = tuple(members)
        pack = self._packs.get(key)
        if pack is None or any(rows[i].snapshot is not view for i, view in zip(members, pack.views)):
            pack = _Pack(rows, members)
        self._used[key] = pack
        return pack

    @staticmethod
    def _count_rows(row, difference):
        """Marks the rows whose difference is non-zero; the count ever marked."""
        now = difference.reshape(difference.shape[0], -1).ne(0).any(dim=1)
        row.rows = now if row.rows is None else row.rows | now
        return int(row.rows.sum())
