"""Which tensors the PyTorch tracker records, under which names, as rows in a fixed order.

A record's rows are positional (docs/FORMAT.md): once a tensor has a row it
keeps it, so `Tensors.refresh` only appends tensors that joined the module
and re-points a row whose tensor was replaced under the same name. Names are
the user's model's, whatever wraps it: DistributedDataParallel's and
DataParallel's `module.` and torch.compile's `_orig_mod.` are removed, so a
run compares with an unwrapped one. Imports torch, never TensorFlow.
"""

import operator
import re

import torch

from tb_varupdate.format import metadata as md
from tb_varupdate.format import variables as vr
from tb_varupdate.writers.torch.dist import flat_shards
from tb_varupdate.writers.torch.measure import Row, is_dtensor, local

_GRAD = operator.attrgetter("grad")
_REQUIRES_GRAD = operator.attrgetter("requires_grad")


class _Buffer:
    """Stands for a buffer row where a parameter's `.grad` and `requires_grad` are read: none, and False."""

    grad = md.GRAD_NOT_GIVEN
    requires_grad = False


_BUFFER = _Buffer()

# torch.compile wraps a module in OptimizedModule, whose names gain this segment;
# FSDP1 (FullyShardedDataParallel) and activation checkpointing wrap submodules,
# whose names gain theirs.
_COMPILED_SEGMENT = re.compile(r"(^|\.)(_orig_mod|_fsdp_wrapped_module|_checkpoint_wrapped_module)\.")


def unwrap(module):
    """The user's module inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(module, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            module = module.module
        elif isinstance(getattr(module, "_orig_mod", None), torch.nn.Module):
            module = module._orig_mod  # pylint: disable=protected-access
        else:
            return module


def clean_name(name):
    """`name` without torch.compile's `_orig_mod.` and FSDP1's / checkpointing's wrapper segments."""
    return _COMPILED_SEGMENT.sub(lambda m: m.group(1), name)


def pairs(items):
    """`(name, tensor, role)` of an iterable of parameters or `(name, parameter)` pairs.

    Raises:
      ValueError: an item is neither.
    """
    found = []
    for index, item in enumerate(items):
        if isinstance(item, torch.Tensor):
            found.append(("param_%d" % index, item))
        elif isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[1], torch.Tensor):
            found.append((str(item[0]), item[1]))
        else:
            raise ValueError(
                "module_or_params must be a torch.nn.Module or an iterable of parameters or "
                "(name, parameter) pairs. Received: item #%d of type %s" % (index, type(item).__name__)
            )
    if found and all(name.startswith("module.") for name, _ in found):
        # Pairs from a DDP model's named_parameters(): names as in the plain model.
        found = [(name[len("module."):], tensor) for name, tensor in found]
    return [(clean_name(name), tensor, vr.ROLE_PARAMETER) for name, tensor in found]


