"""What `ParameterUpdateTracker.attach` adds to training, and the two mistakes it catches there.

The record follows an optimizer's step through `register_step_post_hook`
(torch>=2.0), so the training loop needs no `log()` call: `StepHooks`
keeps them (one hook per optimizer, however often it is attached), and `Hooks` is the
handle that takes one attach()'s off again. Two training bugs are only visible
around the step, not in a record, so they are checked here:

* a trainable parameter in no attached optimizer's `param_groups` (a layer
  replaced after the optimizer was created) never trains, and a record
  cannot tell it from a frozen one: `warn_not_in_optimizers`, at attach;
* `zero_grad()` between `backward()` and `step()` leaves `.grad` None (or
  zero) at the step, which a record cannot tell from a parameter off the
  loss's path; a gradient that arrived and was gone by the step can:
  `GradientProbe`, until the first record.

Imports torch, never TensorFlow.
"""

import warnings

import torch

from tb_varupdate.format import metadata as md
from tb_varupdate.writers.torch.measure import is_dtensor, local

# A warning names this many parameters, then counts the rest.
_SHOWN = 20


def _shown(names):
    return ", ".join(names[:_SHOWN]) + (" and %d more" % (len(names) - _SHOWN) if len(names) > _SHOWN else "")


class Hooks:
    """What `attach` returns: `remove()` takes its optimizer hooks off."""

    def __init__(self, on_remove):
        self._on_remove = on_remove

    def remove(self):
        """Stops logging after these optimizers' steps (once; a second call does nothing)."""
        on_remove, self._on_remove = self._on_remove, None
        if on_remove is not None:
            on_remove()


class StepHooks:
    """The attached optimizers, in attach order, and their step post-hooks.

    Only the last optimizer's step records (`is_last`): a GAN's loop steps
    two optimizers per training step and writes one record.

    An optimizer attached again (a second `attach` call, or given twice) is
    one attachment with one hook: two hooks would write every record twice,
    and the hook stays until every `attach` handle naming it is removed.
    """

    def __init__(self):
        self.attached = []
        self._hooks = {}  # id(optimizer) -> [its step hook's handle, attach handles naming it]

    def add(self, optimizers, hook):
        """Registers `hook(optimizer, args, kwargs)` after each one's step, once per optimizer.

        Returns:
          The `Hooks` handle of these optimizers.

        Raises:
          TypeError: none given, or something that is not an optimizer with step hooks.
        """
        if not optimizers:
            raise TypeError("attach() needs at least one torch.optim.Optimizer. Received: none")
        for optimizer in optimizers:
            if not callable(getattr(optimizer, "register_step_post_hook", None)):
                raise TypeError(
                    "attach() needs torch.optim.Optimizer objects (with register_step_post_hook, "
                    "torch>=2.0). Received: %s" % type(optimizer).__name__
                )
        named = []
        for optimizer in optimizers:
            if any(optimizer is o for o in named):
                continue
            named.append(optimizer)
            entry = self._hooks.get(id(optimizer))
            if entry is None:
                self._hooks[id(optimizer)] = [optimizer.register_step_post_hook(hook), 1]
                self.attached.append(optimizer)
            else:
                entry[1] += 1
        return Hooks(lambda: self._detach(named))

    def _detach(self, optimizers):
        for optimizer in optimizers:
            entry = self._hooks.get(id(optimizer))
            if entry is None:
                continue
            entry[1] -= 1
            if entry[1] == 0:
                entry[0].remove()
                del self._hooks[id(optimizer)]
                self.attached = [o for o in self.attached if o is not optimizer]

    def is_last(self, optimizer):
        """Whether `optimizer` is the last attached one, whose step writes the record."""
        return bool(self.attached) and optimizer is self.attached[-1]

    def remove(self):
        """Takes every hook off (at `close()`); the optimizers stay listed."""
        for handle, _ in self._hooks.values():
            handle.remove()


