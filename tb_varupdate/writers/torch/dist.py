"""The PyTorch tracker under `torch.distributed`: sharded parameters reduced, ranks agreed, replicas compared.

* `local`: a `DTensor` (FSDP2's `fully_shard`, tensor parallel) is measured
  on its local shard; `Sharded` adds the shards' partial results up across
  the parameter's mesh, in one all-reduce per record: squares of the
  change's, the value's and the gradient's L2, changed and non-finite
  counts, and the gradient's presence on each rank. A replicated mesh
  dimension counts once (only coordinate 0 of it contributes).
* `Handshake`: a collective needs every rank's tracker. Before the first
  one, the ranks agree through the process group's key-value store, with a
  bounded wait: a tracker made on some ranks only is found out in
  `HANDSHAKE_S` seconds and stops, instead of hanging training in a
  collective the other ranks never enter.
* `Replicas`: every `REPLICA_CHECK_EVERY` records the ranks compare a
  fingerprint of each replicated parameter (its value's float64 L2 and sum),
  by one all-reduce of maxima and negated minima.

Nothing here reads a result back to the host. Imports torch, never TensorFlow.
"""

import datetime

import torch
import torch.distributed as dist

from tb_varupdate.format import metadata as md
from tb_varupdate.writers.torch.measure import (CHANGED, DELTA_L2, FINITE, GRAD_L2, NUM_MEASURED, ROWS_CHANGED, VALUE_L2,
                                         is_dtensor, local)

# Seconds a rank waits for the other ranks' trackers before it gives up logging.
HANDSHAKE_S = 60.0
# Records between two replica checks.
REPLICA_CHECK_EVERY = 10
# The rows of `Sharded`'s all-reduced tensor.
_DELTA2, _VALUE2, _GRAD2, _CHANGED, _NON_FINITE, _PRESENT = range(6)