class Tensors:
    """The tracked tensors: `rows` (their measurement state) and `entries` (the variables record's).

    Args:
      module_or_params: a `torch.nn.Module`, re-read at each `refresh`, or an
        iterable of parameters or `(name, parameter)` pairs, read once.
      delta: the `Row`s' `delta` ("exact" or "checksum").
      buffers: also track a module's buffers (role "buffer").
      zero_init: compiled regular expressions of parameter names that start
        at zero by design (LoRA's `lora_B`): such a parameter that is all zero
        when first tracked gets `"zero_init": true` in its entry.
    """

    def __init__(self, module_or_params, delta, buffers, zero_init=()):
        self._delta = delta
        self._buffers = bool(buffers)
        self._zero_init = tuple(zero_init)
        self._module = unwrap(module_or_params) if isinstance(module_or_params, torch.nn.Module) else None
        self._fixed = None if self._module is not None else pairs(module_or_params)
        # FSDP1's sharded tensors: their process groups and whole shapes (`_torch_dist.flat_shards`).
        self.flat_groups, self._flat_shapes, self.flat = {}, {}, False
        if self._module is not None:
            self.flat_groups, self._flat_shapes, self.flat = flat_shards(self._module)
        # Replicas that must stay equal across ranks: a DistributedDataParallel model's.
        self.replicated = isinstance(module_or_params, torch.nn.parallel.DistributedDataParallel)
        self.rows, self.entries, self._by_name = [], [], {}
        self._seen = None  # the (name, id) list of the last refresh, to skip unchanged ones
        # Bumped whenever a row is appended or re-pointed: what is cached per rows is keyed on it.
        self.version = 0
        # Made again at each such change, from the rows: per row, where its `.grad` and
        # `requires_grad` are read at each record (the parameter, or `_BUFFER`), by `map`
        # over this list, not a Python loop per row; and whether any row is a DTensor
        # (its gradient is measured as its local shard).
        self._holders, self._dtensors = [], False

    def sharded(self):
        """Whether any tensor is sharded across ranks (a DTensor, an FSDP1 slice)."""
        return any(is_dtensor(tensor) or id(tensor) in self.flat_groups for _, tensor, _ in self.current())

    def current(self):
        """`(name, tensor, role)` of every tensor to track now."""
        if self._module is None:
            return self._fixed
        found = [(clean_name(n), p, vr.ROLE_PARAMETER) for n, p in self._module.named_parameters()]
        if self._buffers:
            found += [(clean_name(n), b, vr.ROLE_BUFFER) for n, b in self._module.named_buffers()]
        return found

    def refresh(self, joined):
        """Tracks tensors that joined the module; re-points rows whose tensor was replaced.

        Args:
          joined: the records written so far, the new entries' `joined`.

        Returns:
          How many rows were appended (their counters are the caller's to add).
        """
        current = self.current()
        seen = [(name, id(tensor)) for name, tensor, _ in current]
        if seen == self._seen:
            return 0
        self._seen = seen
        added = repointed = 0
        for name, tensor, role in current:
            index = self._by_name.get(name)
            if index is not None:
                row = self.rows[index]
                if row.tensor is not tensor:
                    # A layer replaced under the same name: follow the new tensor from its value now.
                    row.reset(tensor, self._delta)
                    repointed += 1
                continue
            self._by_name[name] = len(self.rows)
            self.rows.append(Row(tensor, self._delta))
            self.entries.append({
                "name": name,
                "shape": self._flat_shapes.get(id(tensor), list(tensor.shape)),
                "dtype": str(tensor.dtype).replace("torch.", ""),
                "trainable": bool(tensor.requires_grad) if role == vr.ROLE_PARAMETER else False,
                "joined": int(joined),
                "role": role,
                "framework": vr.FRAMEWORK_TORCH,
            })
            if role == vr.ROLE_PARAMETER and self._starts_at_zero(name, tensor):
                self.entries[-1]["zero_init"] = True
            added += 1
        if added or repointed:
            self.version += 1
            self._holders = [row.tensor if entry["role"] == vr.ROLE_PARAMETER else _BUFFER
                             for entry, row in zip(self.entries, self.rows)]
            self._dtensors = any(is_dtensor(row.tensor) for row in self.rows)
        return added

    def _starts_at_zero(self, name, tensor):
        """Whether `name` matches a zero_init pattern and `tensor` is all zero now."""
        if not tensor.numel() or not any(pattern.search(name) for pattern in self._zero_init):
            return False
        # Only the matching names are read (one reduction each, at tracking time).
        with torch.no_grad():
            return not bool(tensor.detach().any())

    def trainable_parameters(self):
        """`(index, entry, row)` of each parameter with `requires_grad` now."""
        return [(index, entry, row) for index, (entry, row) in enumerate(zip(self.entries, self.rows))
                if entry["role"] == vr.ROLE_PARAMETER and row.tensor.requires_grad]

    def grads(self):
        """Per row, its `.grad` now (None when it has none); buffers, which have none, `GRAD_NOT_GIVEN`."""
        grads = list(map(_GRAD, self._holders))
        if self._dtensors:
            grads = [local(grad) if is_dtensor(grad) else grad for grad in grads]
        return grads

    def trainable(self):
        """tuple of bool, per row: its `trainable` at this record (`requires_grad` can change)."""
        return tuple(map(_REQUIRES_GRAD, self._holders))
