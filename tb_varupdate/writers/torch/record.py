"""`Recorder`: the PyTorch tracker's counters, one record's measure and fold, and the writer.

A record is measured (`measure`) and folded (`fold`: every
writer's `counters.fold` over `ops.TorchOps`, replayed as a CUDA graph
on a GPU) on the tensors' device, then kept
there (`pending`) until the host reads a batch of them; only then is
each written, with its own step, and checked (`stuck.StuckCheck`). Reading
late changes when a record is written, not what it says. The `SummaryWriter`
is opened at the first written record, not at construction, so a tracker
that never records leaves no empty run behind. Imports torch, never TensorFlow.
"""

import collections
import itertools
import warnings

import numpy as np
import torch

from tb_varupdate.format import metadata as md
from tb_varupdate.format import variables as vr
from tb_varupdate.writers import common
from tb_varupdate.writers import counters
from tb_varupdate.writers.events import write_updates, write_variables
from tb_varupdate.writers.torch.dist import Replicas, Sharded
from tb_varupdate.writers.torch.fold import Fold
from tb_varupdate.writers.torch.measure import EXACT, Measurement, home_device
from tb_varupdate.writers.torch.ops import TorchOps, to_torch
from tb_varupdate.writers.torch.pending import PendingRecords

_OPS = TorchOps()


