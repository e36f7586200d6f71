"""`Recorder`: the PyTorch tracker's counters and writer, and one record's measure, fold and write.

The counters are `counters.fold`'s, the same as every writer's, folded by
`_torch_ops.TorchOps` over torch CPU tensors. A record's new state is kept
only once the record is written, so a record that failed to write is not
counted (and the next one spans its change too). The `SummaryWriter` is
opened at the first record, not at construction, so a tracker that never
records leaves no empty run behind. Imports torch, never TensorFlow.
"""

import random
import warnings

import torch

from tb_varupdate import counters
from tb_varupdate import variables_record as vr
from tb_varupdate._torch_measure import EXACT, Measurement
from tb_varupdate._torch_ops import TorchOps, to_torch
from tb_varupdate._torch_writer import write_updates, write_variables

_OPS = TorchOps()


class Recorder:
    """Writes records of a `_torch_params.Tensors` under one tracker name.

    Args:
      name: the tracker's name (tags `varupdate/<name>`).
      every_n_steps: the tracker's record interval (in the record's header).
      delta: "exact" or "checksum".
      log_dir: a directory for a `SummaryWriter` of the recorder's own, or None.
      writer: the user's `SummaryWriter`, or None.

    Raises:
      ValueError: `delta` is neither.
    """

    def __init__(self, name, every_n_steps, delta, log_dir, writer):
        self._name, self._every_n_steps, self._delta = name, every_n_steps, delta
        self._measurement = Measurement(delta)
        self._log_dir, self._writer, self._own_writer = log_dir, writer, writer is None
        self._writer_id = random.SystemRandom().randrange(1, 2**31)
        self._counters, self._floats = (to_torch(a) for a in counters.initial_state(0))
        self._header = to_torch(counters.initial_header())
        self._names_written = None
        self.document = None  # the variables record (JSON bytes), re-encoded when rows join
        self._names_hash = self._sized = None

    @property
    def logged(self):
        """Records written."""
        return int(self._header[counters.LOGGED])

    def refresh(self, tensors):
        """`tensors.refresh()`, with counters for the rows it appended, from their `joined` record on."""
        added = tensors.refresh(self.logged)
        if added:
            self._grow(added, tensors)

    def _grow(self, added, tensors):
        """Counters for the `added` rows just appended to `tensors`, and the variables record anew."""
        new_counters, new_floats = (to_torch(a) for a in counters.initial_state(added))
        self._counters = torch.cat([self._counters, new_counters])
        self._floats = torch.cat([self._floats, new_floats])
        self.document, self._names_hash = vr.encode_variables(tensors.entries, self._writer_id)
        self._sized = torch.tensor([row.is_float and self._delta == EXACT for row in tensors.rows])

    def measure(self, tensors):
        """This record's measurements (`Measurement.measure`'s NumPy arrays)."""
        return self._measurement.measure(tensors.rows, tensors.grads())

    def write(self, measured, step, tensors):
        """Folds `measured` into the counters and writes the record at `step`.

        Returns:
          The record written, int32 NumPy [1 + rows, NUM_COLUMNS].
        """
        measured = counters.Measured(**{key: torch.from_numpy(value) for key, value in measured.items()})
        state = counters.fold(
            _OPS, self._counters, self._floats, self._header, measured, torch.tensor(step, dtype=torch.int64),
            tensors.trainable(), self._sized, self._names_hash, self._every_n_steps, self._writer_id,
        )
        record = state[3].numpy()
        writer = self.writer
        if self._names_written != self._names_hash:
            write_variables(writer, self._name, self.document, step)
            self._names_written = self._names_hash
        write_updates(writer, self._name, record, step)
        # Kept only once written: a record that failed to write is not counted.
        self._counters, self._floats, self._header = state[:3]
        return record

    @property
    def writer(self):
        """The `SummaryWriter`: the user's, or the recorder's own, opened on first use."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter  # pylint: disable=import-outside-toplevel

            self._writer = SummaryWriter(self._log_dir)
        return self._writer

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
