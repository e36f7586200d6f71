"""The CRC-32C of event records: the native one gives TensorBoard's bytes, and files both loaders read."""

import os

import pytest
import torch
from tensorboard.compat.tensorflow_stub import pywrap_tensorflow

import readback
import tb_varupdate.torch as tbt
from tb_varupdate.format import crc32c
from tb_varupdate.writers import events as _torch_writer


@pytest.mark.parametrize("size", [0, 1, 7, 64, 20_000])
def test_the_masked_crc_is_tensorboards(size):
    data = os.urandom(size)
    assert crc32c.masked_crc32c(data) == pywrap_tensorflow.masked_crc32c(data)
    assert crc32c.update(crc32c.update(0, data[:3]), data[3:]) == pywrap_tensorflow.crc32c(data)


def test_the_torch_writer_writes_the_same_bytes_with_either_crc(tmp_path):
    assert crc32c.NATIVE, "google-crc32c is in the test extra"
    from tensorboard.summary.writer import record_writer

    payload = os.urandom(5000)
    written = {}
    for name, crc in (("python", pywrap_tensorflow.masked_crc32c), ("native", crc32c.masked_crc32c)):
        previous, record_writer.masked_crc32c = record_writer.masked_crc32c, crc
        try:
            with open(tmp_path / name, "wb") as handle:
                record_writer.RecordWriter(handle).write(payload)
        finally:
            record_writer.masked_crc32c = previous
        written[name] = (tmp_path / name).read_bytes()
    assert written["python"] == written["native"]
    assert _torch_writer.use_native_crc() and record_writer.masked_crc32c is crc32c.masked_crc32c
    model = torch.nn.Linear(3, 1)
    with tbt.ParameterUpdateTracker(model, log_dir=tmp_path / "run") as tracker:
        for step in range(3):
            tracker.log(step)
    assert [step for step, _ in readback.records(tmp_path / "run")] == [0, 1, 2]
