"""The PyTorch writer's measurements: how much each tensor changed since the last record, on its device.

This runs at every logged step, so it is built like the optimizers' own
multi-tensor path (`torch/optim/adam.py`): a `Plan`, made when tensors join or
are re-pointed, puts the tracked tensors in one group per (device, dtype),
and a record is a fixed number of `torch._foreach_*` kernels per group,
whatever the number of tensors. Nothing is read back to the host here: the
results are one device tensor, which `_torch_pending` reads every few records.

* `delta="exact"` keeps one snapshot per float tensor, which doubles as the
  group's scratch: `snapshot -= value`, `abs_`, the per-tensor maximum (an
  exact "changed": any element differs), then the L2 as a *scaled* norm,
  `m * ||d / m||` with `m` that maximum rounded to a power of two, so no
  square underflows (changes below ~1e-19, whose float32 squares sum to 0)
  or overflows. The gradients are copied into the same scratch and measured
  the same way; then the snapshot is copied back from the value. In place,
  these passes cost about what one allocating op does on the CPU.
* `delta="checksum"` keeps no copy: a tensor changed when the sum of its
  bits or its L2 norm changed (one small kernel pair per tensor); the size of
  the change is not measured (NaN), and gradients are measured in float64.
* Integer and bool tensors (BatchNorm's `num_batches_tracked`) are compared
  with their snapshot by the same multi-tensor kernels; they have no size.
* Sparse gradients (`nn.Embedding(sparse=True)`) are measured one tensor at a
  time, with the rows they changed: rare, and their rows must be counted.
"""

import math

import torch

from tb_varupdate import metadata as md

EXACT, CHECKSUM = "exact", "checksum"
DELTA_CHOICES = (EXACT, CHECKSUM)

# Columns of `Measurement.measure`'s result, the `counters.Measured` fields.
DELTA_L2, VALUE_L2, GRAD_L2, CHANGED, FINITE, ROWS_CHANGED = range(6)
NUM_MEASURED = 6
_BITS_VIEW = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
# The largest power of two a float32 scale holds: a change of 1e-45 (the
# smallest float32) scaled by it is ~1e-7, whose square is far from underflow.
_MAX_SCALE_EXPONENT = 126


