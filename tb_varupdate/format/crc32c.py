"""CRC-32C of event-file records: native where `google-crc32c` is installed, TensorBoard's pure Python otherwise.

Every TFRecord carries two masked CRC-32Cs. TensorBoard computes them in pure
Python whenever TensorFlow is absent (`tensorboard.compat.tensorflow_stub`),
~0.1 s per MB: a 300-tensor updates record cost ~3 ms to write, and checking a
logdir's records as long again as reading it. `google-crc32c` (the `torch`
and `test` extras) gives the same values natively. No framework import.
"""

from tensorboard.compat.tensorflow_stub import pywrap_tensorflow as _stub

try:
    import google_crc32c as _native
except ImportError:  # optional: the pure-Python CRC gives the same values
    _native = None

NATIVE = _native is not None


def update(crc, data):
    """The CRC-32C `crc` (0 to start) extended by `data` (bytes)."""
    if _native is not None:
        return _native.extend(crc, bytes(data))
    return _stub.crc_update(crc, data)


def mask(crc):
    """TFRecord's masked form of a finished CRC-32C."""
    crc &= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def masked_crc32c(data):
    """The masked CRC-32C of `data`, as TensorBoard's `masked_crc32c` computes it."""
    return mask(update(0, data))
