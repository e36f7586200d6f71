"""`ParameterUpdateTracker`: the PyTorch writer of `varupdate` records.

```python
import tb_varupdate.torch as tbt

tracker = tbt.ParameterUpdateTracker(model, log_dir="runs/exp1")
tracker.attach(optimizer)   # a record after every optimizer.step()
...
tracker.close()
```

The records are the same as the TensorFlow tracker's (docs/FORMAT.md), so
the TensorBoard tab, `tb-varupdate check` and compare read them unchanged.
The pieces: `_torch_measure` (the device-side measurements), `counters.fold`
over `_torch_ops.TorchOps` (the counters, shared with every writer),
`stuck.StuckCheck` (the training-time check) and `_torch_writer` (the
summary protos). No TensorFlow import anywhere on this path.
"""

import random
import re
import warnings

import numpy as np
import torch

from tb_varupdate import counters
from tb_varupdate import metadata as md
from tb_varupdate import options
from tb_varupdate import stuck
from tb_varupdate._torch_measure import EXACT, Measurement, Row
from tb_varupdate._torch_ops import TorchOps, to_torch
from tb_varupdate._torch_writer import write_updates, write_variables
from tb_varupdate.errors import StuckVariableError

__all__ = ["ParameterUpdateTracker", "StuckVariableError"]

_OPS = TorchOps()
# A module's tensors are re-read at its first record, at attach() and every
# REFRESH_EVERY records after: walking named_parameters() of a 300-tensor
# model each step cost ~0.3 ms, and layers are rarely swapped mid-training.
REFRESH_EVERY = 50
# torch.compile wraps a module in OptimizedModule, whose names gain this segment.
_COMPILED_SEGMENT = re.compile(r"(^|\.)_orig_mod\.")


def _unwrap(module):
    """The user's module inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(module, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            module = module.module
        elif isinstance(getattr(module, "_orig_mod", None), torch.nn.Module):
            module = module._orig_mod  # pylint: disable=protected-access
        else:
            return module


def _clean_name(name):
    return _COMPILED_SEGMENT.sub(lambda m: m.group(1), name)


def _rank():
    """This process's rank under torch.distributed, 0 when not distributed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


