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
The pieces, in this folder: `params` (which tensors, their names and rows),
`hooks` (the optimizer step hooks and the checks made around the step),
`record` (the counters, the writer), `measure` (the device-side
measurements), `fold` (every writer's `counters.fold` over `ops.TorchOps`,
a CUDA graph on a GPU), `pending` (records kept on the device until read),
`dist` (torch.distributed), and `verdicts.stuck.StuckCheck` (the
training-time check). This module holds the options, the rank gate and the
rule that logging errors become warnings. No TensorFlow import anywhere on
this path.
"""

import atexit
import collections
import re
import threading
import warnings
import weakref

import torch

from tb_varupdate.writers import common
from tb_varupdate.verdicts import stuck
from tb_varupdate.writers.torch import dist as _torch_dist
from tb_varupdate.writers.torch.hooks import GradientProbe, StepHooks, warn_not_in_optimizers
from tb_varupdate.writers.torch.optim import LearningRates
from tb_varupdate.writers.torch.params import Tensors
from tb_varupdate.writers.torch.pending import READ_EVERY_ACCELERATOR
from tb_varupdate.writers.torch.record import Recorder
from tb_varupdate.writers.events import WriteFailed
from tb_varupdate.errors import StuckVariableError

__all__ = ["ParameterUpdateTracker", "StuckVariableError"]

# A module's tensors are re-read at its first record, at attach() and every
# REFRESH_EVERY records after: walking named_parameters() of a 300-tensor
# model each step cost ~0.3 ms, and layers are rarely swapped mid-training.
REFRESH_EVERY = 50
# Seconds rank 0 waits for the other ranks' trackers at the first replica check
# of a run without DTensors (DDP): they announced themselves records before.
REPLICA_WAIT_S = 2.0

# PEFT's LoRA initialises `lora_B` to zero so that the adapted model starts as
# the base model; its names end in `.lora_B.<adapter>.weight`.
LORA_ZERO_INIT = (r"(^|\.)lora_B(\.|$)",)


# Trackers whose pending records a normal interpreter exit writes (a script
# that never calls close(), or one that raised out of its training loop).
_OPEN = weakref.WeakSet()
# Trackers made in this process per name: the same count on every rank of an
# SPMD program, so the ranks' trackers find each other (`_torch_dist.Handshake`).
_INSTANCES = collections.Counter()


@atexit.register
def _flush_at_exit():
    for tracker in list(_OPEN):
        tracker.close()


def _rank():
    """This process's rank under torch.distributed, 0 when not distributed."""
    return _torch_dist.world()[0]


_SHARDED_STOP = (
    "tb_varupdate: tracker %r stopped recording, and training goes on without it: its parameters are "
    "sharded (DTensor: FSDP2's fully_shard, tensor parallel), so every rank must create the tracker and "
    "attach it (or call log()) at the same steps, rank 0 writing; %s."
)
_UNSUPPORTED = (
    "tb_varupdate: tracker %r stopped recording, and training goes on without it: it cannot add up %s "
    "exactly across ranks. Track the other parameters (pass them as a list of (name, parameter) pairs), "
    "or open an issue with your parallel layout."
)
_REPLICAS_OFF = (
    "tb_varupdate: tracker %r does not compare the parameters' replicas across ranks: %s. Create the "
    "tracker and attach it on every rank (rank 0 still writes alone) to check them.%s"
)


class _Ranks:
    """A tracker's part in a run under torch.distributed: its handshake and where it stands."""

    def __init__(self, name):
        self.handshake = _torch_dist.Handshake(name, _INSTANCES[name])
        _INSTANCES[name] += 1
        self.records = 0  # records taken by every rank so far
        self.agreed = False
        self.stopped = False  # this rank takes part in nothing more
        self.replicas_off = False


_NOTHING_TO_TRACK = (
    "ParameterUpdateTracker needs tensors to track: a torch.nn.Module with parameters or buffers, "
    "or an iterable of parameters or (name, parameter) pairs. Received: %s with none"
)


def _check_one_writer(log_dir, writer):
    """Raises ValueError unless exactly one of `log_dir` and `writer` is given."""
    if (log_dir is None) == (writer is None):
        raise ValueError(
            "give exactly one of log_dir (the tracker opens a SummaryWriter of its own) and "
            "writer (a torch.utils.tensorboard.SummaryWriter of yours, so records land in "
            "the same run as your scalars). Received: log_dir=%r, writer=%r" % (log_dir, writer)
        )


