"""What the PyTorch tracker records about the optimizers: each parameter's param group and its learning rate.

A record cannot tell a parameter that no optimizer holds, or whose learning
rate is 0, or whose step rounds away in bfloat16, from one another; the
optimizers can, on the host, for free: a param group's `lr` is a Python
float. So every record carries the learning rate of up to
`metadata.LEARNING_RATE_SLOTS` param groups in its header, and each
parameter's variables entry names its group's slot (`lr_slot`), or
`NOT_IN_OPTIMIZER` (docs/FORMAT.md). Nothing here reads the device.
Imports torch, never TensorFlow.
"""

import math

import torch

from tb_varupdate.format import metadata as md
from tb_varupdate.format import variables as vr


def _host_float(value):
    """A param group's lr as a float; NaN for a tensor on an accelerator (reading it would wait for the device)."""
    if isinstance(value, torch.Tensor):
        if value.device.type != "cpu" or value.numel() != 1:
            return math.nan
        return float(value.item())
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


class LearningRates:
    """The slot of each tracked parameter and the learning rate of each slot, at each record."""

    def __init__(self):
        self._signature = None
        self._groups = []  # the param groups that have a slot, in slot order
        self.missing = ()  # names of trainable parameters in no param group, at the last mapping

    def update(self, optimizers, tensors):
        """Re-maps parameters to slots when the optimizers' groups or the tracked tensors changed.

        Sets each parameter entry's `lr_slot` (in `tensors.entries`).

        Args:
          optimizers: the optimizers whose param groups count (may be empty:
            then nothing is known and no entry gets a slot).
          tensors: the tracker's `params.Tensors`.

        Returns:
          True when an entry's `lr_slot` changed (the variables record must be written again).
        """
        groups = [group for optimizer in optimizers for group in optimizer.param_groups]
        signature = (
            tuple((id(group["params"]), len(group["params"])) for group in groups),
            id(tensors), tensors.version,
        )
        if signature == self._signature:
            return False
        self._signature = signature
        self._groups = groups[:md.LEARNING_RATE_SLOTS]
        slot_of = {}
        for slot, group in enumerate(groups):
            for param in group["params"]:
                # A group past the last slot: in an optimizer, learning rate unknown.
                slot_of.setdefault(id(param), slot if slot < md.LEARNING_RATE_SLOTS else None)
        changed = False
        for entry, row in zip(tensors.entries, tensors.rows):
            if entry.get("role") != vr.ROLE_PARAMETER:
                continue
            if not groups:
                slot = None
            else:
                slot = slot_of.get(id(row.tensor), vr.NOT_IN_OPTIMIZER)
            if entry.get("lr_slot") != slot:
                changed = True
                if slot is None:
                    entry.pop("lr_slot", None)
                else:
                    entry["lr_slot"] = slot
        return changed

    def values(self):
        """The learning rate of each slot now, as a tuple of floats (NaN where unknown)."""
        return tuple(_host_float(group.get("lr", math.nan)) for group in self._groups)

    def not_in_optimizers(self, tensors):
        """Names of parameters that require grad now and are in no param group (given optimizers)."""
        return [entry["name"] for _, entry, row in tensors.trainable_parameters()
                if entry.get("lr_slot") == vr.NOT_IN_OPTIMIZER]