class Recorder:
    """Takes and writes records of a `params.Tensors` under one tracker name.

    Args:
      name: the tracker's name (tags `varupdate/<name>`).
      every_n_steps: the tracker's record interval (in the record's header).
      delta: "exact" or "checksum".
      log_dir: a directory for a `SummaryWriter` of the recorder's own, or None.
      writer: the user's `SummaryWriter`, or None.
      read_every: records kept on the device between two host reads.
      on_written: called with `(records_written, entries, record, step, seen_at)`
        after each record is written (the training-time checks).
      replicas: write version 4 records, with the replica checks' columns
        (a tracker under torch.distributed).

    Raises:
      ValueError: `delta` is neither.
    """

    def __init__(self, name, every_n_steps, delta, log_dir, writer, read_every, on_written, replicas=False):
        self._name, self._every_n_steps, self._delta = name, every_n_steps, delta
        self._measurement = Measurement(delta)
        self._fold = Fold()
        self._log_dir, self._writer, self._own_writer = log_dir, writer, writer is None
        self._writer_id = common.new_writer_id()
        self._on_written = on_written
        self._pending = PendingRecords(read_every, self._write)
        self._device = None  # the device the state lives on, set by the first plan
        self._counters, self._floats = (to_torch(a) for a in counters.initial_state(0))
        self._header = to_torch(counters.initial_header())
        self._version = md.REPLICAS_VERSION if replicas else md.FORMAT_VERSION
        # Under torch.distributed: the replica state, the DTensor rows' reduction, the replicated rows.
        self._replica_state = tuple(to_torch(a) for a in counters.initial_replicas(0)) if replicas else None
        self._sharded = self._replicas = (None, None)  # (what it was built for, the object)
        self._present = (None, None)
        self._unchecked = None
        self._step_origin = None  # 0-d int64 zero on the device: a step is origin + int, no copy
        self._trainable = (None, None)  # (flags, bool tensor on the device)
        self._rates = collections.deque()  # per pending record, in order: its learning-rate slots
        self._variables_record = common.VariablesRecord(self._writer_id)  # re-encoded when rows join
        self._sized = None
        self.taken = 0  # records measured and folded (written or pending)
        self.written = 0
        self.latest_step = None

    @property
    def names_hash(self):
        """The variables record's `names_hash` (0 before any row)."""
        return self._variables_record.names_hash if self._variables_record.entries else 0

    @property
    def document(self):
        """The variables record (JSON bytes) of the rows now."""
        return self._variables_record.document

    @property
    def pending(self):
        """Records taken and not yet written."""
        return len(self._pending)

    def refresh(self, tensors):
        """`tensors.refresh()`, with counters for the rows it appended, from their `joined` record on."""
        added = tensors.refresh(self.taken)
        if added:
            # The pending records were taken with the rows before: written under their names.
            self._pending.flush()
            self._grow(added, tensors)

    def _grow(self, added, tensors):
        """Counters for the `added` rows just appended to `tensors`, and the variables record anew."""
        new_counters, new_floats = (to_torch(a, self._counters.device) for a in counters.initial_state(added))
        self._counters = torch.cat([self._counters, new_counters])
        self._floats = torch.cat([self._floats, new_floats])
        if self._replica_state is not None:
            self._replica_state = tuple(
                torch.cat([old, to_torch(new, old.device)])
                for old, new in zip(self._replica_state, counters.initial_replicas(added)))
        self._variables_record.update(tensors.entries)
        self._sized = to_torch(np.array([row.is_float and self._delta == EXACT for row in tensors.rows]),
                               self._counters.device)

    def _to_device(self, device):
        """Moves the state to `device`, once: where the measurements land."""
        if self._device == device:
            return
        self._device = device
        self._counters, self._floats = self._counters.to(device), self._floats.to(device)
        self._header, self._sized = self._header.to(device), self._sized.to(device)
        if self._replica_state is not None:
            self._replica_state = tuple(a.to(device) for a in self._replica_state)
        self._step_origin = torch.zeros((), dtype=torch.int64, device=device)
        self._trainable = (None, None)

    def _mask(self, cached, flags):
        """(flags, bool tensor of them on the device): `cached` again while the flags are the same.

        A host-to-device copy is made only when a flag changed, from pinned
        memory on CUDA, so it does not wait for the device.
        """
        if flags == cached[0]:
            return cached
        mask = torch.tensor(flags, dtype=torch.bool)
        if self._device.type == "cuda":
            mask = mask.pin_memory()
        return flags, mask.to(self._device, non_blocking=True)

    def _trainable_now(self, tensors):
        """bool [rows] on the device: `requires_grad` now."""
        self._trainable = self._mask(self._trainable, tensors.trainable())
        return self._trainable[1]

    @property
    def trainable_flags(self):
        """The per-row `requires_grad` flags of the newest record taken (a tuple), or None."""
        return self._trainable[0]

    def rewrite_variables(self, tensors):
        """Encodes the variables record again after an entry changed (not its rows): written before the next record."""
        self._pending.flush()  # the records taken so far keep the entries they were taken with
        self._variables_record.update(tensors.entries)

    def _present_now(self, grads):
        """bool [rows] on the device: a gradient tensor on this rank."""
        self._present = self._mask(self._present, tuple(map(isinstance, grads, itertools.repeat(torch.Tensor))))
        return self._present[1]

    def _sharded_of(self, plan, tensors):
        """The `Sharded` rows of `plan`, built once per plan."""
        if self._sharded[0] is not plan:
            self._sharded = (plan, Sharded(plan.rows, plan.home, tensors.flat_groups))
        return self._sharded[1]

    def sharded(self, tensors):
        """Whether any tracked tensor is sharded (DTensor, FSDP1): every rank must take its records together."""
        return bool(self._sharded_of(self._measurement.plan_for(tensors.rows, tensors.grads()), tensors))

    def _not_checked(self):
        """(checked, spread) of a record without a replica check: all False and 0, on the device."""
        rows = self._counters.shape[0]
        if self._unchecked is None or self._unchecked[0].shape[0] != rows:
            self._unchecked = (torch.zeros(rows, dtype=torch.bool, device=self._device),
                                     torch.zeros(rows, dtype=torch.float64, device=self._device))
        return self._unchecked

    def check_replicas(self, tensors):
        """Compares the replicated parameters across ranks (one all-reduce): (checked, spread) on the device."""
        key = (id(tensors), tensors.version)
        if self._replicas[0] != key:
            rows = [row if entry["role"] == vr.ROLE_PARAMETER else None
                    for entry, row in zip(tensors.entries, tensors.rows)]
            self._replicas = (key, Replicas(rows, home_device(tensors.rows), tensors.flat_groups))
        return self._replicas[1].check(tensors.rows)

    def take(self, tensors, step, replicas=None, writes=True, learning_rates=()):
        """Measures and folds one record at `step`, kept on the device until the next read.

        Args:
          tensors: the tracked `params.Tensors`.
          step: the record's step.
          replicas: `check_replicas`' result at this record, or None.
          writes: fold and keep the record (False: a rank that only takes
            part in the DTensor rows' reduction).
          learning_rates: host floats (at most `metadata.LEARNING_RATE_SLOTS`)
            for the record's header slots, written when it is read back.
        """
        grads = tensors.grads()
        measured = self._measurement.measure(tensors.rows, grads)
        self._to_device(measured.device)
        sharded = self._sharded_of(self._measurement.plan, tensors)  # the plan `measure` just used
        if sharded:
            sharded.reduce(measured, self._present_now(grads))
        if not writes:
            self.taken += 1
            return
        self._counters, self._floats, self._header, record = self._fold(
            (self._counters, self._floats, self._header), measured, int(step), self._step_origin,
            self._trainable_now(tensors), self._sized, (self._variables_record.names_hash, self._every_n_steps, self._writer_id))
        if self._replica_state is not None:
            first, spread, record = counters.fold_replicas(
                _OPS, *self._replica_state, record, *(replicas or self._not_checked()), self._step_origin + int(step))
            self._replica_state = (first, spread)
        # Host floats: kept here and written into the record when it is read
        # back (`_write`), so the step path copies nothing to the device.
        self._rates.append(tuple(learning_rates))
        self.taken += 1
        self.latest_step = int(step)
        self._pending.add(record, step)

    def poll(self):
        """Writes the records whose copy to the host has completed; never waits."""
        self._pending.poll()

    def flush(self):
        """Writes every pending record now (waits for the device)."""
        self._pending.flush()

    def _write(self, records):
        """Writes records read from the device, then runs the checks on each.

        Raises:
          Exception: the write failed; the tracker's `log()` makes it a
          warning. The counters live on the device and went on, so the
          records after these are whole.
        """
        for _, record in records:
            # Records arrive in the order they were taken: the oldest rates are theirs.
            rates = self._rates.popleft() if self._rates else ()
            if rates:
                first = md.HEADER_LEARNING_RATES
                record[0, first:first + len(rates)] = np.asarray(rates, np.float32).view(np.int32)
        writer = self.writer
        for step, record in records:
            if self._variables_record.due:
                write_variables(writer, self._name, self._variables_record.document, step)
                self._variables_record.mark_written()
            write_updates(writer, self._name, record, step, self._version)
        # Checked once all are written: a check that raises loses none of them.
        before, self.written = self.written, self.written + len(records)
        for number, (step, record) in enumerate(records, start=before + 1):
            self._on_written(number, self._variables_record.entries, record, step, self.latest_step)

    @property
    def writer(self):
        """The `SummaryWriter`: the user's, or the recorder's own, opened on first use."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter  # pylint: disable=import-outside-toplevel

            self._writer = SummaryWriter(self._log_dir)
        return self._writer

    def flush_writer(self):
        """Flushes the writer, if one was opened; a failure is a warning."""
        if self._writer is None:
            return
        try:
            self._writer.flush()
        except Exception as err:  # pylint: disable=broad-except
            warnings.warn("tb_varupdate: flushing tracker %r's writer failed: %s: %s"
                          % (self._name, type(err).__name__, err), stacklevel=3)

    def close_writer(self, quiet=False):
        """Closes the recorder's own writer, or flushes the user's; nothing if none was opened.

        Called by the tracker's `close()`, which does not raise: a failure is
        a warning, pointed (`stacklevel`) at the user's `close()` call.

        Args:
          quiet: no warning when closing fails (a write already failed and said so).
        """
        if self._writer is None:
            return
        try:
            if self._own_writer:
                self._writer.close()
            else:
                self._writer.flush()
        except Exception as err:  # pylint: disable=broad-except
            if quiet:
                return
            warnings.warn("tb_varupdate: closing tracker %r's writer failed: %s: %s"
                          % (self._name, type(err).__name__, err), stacklevel=3)

    @staticmethod
    def grad_column(record):
        """float32 NumPy [rows]: a written record's gradient norms (or GRAD_* sentinels)."""
        return np.ascontiguousarray(record[1:, md.GRAD_L2]).view(np.float32)