_NO_COPY = (
    "a ParameterUpdateTracker cannot be %s: it measures the very tensors of the model it was "
    "given, so a copy would measure copies of them that no optimizer updates (every row "
    "'never_updated') and write a second series into the same tag. Make a new tracker for the "
    "copied model instead: ParameterUpdateTracker(model_copy, log_dir=...)."
)


def _no_records_reason(attached, calls, every_n_steps, warned):
    """Why a tracker wrote no records, for close()'s warning."""
    if attached and not calls:
        return "no attached optimizer stepped"
    if not calls:
        return "log() was never called (nor tracker.attach(optimizer))"
    if not warned:
        return "log() was called %d time(s), none at a multiple of every_n_steps=%d" % (calls, every_n_steps)
    return "every log() failed (see the warnings above)"


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

    Records are measured on the tensors' device and read back to the host
    every `read_every` records, so logging never makes the host wait for the
    GPU; every logged step is still its own record, written with its own
    step and values when the batch is read. The training-time check runs
    then too, so it can come up to `read_every` records late (its message
    says at which step it was seen). `close()` (or leaving the `with` block,
    also by an exception) and the interpreter's exit write what is pending.

    Under `torch.distributed`, create the tracker and attach it on every
    rank, with the same model; rank 0 writes (every rank with
    `all_ranks=True`, then give each its own `log_dir`).

    * Sharded parameters (`DTensor`s: FSDP2's `fully_shard`, tensor
      parallel) are measured on each rank's shard and added up across the
      mesh in one all-reduce per record, so a record holds the whole
      parameter's norms, and "no gradient" means none on any rank. Every
      rank must take part: a tracker missing on some rank is found out at
      the first record (within `_torch_dist.HANDSHAKE_S`, 60 s) and stops with a
      warning, and training goes on.
    * Replicated parameters (of a `DistributedDataParallel` model given as
      such, replicated DTensors, plain tensors beside DTensors) are compared
      across ranks every 10 records (one small all-reduce of a fingerprint of
      each value): replicas that differ are the verdict "replicas diverged".
      Under DDP a tracker on rank 0 only still records, without this check
      (it says so once). Other tensors under torch.distributed (a model of
      each rank's own) are rank 0's alone, as in one process.

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
        non-finite. Checked once, on the writing rank(s) (under
        torch.distributed a raise there ends that rank; torchrun and
        `torch.multiprocessing.spawn` then stop the others).
      stuck_after: number of records before that check.
      delta: "exact" (default) keeps one copy of each tensor to measure each
        change exactly; "checksum" keeps no copy, sees a change when the sum of
        the tensor's bits or its norm changes, and does not measure its size.
      buffers: also track the module's buffers (role "buffer").
      all_ranks: under torch.distributed, write on every rank, not rank 0 only.
      allow: regular expressions of parameter names accepted as stuck by the
        training-time check (as `tb-varupdate check --allow`).
      zero_init: regular expressions of parameter names that start at zero by
        design, so that their layer starts as a no-op (default: PEFT LoRA's
        `lora_B`). One that is all zero when first tracked is marked in the
        variables record, and if it never changes its diagnosis says the
        adapter stayed at its zero init and why. `()` marks none.
      read_every: records kept on the device between two reads by the host.
        Default: 32 when a tracked tensor is on an accelerator (one read per
        32 steps: +2% of GPT-2's step on an H200 in the prototype, against
        +12% reading every step), 1 when all are on the CPU, where a read
        waits for nothing.

    Raises:
      ValueError: an argument is out of range, both or neither of `log_dir`
        and `writer` were given, or there is nothing to track.
    """

    def __init__(self, module_or_params, log_dir=None, *, writer=None, name="model", every_n_steps=1,
                 on_stuck="warn", stuck_after=10, delta="exact", buffers=True, all_ranks=False, allow=(),
                 zero_init=LORA_ZERO_INIT, read_every=None):
        common.check_name(name)
        common.check_every_n_steps(every_n_steps)
        if read_every is not None:
            common.check_positive_int("read_every", read_every)
        _check_one_writer(log_dir, writer)
        self.name = name
        self.every_n_steps = every_n_steps
        self._check = stuck.StuckCheck(name, on_stuck, stuck_after, allow)
        self.delta = delta
        self._all_ranks = bool(all_ranks)
        self._tensors = Tensors(module_or_params, delta, buffers, [re.compile(p) for p in zero_init])
        if not self._tensors.current():
            raise ValueError(_NOTHING_TO_TRACK % type(module_or_params).__name__)
        if self._tensors.flat:
            warnings.warn(
                "tb_varupdate: FullyShardedDataParallel with use_orig_params=False flattens each wrapped "
                "module's parameters into one, so tracker %r sees one row per wrapped module (named "
                "'..._flat_param', measured whole across ranks), not one per parameter. Wrap with "
                "use_orig_params=True for per-parameter rows, or move to FSDP2 (fully_shard)." % name,
                stacklevel=2)
        if read_every is None:
            on_cpu = all(tensor.device.type == "cpu" for _, tensor, _ in self._tensors.current())
            read_every = 1 if on_cpu else READ_EVERY_ACCELERATOR
        self.read_every = read_every
        # The ranks take part together for sharded tensors (DTensor, FSDP1) and for DDP's replicas;
        # other tensors under torch.distributed (a model of each rank's own) are rank 0's alone, as before.
        distributed = _torch_dist.world()[1] > 1 and (self._tensors.replicated or self._tensors.sharded())
        self._ranks = _Ranks(name) if distributed else None
        self._writes = _rank() == 0 or self._all_ranks
        self._recorder = Recorder(name, every_n_steps, delta, log_dir, writer, read_every, self._written,
                                  replicas=distributed)
        self._calls, self._warn, self._closed, self._taken = 0, common.Warnings(), False, 0
        self._stopped = None  # why the ranks stopped recording, if they did
        # log() from several threads (a hook on each of several optimizers stepped
        # in threads, a data-parallel loop of the user's) is serialized: unserialized,
        # each call opened a SummaryWriter of its own (one event file each) and
        # folded into counters another call was replacing, so records went missing.
        self._lock = threading.RLock()
        self._lost_from = None  # the step of the first record a failed write lost
        self._steps, self._probe = StepHooks(), GradientProbe()
        self._rates, self._flags_checked, self._missing_warned = LearningRates(), None, set()
        self._read_only = []  # optimizers whose learning rates are recorded, stepped by someone else's hooks
        self._last_written = None  # (records written, entries, record, step, seen_at) of the newest record
        self._recorder.refresh(self._tensors)
        _OPEN.add(self)

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
        hooks = self._steps.add(optimizers, self._after_step)
        if self._writes:
            warn_not_in_optimizers(lambda: self._recorder.refresh(self._tensors), self._tensors,
                                   self._steps.attached, self._warn_once)
        else:
            self._recorder.refresh(self._tensors)  # the writing rank warns; the others would repeat it
        if not self.records_written and self._writes:  # the writing rank reads the probe
            self._probe.start(self._tensors)
        return hooks

    def read_learning_rates(self, *optimizers):
        """Records the learning rate of each param group of `optimizers` (and which parameters they hold), no hooks.

        For callers that call `log()` themselves after the optimizers step
        (the Lightning and Hugging Face callbacks): the records then tell "in
        no param group", "learning rate 0" and "the step rounds away in
        bfloat16" apart, as with `attach`. Replaces the previous call's list.
        """
        self._read_only = [o for o in optimizers if hasattr(o, "param_groups")
                           and all(o is not a for a in self._steps.attached)]

    def _after_step(self, optimizer, args, kwargs):  # pylint: disable=unused-argument
        if self._steps.is_last(optimizer):
            self.log()

    def log(self, step=None):
        """Records the change of every tracked tensor since the previous record.

        Call it after `optimizer.step()` (or use `attach`).

        Args:
          step: the training step, or None to count `log()` calls (0, 1, 2, ...).

        Returns:
          None. Errors inside logging become one warning each, and training
          goes on; only `on_stuck="raise"` raises (`StuckVariableError`).
        """
        with self._lock:
            calls = self._calls
            self._calls += 1
            with common.never_raise(self._warn, lambda err: self._handled(err, step)):
                if self._closed:
                    self._warn_once("closed", "tb_varupdate: log() on tracker %r after close(); nothing is "
                                    "recorded." % self.name)
                    return
                if not self._writes and self._ranks is None:
                    return
                if self._lost_from is not None and self._ranks is None:
                    # The writer failed (said once, in _write_failed). Ranks that
                    # reduce together go on taking part, or the others would wait.
                    return
                step = calls if step is None else int(step)
                if step % self.every_n_steps == 0:
                    self._record(step)
                elif self._writes:
                    self._recorder.poll()

    def _handled(self, err, step):
        """A write the writer refused is said by `_write_failed`, other errors by `never_raise`."""
        if not isinstance(err, WriteFailed):
            return False
        self._write_failed(err.step if err.step is not None else step, err)
        return True

    def _write_failed(self, step, err):
        """One warning for the first record the writer refused, saying what is lost; no more records after it."""
        # SummaryWriter's background thread stops at its first error and every
        # later add_summary raises it again: no later record can reach the disk
        # through this writer, so the tracker stops measuring rather than fail
        # every step.
        self._lost_from = step
        self._warn_once(
            "write-failed",
            "tb_varupdate: tracker %r could not write its record of step %d: %s. That record and every "
            "later one of this tracker are lost, and so may be the last records before it (the "
            "SummaryWriter writes in a background thread, which stopped at the error); %d record(s) "
            "had been handed to the writer. Training goes on. Free disk space or use a log_dir with "
            "room; `tb-varupdate check` reads the records that reached the disk."
            % (self.name, step, err, self.records_written),
        )

    def _record(self, step):
        if self._stopped or (self._ranks is not None and self._ranks.stopped):
            return
        if self._taken % REFRESH_EVERY == 0:
            self._recorder.refresh(self._tensors)
        self._taken += 1
        self._probe.stop()  # the gradients it noted are compared with the first record's when read
        remapped = self._rates.update(self._steps.attached + self._read_only, self._tensors)
        if remapped:
            self._recorder.rewrite_variables(self._tensors)
        try:
            if self._ranks is None:
                self._recorder.take(self._tensors, step, learning_rates=self._rates.values())
            else:
                self._record_ranks(step)
        except _torch_dist.Unsupported as err:
            # Found when the rows' layouts are read, before any collective; every rank sees the
            # same layouts, so every rank stops here.
            self._stopped = "stop: %s" % err
            warnings.warn(_UNSUPPORTED % (self.name, err), stacklevel=4)
            return
        if self._writes and (remapped or self._recorder.trainable_flags != self._flags_checked):
            self._flags_checked = self._recorder.trainable_flags
            self._warn_not_in_optimizers_now()

    def _record_ranks(self, step):
        """One record under torch.distributed: the handshake, the DTensor rows' reduction, the replica check."""
        ranks, recorder = self._ranks, self._recorder
        number = ranks.records
        ranks.records += 1
        payload = "%d:%d" % (len(self._tensors.rows), recorder.names_hash)
        due = (number + 1) % _torch_dist.REPLICA_CHECK_EVERY == 0
        if recorder.sharded(self._tensors):
            if not ranks.agreed:
                decision = ranks.handshake.decide(payload, _torch_dist.HANDSHAKE_S)
                if decision != "go":
                    ranks.stopped = True
                    self._stopped = decision
                    warnings.warn(_SHARDED_STOP % (self.name, decision[len("stop: "):]), stacklevel=4)
                    return
                ranks.agreed = True
            replicas = recorder.check_replicas(self._tensors) if due else None
            recorder.take(self._tensors, step, replicas, writes=self._writes, learning_rates=self._rates.values())
            return
        # Replicas only (DDP): rank 0 records alone; every rank takes part in the checks.
        if number == 0:
            ranks.handshake.announce(payload)
        if due and not ranks.agreed and not ranks.replicas_off:
            decision = ranks.handshake.decide(payload, REPLICA_WAIT_S)
            if decision == "go":
                ranks.agreed = True
            else:
                ranks.replicas_off = True
                ranks.stopped = not self._writes
                warnings.warn(_REPLICAS_OFF % (self.name, decision[len("stop: "):],
                                               "" if self._writes else " This rank records nothing."),
                              stacklevel=4)
        replicas = recorder.check_replicas(self._tensors) if due and ranks.agreed else None
        if self._writes:
            recorder.take(self._tensors, step, replicas, learning_rates=self._rates.values())

    def _warn_not_in_optimizers_now(self):
        """Warns about parameters that require grad now and are in no attached optimizer (once per name).

        `attach()` checks once; a layer unfrozen later with `requires_grad_(True)`
        but never added to the optimizer only shows here, when its flag changes.
        """
        missing = [name for name in self._rates.not_in_optimizers(self._tensors) if name not in self._missing_warned]
        self._missing_warned.update(missing)
        if not missing or self._recorder.taken <= 1:
            return  # at the first record, attach() has just named them
        shown = ", ".join(missing[:5]) + (" and %d more" % (len(missing) - 5) if len(missing) > 5 else "")
        warnings.warn(
            "tb_varupdate: %d parameter(s) now require grad but are in none of the attached optimizers' "
            "param_groups, so they will not be updated: %s. Unfrozen after the optimizer was created? "
            "Add them with optimizer.add_param_group({'params': [...]})." % (len(missing), shown),
            stacklevel=4,
        )

    def _written(self, written, entries, record, step, seen_at):
        """The checks on each record once it is on the host: the gradient probe's, then the stuck check."""
        if written == 1 and self._probe.noted:
            self._probe.finish(self._recorder.grad_column(record), entries, self._warn_once)
        self._last_written = (written, entries, record, step, seen_at)
        if self._check.is_due(written):
            if self._check.on_stuck == "raise":
                try:
                    self._recorder.writer.flush()  # the record that failed the check is on disk for `tb-varupdate check`
                except Exception as err:  # pylint: disable=broad-except
                    # Said as a lost record; the check below still raises.
                    self._write_failed(step, WriteFailed(err))
            self._check.run(entries, record, step, seen_at)

    @property
    def records_written(self):
        """Records this tracker has written (those on the device until the next read are not yet)."""
        return self._recorder.written

    def flush(self):
        """Writes every record so far to disk now, those on the device too (waits for it).

        The tracker stays open (e.g. between two `fit` calls).
        """
        self._recorder.flush()
        self._recorder.flush_writer()

    @property
    def stuck_message(self):
        """The training-time check's message, once it found stuck parameters; else None."""
        return self._check.message

    def _warn_once(self, key, message):
        self._warn.once(key, message, stacklevel=4)

    def close(self):
        """Removes the optimizer hooks, flushes the records and closes the tracker's own writer.

        Warns when the tracker wrote nothing (on the rank that should have):
        a silent tracker would read as "no problems".
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            _OPEN.discard(self)
            self._steps.remove()
            self._probe.remove()
            try:
                pending = self._recorder.pending
                if self._lost_from is None:
                    self._recorder.flush()
                    self._final_check()
            except StuckVariableError:
                self._recorder.close_writer()
                raise
            except WriteFailed as err:
                self._write_failed(err.step if err.step is not None else -1, err)
            except Exception as err:  # pylint: disable=broad-except
                self._warn_once("error:%s" % type(err).__name__,
                                "tb_varupdate: writing tracker %r's last %d record(s) failed: %s: %s"
                                % (self.name, pending, type(err).__name__, err))
            if self.records_written == 0 and self._writes:
                reason = _no_records_reason(self._steps.attached, self._calls, self.every_n_steps, self._warn.seen)
                if self._stopped:
                    reason = "it stopped (%s)" % self._stopped
                warnings.warn("tb_varupdate: tracker %r wrote no records: %s." % (self.name, reason), stacklevel=2)
            # After a failed write, closing fails with the same error, already said.
            self._recorder.close_writer(quiet=self._lost_from is not None)

    def __deepcopy__(self, memo):
        raise TypeError(_NO_COPY % "copied")

    def __reduce_ex__(self, protocol):
        # Pickling and copy.copy() come here.
        raise TypeError(_NO_COPY % "copied or pickled")

    def _final_check(self):
        """At close: the check once more on the last record (`StuckCheck.is_due_at_end`)."""
        last = self._last_written
        if last is not None and self._check.is_due_at_end(last[0]):
            self._check.run(*last[1:])

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
        return False