def warn_not_in_optimizers(refresh, tensors, optimizers, warn_once):
    """Warns, naming them, about trainable parameters in none of `optimizers`' param_groups.

    Called by `attach` itself (the warning's `stacklevel` points at the
    user's `attach` call). A failure of the check is one warning through
    `warn_once`; training goes on.

    Args:
      refresh: re-reads the tracked tensors first (a layer replaced since).
      tensors: the tracker's `params.Tensors`.
      optimizers: every attached optimizer.
      warn_once: the tracker's `_warn_once(key, message)`.
    """
    try:
        refresh()
        in_groups = {id(p) for o in optimizers for group in o.param_groups for p in group["params"]}
        missing = [entry["name"] for _, entry, row in tensors.trainable_parameters() if id(row.tensor) not in in_groups]
    except Exception as err:  # pylint: disable=broad-except
        warn_once("attach-check", "tb_varupdate: could not compare the model with the optimizer's "
                  "param_groups (%s: %s); training goes on." % (type(err).__name__, err))
        return
    if missing:
        warnings.warn(
            "tb_varupdate: %d trainable parameter(s) of the model are in none of the attached "
            "optimizers' param_groups, so they will never be updated: %s. This happens when a "
            "layer is replaced after the optimizer was created: create the optimizer after the "
            "last change to the model, or add them with optimizer.add_param_group({'params': "
            "[...]}). If they are frozen on purpose, set requires_grad=False."
            % (len(missing), _shown(missing)),
            stacklevel=3,
        )


class GradientProbe:
    """Notes which parameters get a gradient from backward() before the first record.

    The hooks live until the first record only (`finish`), so training pays
    nothing after it.
    """

    def __init__(self):
        # Indices of rows whose gradient arrived, and the hooks that note it.
        self._arrived, self._handles, self._started = set(), [], False

    @property
    def noted(self):
        """Whether the probe ran (from `start` until `finish`)."""
        return self._started

    def stop(self):
        """At the first record: takes the hooks off, keeping what they noted for `finish`."""
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.remove()

    def start(self, tensors):
        """Puts a post-accumulate-grad hook on each trainable leaf parameter, once."""
        if self._handles or not hasattr(torch.Tensor, "register_post_accumulate_grad_hook"):
            return
        self._started = True
        for index, _, row in tensors.trainable_parameters():
            if row.tensor.is_leaf:
                self._handles.append(row.tensor.register_post_accumulate_grad_hook(
                    lambda tensor, index=index: self._note_arrived(tensor, index)))

    def _note_arrived(self, tensor, index):
        # Only a non-zero gradient counts: a zero one may be a dead unit's.
        grad = tensor.grad
        if grad is not None:
            grad = local(grad) if is_dtensor(grad) else grad  # this rank's shard: no collective in a hook
            values = grad.coalesce().values() if grad.is_sparse else grad
            if bool(torch.any(values != 0)):
                self._arrived.add(index)

    def finish(self, grad_l2, entries, warn_once):
        """When the first record is read: warns about gradients gone by the step.

        Args:
          grad_l2: the record's measured gradient norms, per row.
          entries: the tracked tensors' entries, for their names.
          warn_once: the tracker's `_warn_once(key, message)`.
        """
        self.stop()
        self._started = False
        cleared = [entries[i]["name"] for i in sorted(self._arrived)
                   if grad_l2[i] == md.GRAD_NONE or grad_l2[i] == 0.0]
        self._arrived = set()
        if cleared:
            warn_once(
                "cleared",
                "tb_varupdate: %d parameter(s) got a gradient from backward() that was gone (None or zero) "
                "when optimizer.step() ran, so the step did not use it: %s. Is optimizer.zero_grad() "
                "called between loss.backward() and optimizer.step()? Call it before backward()."
                % (len(cleared), _shown(cleared)),
            )

    def remove(self):
        """Takes the hooks off (at `close()`)."""
        for handle in self._handles:
            handle.remove()