class _Hooks:
    """What `attach` returns: `remove()` takes its optimizer hooks off."""

    def __init__(self, tracker, handles, optimizers):
        self._tracker, self._handles, self._optimizers = tracker, handles, optimizers

    def remove(self):
        """Stops logging after these optimizers' steps."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._tracker._detach(self._optimizers)  # pylint: disable=protected-access


class ParameterUpdateTracker:
    """Records, per training step, how much each parameter changed and its gradient state.

    Example:

    ```python
    import tb_varupdate.torch as tbt

    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with tbt.ParameterUpdateTracker(model, log_dir="runs/exp1") as tracker:
        tracker.attach(optimizer)
        for x, y in batches:
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()          # the tracker writes a record here
    ```

    Then open TensorBoard's "Variable Updates" tab, or run
    `tb-varupdate check runs`.

    Gradients are read from each parameter's `.grad` when the record is
    taken: None, all zero, non-finite or present, dense or sparse (the rows an
    `nn.Embedding(sparse=True)` changed are counted). `requires_grad` is the
    row's `trainable` flag, at every record. Buffers (BatchNorm running
    statistics, counters) are non-trainable rows of role "buffer", expected to
    change; a parameter with `requires_grad=False` that changes (weight decay
    on a zero gradient, a `.data` write) is a "parameter" row that should not.

    `attach` also watches the first step: parameters whose non-zero gradient
    arrived in `backward()` but was gone at `optimizer.step()` (`zero_grad()`
    between the two) are named in one warning.

    Several optimizers (a GAN's discriminator and generator): attach them in
    one call, in the order the loop steps them, `tracker.attach(opt_d, opt_g)`.
    One record is written per training step, after the step of the optimizer
    given last, and it holds every change since the previous record (the
    other optimizers' too); the record's step counts the last optimizer's
    steps. (Given in another order, the first record comes before the later
    optimizers' first step, so their parameters show one change fewer.) With AMP's `GradScaler`, a skipped step calls
    no `optimizer.step()` and so writes no record; to record skipped steps too
    (non-finite gradient, unchanged values), call `tracker.log()` after
    `scaler.update()` instead of attaching.

    Under `torch.distributed`, only rank 0 measures and writes (its parameters
    equal every rank's under DDP); the other ranks do nothing unless
    `all_ranks=True` (then give each rank its own `log_dir`).

    Args:
      module_or_params: a `torch.nn.Module` (parameters by `named_parameters()`
        name, DDP's `module.` and torch.compile's `_orig_mod.` removed; re-read
        at the first record, at `attach()` and every 50 records, so a layer
        added or replaced later is tracked), or an
        iterable of parameters or of `(name, parameter)` pairs.
      log_dir: a directory for a `SummaryWriter` of the tracker's own, opened
        at the first record and closed by `close()`.
      writer: a `torch.utils.tensorboard.SummaryWriter`, so records land in the
        same run as the user's scalars (flushed, not closed, by `close()`).
      name: the tracker's name; records go to tag `varupdate/<name>`.
      every_n_steps: record only when `step % every_n_steps == 0`; deltas then
        span the interval since the previous record.
      on_stuck: "warn" (default), "raise" or "ignore": what to do when, after
        `stuck_after` records, a trainable parameter has never changed or went
        non-finite. Checked once.
      stuck_after: number of records before that check.
      delta: "exact" (default) keeps one copy of each tensor to measure each
        change exactly; "checksum" keeps no copy, sees a change when the sum of
        the tensor's bits or its norm changes, and does not measure its size.
      buffers: also track the module's buffers (role "buffer").
      all_ranks: under torch.distributed, record on every rank, not rank 0 only.
      allow: regular expressions of parameter names accepted as stuck by the
        training-time check (as `tb-varupdate check --allow`).

    Raises:
      ValueError: an argument is out of range, both or neither of `log_dir`
        and `writer` were given, or there is nothing to track.
    """

    def __init__(self, module_or_params, log_dir=None, *, writer=None, name="model", every_n_steps=1,
                 on_stuck="warn", stuck_after=10, delta="exact", buffers=True, all_ranks=False, allow=()):
        options.check_name(name)
        options.check_every_n_steps(every_n_steps)
        if (log_dir is None) == (writer is None):
            raise ValueError(
                "give exactly one of log_dir (the tracker opens a SummaryWriter of its own) and "
                "writer (a torch.utils.tensorboard.SummaryWriter of yours, so records land in "
                "the same run as your scalars). Received: log_dir=%r, writer=%r" % (log_dir, writer)
            )
        self.name = name
        self.every_n_steps = every_n_steps
        self._check = stuck.StuckCheck(name, on_stuck, stuck_after, allow)
        self._measurement = Measurement(delta)
        self.delta = delta
        self._buffers = bool(buffers)
        self._all_ranks = bool(all_ranks)
        self._log_dir, self._writer, self._own_writer = log_dir, writer, writer is None
        self._writer_id = random.SystemRandom().randrange(1, 2**31)
        self._module = _unwrap(module_or_params) if isinstance(module_or_params, torch.nn.Module) else None
        self._fixed = None if self._module is not None else self._pairs(module_or_params)
        self._rows, self._entries, self._by_name = [], [], {}
        self._seen = None  # the (name, id) list of the last refresh, to skip unchanged ones
        self._counters, self._floats = (to_torch(a) for a in counters.initial_state(0))
        self._header = to_torch(counters.initial_header())
        self._names_written = None
        self._document = None
        self._calls = 0
        self._attached = []  # optimizers, in attach order; the last one triggers records
        self._hooks = []
        self._warned = set()
        self._closed = False
        # Indices of rows whose gradient arrived in a backward() before the
        # first record, and the hooks that note it (removed at that record).
        self._arrived, self._probes = set(), []
        self._refresh()
        if not self._rows:
            raise ValueError(
                "ParameterUpdateTracker needs tensors to track: a torch.nn.Module with "
                "parameters or buffers, or an iterable of parameters or (name, parameter) "
                "pairs. Received: %s with none" % type(module_or_params).__name__
            )

    # -- which tensors ---------------------------------------------------------

    @staticmethod
    def _pairs(items):
        pairs = []
        for index, item in enumerate(items):
            if isinstance(item, torch.Tensor):
                pairs.append(("param_%d" % index, item))
            elif isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[1], torch.Tensor):
                pairs.append((str(item[0]), item[1]))
            else:
                raise ValueError(
                    "module_or_params must be a torch.nn.Module or an iterable of parameters or "
                    "(name, parameter) pairs. Received: item #%d of type %s" % (index, type(item).__name__)
                )
        if pairs and all(name.startswith("module.") for name, _ in pairs):
            # Pairs from a DDP model's named_parameters(): names as in the plain model.
            pairs = [(name[len("module."):], tensor) for name, tensor in pairs]
        return [(_clean_name(name), tensor, md.ROLE_PARAMETER) for name, tensor in pairs]

    def _current(self):
        if self._module is None:
            return self._fixed
        found = [(_clean_name(n), p, md.ROLE_PARAMETER) for n, p in self._module.named_parameters()]
        if self._buffers:
            found += [(_clean_name(n), b, md.ROLE_BUFFER) for n, b in self._module.named_buffers()]
        return found

    def _refresh(self):
        """Tracks tensors that joined the module; re-points rows whose tensor was replaced."""
        current = self._current()
        seen = [(name, id(tensor)) for name, tensor, _ in current]
        if seen == self._seen:
            return
        self._seen = seen
        joined = int(self._header[counters.LOGGED])
        added = 0
        for name, tensor, role in current:
            index = self._by_name.get(name)
            if index is not None:
                row = self._rows[index]
                if row.tensor is not tensor:
                    # A layer replaced under the same name: follow the new tensor from its value now.
                    row.reset(tensor, self.delta)
                continue
            self._by_name[name] = len(self._rows)
            self._rows.append(Row(tensor, self.delta))
            self._entries.append({
                "name": name,
                "shape": list(tensor.shape),
                "dtype": str(tensor.dtype).replace("torch.", ""),
                "trainable": bool(tensor.requires_grad) if role == md.ROLE_PARAMETER else False,
                "joined": joined,
                "role": role,
            })
            added += 1
        if added:
            new_counters, new_floats = (to_torch(a) for a in counters.initial_state(added))
            self._counters = torch.cat([self._counters, new_counters])
            self._floats = torch.cat([self._floats, new_floats])
            self._document, self._names_hash = md.encode_variables(self._entries, self._writer_id)
            self._sized = torch.tensor([row.is_float and self.delta == EXACT for row in self._rows])

    # -- optimizers --------------------------------------------------------------

    def attach(self, *optimizers):
        """Writes a record after every step of the (last of the) given optimizers.

        Warns at once, naming them, about trainable parameters of the model in
        none of the attached optimizers' `param_groups` (typically a layer
        replaced after the optimizer was created): they will never train.

        Args:
          *optimizers: one or more `torch.optim.Optimizer`s. Give a GAN's
            optimizers in one call: the check above is over all of them, and
            the record follows the last one's step.

        Returns:
          A handle whose `remove()` stops logging after these optimizers' steps.

        Raises:
          TypeError: something that is not an optimizer with step hooks.
        """
        if not optimizers:
            raise TypeError("attach() needs at least one torch.optim.Optimizer. Received: none")
        handles = []
        for optimizer in optimizers:
            if not callable(getattr(optimizer, "register_step_post_hook", None)):
                raise TypeError(
                    "attach() needs torch.optim.Optimizer objects (with register_step_post_hook, "
                    "torch>=2.0). Received: %s" % type(optimizer).__name__
                )
        for optimizer in optimizers:
            handles.append(optimizer.register_step_post_hook(self._after_step))
            self._attached.append(optimizer)
        self._hooks.extend(handles)
        self._warn_not_in_optimizers()
        self._probe_gradients()
        return _Hooks(self, handles, list(optimizers))

    def _probe_gradients(self):
        """Notes which parameters get a gradient from backward() before the first record.

        `zero_grad()` between `backward()` and `step()` leaves `.grad` None
        (or zero) at the step, which a record alone cannot tell from a
        parameter that is not on the path to the loss; a gradient that
        arrived and was gone by the step can. The hooks live until the first
        record only, so training pays nothing after it.
        """
        if self.records_written or self._probes or not hasattr(torch.Tensor, "register_post_accumulate_grad_hook"):
            return
        for index, (entry, row) in enumerate(zip(self._entries, self._rows)):
            if entry["role"] == md.ROLE_PARAMETER and row.tensor.requires_grad and row.tensor.is_leaf:
                self._probes.append(row.tensor.register_post_accumulate_grad_hook(
                    lambda tensor, index=index: self._note_arrived(tensor, index)))

    def _note_arrived(self, tensor, index):
        # Only a non-zero gradient counts: a zero one may be a dead unit's.
        grad = tensor.grad
        if grad is not None:
            values = grad.coalesce().values() if grad.is_sparse else grad
            if bool(torch.any(values != 0)):
                self._arrived.add(index)

    def _warn_cleared(self, grad_l2):
        probes, self._probes = self._probes, []
        for handle in probes:
            handle.remove()
        cleared = [self._entries[i]["name"] for i in sorted(self._arrived)
                   if grad_l2[i] == md.GRAD_NONE or grad_l2[i] == 0.0]
        self._arrived = set()
        if cleared:
            shown = ", ".join(cleared[:20]) + (" and %d more" % (len(cleared) - 20) if len(cleared) > 20 else "")
            self._warn_once(
                "cleared",
                "tb_varupdate: %d parameter(s) got a gradient from backward() that was gone (None or zero) "
                "when optimizer.step() ran, so the step did not use it: %s. Is optimizer.zero_grad() "
                "called between loss.backward() and optimizer.step()? Call it before backward()."
                % (len(cleared), shown),
            )

    def _detach(self, optimizers):
        self._attached = [o for o in self._attached if all(o is not gone for gone in optimizers)]

    def _after_step(self, optimizer, args, kwargs):  # pylint: disable=unused-argument
        if self._attached and optimizer is self._attached[-1]:
            self.log()

    def _warn_not_in_optimizers(self):
        try:
            self._refresh()
            in_groups = {id(p) for o in self._attached for group in o.param_groups for p in group["params"]}
            missing = [
                entry["name"] for entry, row in zip(self._entries, self._rows)
                if entry["role"] == md.ROLE_PARAMETER and row.tensor.requires_grad and id(row.tensor) not in in_groups
            ]
        except Exception as err:  # pylint: disable=broad-except
            self._warn_once("attach-check", "tb_varupdate: could not compare the model with the optimizer's "
                            "param_groups (%s: %s); training goes on." % (type(err).__name__, err))
            return
        if missing:
            shown = ", ".join(missing[:20]) + (" and %d more" % (len(missing) - 20) if len(missing) > 20 else "")
            warnings.warn(
                "tb_varupdate: %d trainable parameter(s) of the model are in none of the attached "
                "optimizers' param_groups, so they will never be updated: %s. This happens when a "
                "layer is replaced after the optimizer was created: create the optimizer after the "
                "last change to the model, or add them with optimizer.add_param_group({'params': "
                "[...]}). If they are frozen on purpose, set requires_grad=False."
                % (len(missing), shown),
                stacklevel=3,
            )

    # -- logging ------------------------------------------------------------------

    def log(self, step=None):
        """Records the change of every tracked tensor since the previous record.

        Call it after `optimizer.step()` (or use `attach`).

        Args:
          step: the training step, or None to count `log()` calls (0, 1, 2, ...).

        Returns:
          None. Errors inside logging become one warning each, and training
          goes on; only `on_stuck="raise"` raises (`StuckVariableError`).
        """
        calls = self._calls
        self._calls += 1
        try:
            if self._closed:
                self._warn_once("closed", "tb_varupdate: log() on tracker %r after close(); nothing is "
                                "recorded." % self.name)
                return
            if _rank() != 0 and not self._all_ranks:
                return
            step = calls if step is None else int(step)
            if step % self.every_n_steps == 0:
                self._record(step)
        except StuckVariableError:
            raise
        except Exception as err:  # pylint: disable=broad-except
            self._warn_once(
                "error:%s" % type(err).__name__,
                "tb_varupdate: logging failed and was skipped; training goes on. %s: %s" % (type(err).__name__, err),
            )

    def _grads(self):
        grads = []
        for entry, row in zip(self._entries, self._rows):
            if entry["role"] == md.ROLE_BUFFER:
                grads.append(md.GRAD_NOT_GIVEN)
            else:
                grad = row.tensor.grad
                grads.append(md.GRAD_NONE if grad is None else grad)
        return grads

    def _record(self, step):
        if self.records_written % REFRESH_EVERY == 0:
            self._refresh()
        measured = self._measurement.measure(self._rows, self._grads())
        if self._probes:
            self._warn_cleared(measured["grad_l2"])
        measured = counters.Measured(**{key: torch.from_numpy(value) for key, value in measured.items()})
        # Through NumPy: torch.tensor() of a 300-item list of bools took ~1 ms.
        trainable = torch.from_numpy(np.fromiter(
            (entry["role"] == md.ROLE_PARAMETER and row.tensor.requires_grad
             for entry, row in zip(self._entries, self._rows)), bool, count=len(self._rows)))
        sized = self._sized
        state = counters.fold(
            _OPS, self._counters, self._floats, self._header, measured, torch.tensor(step, dtype=torch.int64),
            trainable, sized, self._names_hash, self.every_n_steps, self._writer_id,
        )
        record = state[3].numpy()
        writer = self._get_writer()
        if self._names_written != self._names_hash:
            write_variables(writer, self.name, self._document, step)
            self._names_written = self._names_hash
        write_updates(writer, self.name, record, step)
        # Kept only once written: a record that failed to write is not counted.
        self._counters, self._floats, self._header = state[:3]
        logged = int(self._header[counters.LOGGED])
        if self._check.is_due(logged):
            entries, _ = md.parse_variables(self._document)
            if self._check.on_stuck == "raise":
                writer.flush()  # the record that failed the check is on disk for `tb-varupdate check`
            self._check.run(entries, record, step)

    def _get_writer(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter  # pylint: disable=import-outside-toplevel

            self._writer = SummaryWriter(self._log_dir)
        return self._writer

    @property
    def records_written(self):
        """Records this tracker has written."""
        return int(self._header[counters.LOGGED])

    @property
    def stuck_message(self):
        """The training-time check's message, once it found stuck parameters; else None."""
        return self._check.message

    def _warn_once(self, key, message):
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, stacklevel=3)

    # -- closing ------------------------------------------------------------------

    def close(self):
        """Removes the optimizer hooks, flushes the records and closes the tracker's own writer.

        Warns when the tracker wrote nothing (on the rank that should have):
        a silent tracker would read as "no problems".
        """
        if self._closed:
            return
        self._closed = True
        for handle in self._hooks + self._probes:
            handle.remove()
        if self.records_written == 0 and (_rank() == 0 or self._all_ranks):
            reason = (
                "no attached optimizer stepped" if self._attached and not self._calls
                else "log() was never called (nor tracker.attach(optimizer))" if not self._calls
                else "log() was called %d time(s), none at a multiple of every_n_steps=%d"
                % (self._calls, self.every_n_steps) if not self._warned
                else "every log() failed (see the warnings above)"
            )
            warnings.warn("tb_varupdate: tracker %r wrote no records: %s." % (self.name, reason), stacklevel=2)
        if self._writer is not None:
            try:
                if self._own_writer:
                    self._writer.close()
                else:
                    self._writer.flush()
            except Exception as err:  # pylint: disable=broad-except
                warnings.warn("tb_varupdate: closing tracker %r's writer failed: %s: %s"
                              % (self.name, type(err).__name__, err), stacklevel=2)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
        return False
