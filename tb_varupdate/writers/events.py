"""Writes `varupdate` records into event files without TensorFlow: the writers' shared event-file writer.

Records are built as `Summary` protos here (with `metadata.py`'s metadata:
TensorBoard serves a third-party plugin's tensors only when
`SummaryMetadata.data_class` is set, which torch's own summary helpers do not
set) and handed to a writer's file writer: a
`torch.utils.tensorboard.SummaryWriter`'s (private API of `SummaryWriter`,
isolated in `_file_writer` with an error that says so) or `EventFiles`, an
event file of its own. A write that fails (a full disk, a closed file) is
raised as `WriteFailed`, so the tracker can say which records were lost
rather than report a raw I/O error. No TensorFlow import: the protos come
from `tensorboard.compat.proto`.

TensorBoard's record writer computes each record's CRC-32C in pure Python
(`tensorboard.compat.tensorflow_stub`): ~3 ms for one 300-tensor record, on
its writer thread, which holds the GIL while training runs. Where
`google-crc32c` is installed, the record writer is given the native one of
`crc32c` instead: the same bytes (tests compare them).
"""

import time

import numpy as np

from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.compat.tensorflow_stub import pywrap_tensorflow
from tensorboard.summary.writer import event_file_writer
from tensorboard.summary.writer import record_writer
from tensorboard.util import tensor_util

from tb_varupdate.format import crc32c
from tb_varupdate.format import metadata as md


def use_native_crc():
    """Gives TensorBoard's record writer the native CRC, if installed and the writer still has the Python one.

    Returns:
      Whether the record writer computes its CRCs natively now.
    """
    if record_writer.masked_crc32c is crc32c.masked_crc32c:
        return True
    if record_writer.masked_crc32c is not pywrap_tensorflow.masked_crc32c or not crc32c.NATIVE:
        return False  # replaced by someone else, or no native CRC here: left as it is
    record_writer.masked_crc32c = crc32c.masked_crc32c
    return True


class WriterError(RuntimeError):
    """The given `SummaryWriter` does not expose what this module writes through."""


def _file_writer(writer):
    """The `SummaryWriter`'s file writer (private API, checked here once)."""
    use_native_crc()
    get = getattr(writer, "_get_file_writer", None)
    file_writer = get() if callable(get) else None
    if file_writer is None or not callable(getattr(file_writer, "add_summary", None)):
        raise WriterError(
            "tb_varupdate writes through SummaryWriter._get_file_writer().add_summary(summary, "
            "step), which this torch version's SummaryWriter does not have (received %s). "
            "Use torch.utils.tensorboard from torch>=2.1, or open an issue naming your "
            "torch version." % type(writer).__name__
        )
    return file_writer


class WriteFailed(RuntimeError):
    """The writer could not take a record; `cause` is the error it raised, `step` the record's (if known)."""

    def __init__(self, cause, step=None):
        super().__init__("%s: %s" % (type(cause).__name__, cause))
        self.cause = cause
        self.step = step


def _add(writer, summary, step):
    """Hands `summary` to the writer's file writer; a refusal is `WriteFailed`."""
    file_writer = _file_writer(writer)
    try:
        file_writer.add_summary(summary, int(step))
    except Exception as err:  # pylint: disable=broad-except
        # SummaryWriter writes in a background thread: the error of a write
        # that failed there (ENOSPC is a TensorFlow ResourceExhaustedError
        # when TensorFlow is installed, an OSError when not) is raised here,
        # by a later record's add_summary, and again by every one after it.
        raise WriteFailed(err, int(step)) from err


def _summary(tag, array, kind, version=md.FORMAT_VERSION):
    value = summary_pb2.Summary.Value(
        tag=tag, metadata=md.create_summary_metadata(kind, version), tensor=tensor_util.make_tensor_proto(array)
    )
    return summary_pb2.Summary(value=[value])


def write_updates(writer, name, record, step, version=md.FORMAT_VERSION):
    """Writes one updates record (int32 NumPy [1 + V, NUM_COLUMNS], or NUM_COLUMNS_V4 for version 4) at `step`.

    Raises:
      WriteFailed: the writer refused it (its background thread met a full disk).
    """
    _add(writer, _summary(md.updates_tag(name), np.asarray(record, np.int32), md.KIND_UPDATES, version), step)


def write_variables(writer, name, document, step):
    """Writes the variables record (the JSON bytes of `format.variables.encode_variables`) at `step`.

    Raises:
      WriteFailed: the writer refused it.
    """
    _add(writer, _summary(md.variables_tag(name), np.asarray(document, dtype=object), md.KIND_VARIABLES), step)


class EventFiles:
    """An event file of its own in `logdir`, for writers with no `SummaryWriter` (the NumPy reference).

    TensorBoard's `EventFileWriter`, which writes in a background thread; the
    writers here hand it summaries as they hand a `SummaryWriter`'s file
    writer.
    """

    def __init__(self, logdir):
        use_native_crc()
        self._writer = event_file_writer.EventFileWriter(logdir)

    def _get_file_writer(self):
        return self

    def add_summary(self, summary, step):
        self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def flush(self):
        self._writer.flush()

    def close(self):
        self._writer.close()