def _opmath(dtype):
    """The dtype norms of `dtype` tensors are accumulated and returned in (float32 for 16-bit floats)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _stack(values, dtype):
    """[n] `dtype` of a list of 0-d tensors (one kernel)."""
    return torch.stack(values).to(dtype)


def _scaled_norms(scratch, dtype):
    """(L2, max |x|) of each tensor of `scratch`, exact for any magnitude; `scratch` is overwritten.

    The L2 is `s * ||x / s||` with `s` a power of two near max |x|: dividing
    by a power of two is exact, and after it every square is at most 1 and
    the largest is at least 1/4, so the sum neither underflows nor overflows.
    """
    opmath = _opmath(dtype)
    torch._foreach_abs_(scratch)  # pylint: disable=protected-access
    largest = _stack(torch._foreach_max(scratch), opmath)  # pylint: disable=protected-access
    usable = torch.isfinite(largest) & (largest > 0)
    exponent = torch.where(usable, torch.floor(torch.log2(torch.where(usable, largest, 1.0))), 0.0)
    scale = torch.exp2(-exponent.clamp(-_MAX_SCALE_EXPONENT, _MAX_SCALE_EXPONENT))
    torch._foreach_mul_(scratch, scale.unbind())  # pylint: disable=protected-access
    norms = _stack(torch._foreach_norm(scratch, 2, dtype=opmath), torch.float64)  # pylint: disable=protected-access
    return norms / scale.to(torch.float64), largest.to(torch.float64)


def _bits_sum(tensor):
    """0-d int64 on the tensor's device: a checksum of a float tensor's bits."""
    flat = tensor.detach().reshape(-1)
    return flat.view(_BITS_VIEW[flat.element_size()]).sum(dtype=torch.int64)


class Row:
    """One tracked tensor: the parameter or buffer and, while measured, its snapshot.

    The snapshot is the tensor's value at the previous record (a clone kept
    by the row; for checksum floats, the bits sum and L2 instead). `rows` is
    the bool mask of the rows a sparse gradient ever changed.
    """

    __slots__ = ("tensor", "snapshot", "is_float", "rows", "bits", "value_l2")

    def __init__(self, tensor, delta):
        self.tensor = tensor
        self.is_float = tensor.is_floating_point()
        self.rows = self.snapshot = self.bits = self.value_l2 = None
        self.reset(tensor, delta)

    def reset(self, tensor, delta):
        """Points the row at `tensor` (a layer was replaced): measured from its value now."""
        self.tensor = tensor
        data = tensor.detach()
        if delta == EXACT or not self.is_float:
            self.snapshot = data.clone()
        else:
            self.bits = _bits_sum(data)
            self.value_l2 = torch.linalg.vector_norm(data, dtype=_opmath(data.dtype)).to(torch.float64)


class _Group:
    """The rows of one (device, dtype): their tensors, snapshots and indices, as lists for foreach ops."""

    def __init__(self, rows, indices, home):
        self.indices = indices
        self.positions = torch.tensor(indices, dtype=torch.int64, device=home)
        self.values = [rows[i].tensor.detach() for i in indices]
        self.dtype = self.values[0].dtype
        self.snapshots = [rows[i].snapshot for i in indices]
        self.rows = [rows[i] for i in indices]
        if self.dtype == torch.bool:
            # foreach arithmetic has no bool kernels: the same bytes as int8.
            self.values = [v.view(torch.int8) for v in self.values]
            self.snapshots = [s.view(torch.int8) for s in self.snapshots]
        self._present = {}  # tuple of member positions with a gradient -> their row indices on `home`

    def present(self, members, home):
        """The row indices (on `home`) of the group members `members` (a tuple of positions), cached."""
        found = self._present.get(members)
        if found is None:
            found = self._present[members] = torch.tensor(
                [self.indices[k] for k in members], dtype=torch.int64, device=home)
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
        self.delta = delta
        self.count = len(self.rows)
        # What the groups' lists hold: a row re-pointed since needs a new plan.
        self._held = [(row.tensor, row.snapshot) for row in self.rows]
        # Results land on one device: the first accelerator's, else the CPU.
        devices = [row.tensor.device for row in self.rows]
        self.home = next((d for d in devices if d.type != "cpu"), torch.device("cpu"))
        by_key = {}
        for index, row in enumerate(self.rows):
            if row.tensor.numel() == 0:
                continue  # never changes; the defaults below (zero change) hold
            kind = "float" if row.is_float else "other"
            by_key.setdefault((kind, row.tensor.device, row.tensor.dtype), []).append(index)
        self.floats = [_Group(self.rows, ix, self.home) for (kind, _, _), ix in by_key.items() if kind == "float"]
        self.others = [_Group(self.rows, ix, self.home) for (kind, _, _), ix in by_key.items() if kind == "other"]
        defaults = torch.zeros(NUM_MEASURED, self.count, dtype=torch.float64)
        defaults[DELTA_L2] = 0.0 if delta == EXACT else math.nan
        defaults[VALUE_L2] = math.nan
        defaults[VALUE_L2, [i for i, row in enumerate(self.rows) if row.tensor.numel() == 0]] = 0.0
        defaults[DELTA_L2, [i for i, row in enumerate(self.rows) if not row.is_float]] = math.nan
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
        home = plan.home
        out = plan.defaults.clone()
        with torch.no_grad():
            for group in plan.others:
                self._measure_others(group, out, home)
            for group in plan.floats:
                self._measure_floats(group, grads, out, home, track_rows)
        return out

    @staticmethod
    def _measure_others(group, out, home):
        """Integer and bool tensors: changed when any element differs from the snapshot."""
        torch._foreach_sub_(group.snapshots, group.values)  # pylint: disable=protected-access
        torch._foreach_abs_(group.snapshots)  # pylint: disable=protected-access
        largest = torch.stack(torch._foreach_max(group.snapshots))  # pylint: disable=protected-access
        out[CHANGED].index_copy_(0, group.positions, (largest != 0).to(home, torch.float64))
        torch._foreach_copy_(group.snapshots, group.values)  # pylint: disable=protected-access

    def _measure_floats(self, group, grads, out, home, track_rows):
        values, opmath = group.values, _opmath(group.dtype)
        value_l2 = _stack(torch._foreach_norm(values, 2, dtype=opmath), torch.float64)  # pylint: disable=protected-access
        out[VALUE_L2].index_copy_(0, group.positions, value_l2.to(home))
        out[FINITE].index_copy_(0, group.positions, torch.isfinite(value_l2).to(home, torch.float64))
        dense, alone = [], []  # member positions: gradients measured together, and one at a time
        for k, index in enumerate(group.indices):
            grad = grads[index]
            if isinstance(grad, torch.Tensor):
                # Sparse gradients, and gradients of another dtype than their
                # tensor (the scratch below has the tensor's), go alone.
                same = not grad.is_sparse and grad.dtype == group.dtype and grad.device == values[k].device
                (dense if same else alone).append(k)
        if self.delta == EXACT:
            scratch = group.snapshots
            torch._foreach_sub_(scratch, values)  # pylint: disable=protected-access
            for k in alone if track_rows else ():
                grad = grads[group.indices[k]]
                if grad.is_sparse and values[k].dim() >= 2:
                    self._count_rows(group.rows[k], scratch[k], out, group.indices[k])
            delta_l2, largest = _scaled_norms(scratch, group.dtype)
            out[DELTA_L2].index_copy_(0, group.positions, delta_l2.to(home))
            out[CHANGED].index_copy_(0, group.positions, (largest != 0).to(home, torch.float64))
            if dense:
                # The snapshots are scratch until copied back below: the gradients' turn.
                grad_scratch = [scratch[k] for k in dense]
                torch._foreach_copy_(grad_scratch, [grads[group.indices[k]] for k in dense])  # pylint: disable=protected-access
                grad_l2, _ = _scaled_norms(grad_scratch, group.dtype)
                grad_l2 = torch.where(torch.isnan(grad_l2), math.inf, grad_l2)  # NaN gradients read as non-finite
                out[GRAD_L2].index_copy_(0, group.present(tuple(dense), home), grad_l2.to(home))
            torch._foreach_copy_(scratch, values)  # pylint: disable=protected-access
        else:
            changed = []
            for row, value, norm in zip(group.rows, values, value_l2.unbind()):
                bits = _bits_sum(value)
                changed.append((bits != row.bits) | (norm != row.value_l2))
                row.bits, row.value_l2 = bits, norm
            out[CHANGED].index_copy_(0, group.positions, torch.stack(changed).to(home, torch.float64))
            if dense:
                dense_grads = [grads[group.indices[k]] for k in dense]
                grad_l2 = _stack(torch._foreach_norm(dense_grads, 2, dtype=torch.float64), torch.float64)  # pylint: disable=protected-access
                grad_l2 = torch.where(torch.isnan(grad_l2), math.inf, grad_l2)
                out[GRAD_L2].index_copy_(0, group.present(tuple(dense), home), grad_l2.to(home))
        for k in alone:
            grad = grads[group.indices[k]]
            norm = torch.linalg.vector_norm(grad.coalesce().values() if grad.is_sparse else grad, dtype=torch.float64)
            out[GRAD_L2, group.indices[k]] = torch.where(torch.isnan(norm), math.inf, norm).to(home)

    @staticmethod
    def _count_rows(row, difference, out, index):
        """Marks the rows whose difference is non-zero; writes the count ever marked."""
        now = difference.reshape(difference.shape[0], -1).ne(0).any(dim=1)
        row.rows = now if row.rows is None else row.rows | now
        out[ROWS_CHANGED, index] = row.rows.sum().to(out.device, torch.float64)

