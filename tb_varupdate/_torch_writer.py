"""Writes `varupdate` records through `torch.utils.tensorboard.SummaryWriter`.

Torch's own summary helpers do not set `SummaryMetadata.data_class`, and
TensorBoard serves a third-party plugin's tensors only when it is set, so the
records are built as `Summary` protos here (with `metadata.py`'s metadata)
and handed to the writer's file writer. That hand-over is private API of
`SummaryWriter`: it is isolated in `_file_writer` with an error that says
so. No TensorFlow import: the protos come from `tensorboard.compat.proto`.

TensorBoard's event files carry a CRC32C of every record, which its record
writer computes in pure Python (`tensorboard.compat.tensorflow_stub`): ~3 ms
for one 300-tensor record, on a thread that holds the GIL while training
runs. Where `google-crc32c` is installed (the `torch` extra), the record
writer is given its native CRC instead: the same bytes (tests compare them).
"""

import numpy as np

from tensorboard.compat.proto import summary_pb2
from tensorboard.compat.tensorflow_stub import pywrap_tensorflow
from tensorboard.summary.writer import record_writer
from tensorboard.util import tensor_util

from tb_varupdate import metadata as md


def native_masked_crc32c(data):
    """TensorBoard's masked CRC32C of `data` (bytes), by `google_crc32c`; None when that is not installed."""
    try:
        import google_crc32c  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    crc = google_crc32c.value(bytes(data))
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def use_native_crc():
    """Gives TensorBoard's record writer the native CRC, if installed and the writer still has the Python one.

    Returns:
      Whether the record writer computes its CRCs natively now.
    """
    if record_writer.masked_crc32c is native_masked_crc32c:
        return True
    if record_writer.masked_crc32c is not pywrap_tensorflow.masked_crc32c or native_masked_crc32c(b"") is None:
        return False  # replaced by someone else, or no native CRC here: left as it is
    record_writer.masked_crc32c = native_masked_crc32c
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


def _summary(tag, array, kind, version=md.FORMAT_VERSION):
    value = summary_pb2.Summary.Value(
        tag=tag, metadata=md.create_summary_metadata(kind, version), tensor=tensor_util.make_tensor_proto(array)
    )
    return summary_pb2.Summary(value=[value])


def write_updates(writer, name, record, step, version=md.FORMAT_VERSION):
    """Writes one updates record (int32 NumPy [1 + V, NUM_COLUMNS], or NUM_COLUMNS_V4 for version 4) at `step`."""
    summary = _summary(md.updates_tag(name), np.asarray(record, np.int32), md.KIND_UPDATES, version)
    _file_writer(writer).add_summary(summary, int(step))


def write_variables(writer, name, document, step):
    """Writes the variables record (the JSON bytes of `variables_record.encode_variables`) at `step`."""
    summary = _summary(md.variables_tag(name), np.asarray(document, dtype=object), md.KIND_VARIABLES)
    _file_writer(writer).add_summary(summary, int(step))