def world():
    """(rank, world size) under torch.distributed, (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Unsupported(ValueError):
    """A DTensor layout that cannot be reduced exactly here (said once, in a warning)."""


def _fsdp1_type():
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    return FullyShardedDataParallel


def flat_shards(module):
    """FSDP1 (`FullyShardedDataParallel`) in `module`: what its sharded flat parameters hold.

    Under FSDP1 a rank holds a slice of each flat parameter: with
    `use_orig_params=True` every original parameter is a (flattened, maybe
    empty) view of its part of this rank's slice; without it the tracker
    sees the flat parameters themselves. Each element lies in one rank's slice
    of the FSDP instance's process group, so the slices' squares add up to
    the whole parameter's. NO_SHARD keeps whole replicas (compared as DDP's).

    Returns:
      (groups, shapes, flat): {id(tensor): process group, None for the default
      one}, {id(tensor): the whole parameter's shape} and whether flat
      parameters (`use_orig_params=False`) are among them.
    """
    fsdp = _fsdp1_type()
    groups, shapes, flat = {}, {}, False
    if fsdp is None or not dist.is_available() or not dist.is_initialized():
        return groups, shapes, flat
    _, world_size = world()
    for wrapper in module.modules():
        if not isinstance(wrapper, fsdp):
            continue
        handle = getattr(wrapper, "_handle", None)
        flat_param = getattr(handle, "flat_param", None)
        if flat_param is None or not getattr(handle, "uses_sharded_strategy", True):
            continue
        group = wrapper.process_group
        group = None if dist.get_world_size(group) == world_size else group
        params = getattr(flat_param, "_params", None)
        if params:  # use_orig_params=True
            for param, shape in zip(params, flat_param._shapes):  # pylint: disable=protected-access
                groups[id(param)], shapes[id(param)] = group, list(shape)
        else:
            flat = True
            groups[id(flat_param)] = group
            shapes[id(flat_param)] = list(flat_param._unpadded_unsharded_size)  # pylint: disable=protected-access
    return groups, shapes, flat


def _layout(tensor, world_size):
    """(group, contributes, replicated) of a DTensor: where to reduce it, whether this rank adds its part.

    `group` is None for the default group (the mesh spans every rank).
    """
    mesh = tensor.device_mesh
    placements = tuple(tensor.placements)
    if any(p.is_partial() for p in placements):
        raise Unsupported("a parameter with a Partial placement")
    coordinate = mesh.get_coordinate()
    contributes = coordinate is not None and all(
        coordinate[d] == 0 for d, p in enumerate(placements) if p.is_replicate())
    if mesh.size() == world_size:
        group = None
    elif mesh.ndim == 1:
        group = mesh.get_group()
    else:
        raise Unsupported("a parameter on a %d-dimensional mesh of %d of the %d ranks"
                          % (mesh.ndim, mesh.size(), world_size))
    replicated = all(p.is_replicate() for p in placements)
    return group, contributes, replicated


class Sharded:
    """The DTensor rows of a plan and how their partial results are reduced.

    Args:
      rows: the tracked `Row`s, in record order.
      home: the device the measurements land on.
      flat: {id(tensor): process group} of FSDP1's sharded tensors (`flat_shards`).
    """

    def __init__(self, rows, home, flat=None):
        _, world_size = world()
        flat = flat or {}
        by_group = {}
        for index, row in enumerate(rows):
            if id(row.tensor) in flat:
                group, contributes = flat[id(row.tensor)], True
            elif is_dtensor(row.tensor):
                group, contributes, _ = _layout(row.tensor, world_size)
            else:
                continue
            by_group.setdefault(group, ([], []))
            by_group[group][0].append(index)
            by_group[group][1].append(contributes)
        self.groups = [
            (group, torch.tensor(positions, dtype=torch.int64, device=home),
             torch.tensor(weights, dtype=torch.bool, device=home))
            for group, (positions, weights) in by_group.items()
        ]
        self.count = sum(len(positions) for positions, _ in by_group.values())

    def __bool__(self):
        return self.count > 0

    def reduce(self, measured, present):
        """Replaces the DTensor rows' local figures in `measured` by the whole parameter's, in place.

        Args:
          measured: float64 [NUM_MEASURED, rows] on the device (`Measurement.measure`).
          present: bool [rows] on the device: a gradient tensor on this rank.
        """
        for group, positions, weights in self.groups:
            mine = measured.index_select(1, positions)
            grad = mine[GRAD_L2]
            zero = torch.zeros((), dtype=mine.dtype, device=mine.device)
            parts = torch.stack([
                torch.where(weights, mine[DELTA_L2] * mine[DELTA_L2], zero),
                torch.where(weights, mine[VALUE_L2] * mine[VALUE_L2], zero),
                torch.where(weights & (grad >= 0), grad * grad, zero),
                mine[CHANGED],
                1.0 - mine[FINITE],
                present.index_select(0, positions).to(mine.dtype),
            ])
            dist.all_reduce(parts, op=dist.ReduceOp.SUM, group=group)
            not_given = torch.where(grad == md.GRAD_NOT_GIVEN, md.GRAD_NOT_GIVEN, md.GRAD_NONE)
            whole = {
                DELTA_L2: parts[_DELTA2].sqrt(), VALUE_L2: parts[_VALUE2].sqrt(),
                GRAD_L2: torch.where(parts[_PRESENT] > 0, parts[_GRAD2].sqrt(), not_given),
                CHANGED: (parts[_CHANGED] > 0).to(mine.dtype), FINITE: (parts[_NON_FINITE] == 0).to(mine.dtype),
                ROWS_CHANGED: mine[ROWS_CHANGED],
            }
            whole = torch.stack([whole[column] for column in range(NUM_MEASURED)])
            measured.index_copy_(1, positions, whole)


class Replicas:
    """The parameters every rank holds whole (DDP's, replicated DTensors), compared across ranks.

    Args:
      rows: the tracked `Row`s, in record order; None for rows not compared (buffers).
      home: the device the results land on.
      sharded: ids of FSDP1's sharded tensors (not replicas).
    """

    def __init__(self, rows, home, sharded=()):
        _, world_size = world()
        self.members = []
        for index, row in enumerate(rows):
            if row is None or not row.is_float or id(row.tensor) in sharded:
                continue
            if is_dtensor(row.tensor):
                try:
                    group, _, replicated = _layout(row.tensor, world_size)
                except Unsupported:
                    continue
                if group is not None or not replicated:
                    continue
            self.members.append(index)
        self.home = home
        self.count = len(rows)
        self.positions = torch.tensor(self.members, dtype=torch.int64, device=home)

    def check(self, rows):
        """One all-reduce: (checked bool [rows], spread float64 [rows]) on the device.

        `spread` is the largest difference between the ranks' fingerprints
        of a value (its float64 L2 norm and its sum); 0 where they agree.
        """
        checked = torch.zeros(self.count, dtype=torch.bool, device=self.home)
        spread = torch.zeros(self.count, dtype=torch.float64, device=self.home)
        if not self.members:
            return checked, spread
        values = [local(rows[i].tensor) for i in self.members]
        norms = torch.stack([torch.linalg.vector_norm(v, dtype=torch.float64).to(self.home) for v in values])
        sums = torch.stack([v.sum(dtype=torch.float64).to(self.home) for v in values])
        fingerprints = torch.nan_to_num(torch.stack([norms, sums]), nan=0.0, posinf=0.0, neginf=0.0)
        both = torch.cat([fingerprints, -fingerprints])
        dist.all_reduce(both, op=dist.ReduceOp.MAX)
        differences = both[:2] + both[2:]  # max - min of each fingerprint
        checked.index_fill_(0, self.positions, True)
        spread.index_copy_(0, self.positions, differences.max(dim=0).values)
        return checked, spread


def _store():
    return dist.distributed_c10d._get_default_store()  # pylint: disable=protected-access


class Handshake:
    """Whether every rank has a tracker of this name to take part in its collectives.

    Rank 0 decides: "go" once every rank announced itself with the same rows,
    else "stop" with the reason. A rank that waited `HANDSHAKE_S` for rank 0's
    decision writes "stop" itself. The decision is set once (the store's
    compare-and-set), so all ranks follow the same one whoever gave up first.

    Args:
      name: the tracker's name.
      instance: how many trackers of that name this process made before (the
        same on every rank of an SPMD program).
    """

    def __init__(self, name, instance):
        self._prefix = "tb_varupdate/%s/%d/" % (name, instance)
        self.announced = False

    def announce(self, payload):
        """Says, without waiting, that this rank's tracker takes part (`payload`: its rows)."""
        rank, _ = world()
        _store().set(self._prefix + "ready/%d" % rank, payload)
        self.announced = True

    def decide(self, payload, wait_s):
        """"go", or the reason ("stop: ...") the ranks will not run the tracker's collectives.

        Args:
          payload: this rank's rows (the same on every rank for "go").
          wait_s: how long rank 0 waits for the other ranks' announcements.
        """
        if not self.announced:
            self.announce(payload)
        rank, world_size = world()
        store = _store()
        decision = self._prefix + "decision"
        if rank == 0:
            keys = [self._prefix + "ready/%d" % r for r in range(world_size)]
            try:
                store.wait(keys, datetime.timedelta(seconds=wait_s))
                differ = [r for r, key in enumerate(keys) if store.get(key) != payload.encode()]
                desired = "go" if not differ else (
                    "stop: the trackers of ranks %s track other tensors than rank 0's" % differ)
            except Exception:  # pylint: disable=broad-except  (the store's timeout error)
                missing = [r for r, key in enumerate(keys) if not store.check([key])]
                desired = "stop: rank(s) %s made no tracker (or never recorded) within %g s" % (missing, wait_s)
        else:
            try:
                store.wait([decision], datetime.timedelta(seconds=max(wait_s, HANDSHAKE_S)))
            except Exception:  # pylint: disable=broad-except
                pass
            desired = "stop: rank 0 made no tracker (or never recorded) within %g s" % max(wait_s, HANDSHAKE_S)
        return store.compare_set(decision, "", desired).decode()
