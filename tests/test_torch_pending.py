"""Records kept on the device and read every `read_every` records: every step written, checks when read.

Real training on the CPU, and on CUDA where present (`torch_devices`): the
CPU runs the same schedule as a GPU (a ring
of records, one copy to the host per `read_every` records), read back by
TensorBoard's loader.
"""

import subprocess
import sys

import numpy as np
import pytest
import torch

import readback
import tb_varupdate.torch as tbt
from tb_varupdate.writers.torch import pending as _torch_pending
from tb_varupdate.errors import StuckVariableError
from torch_devices import DEVICES

RUN = "run"


def _train(model, optimizer, steps, tracker, fail_at=None):
    device = next(model.parameters()).device
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0)).to(device)
    y = torch.ones(16, 1, device=device)
    for step in range(steps):
        if step == fail_at:
            raise RuntimeError("the training loop failed")
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        tracker.log(step)


def _model(device="cpu"):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1).to(device)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def test_default_read_every_is_one_on_the_cpu():
    model, _ = _model()
    with pytest.warns(UserWarning, match="wrote no records"):
        with tbt.ParameterUpdateTracker(model, log_dir="unused") as tracker:
            assert tracker.read_every == 1


@pytest.mark.parametrize("read_every", [0, -1, 2.0, True])
def test_read_every_must_be_a_positive_int(read_every):
    model, _ = _model()
    with pytest.raises(ValueError, match=r"read_every must be an int >= 1\. Received: read_every="):
        tbt.ParameterUpdateTracker(model, log_dir="unused", read_every=read_every)


@pytest.mark.parametrize("device", DEVICES)
def test_every_step_is_its_own_record_after_close(tmp_path, device):
    model, optimizer = _model(device)
    tracker = tbt.ParameterUpdateTracker(model, log_dir=tmp_path / RUN, read_every=8)
    _train(model, optimizer, 21, tracker)
    # Two full reads started; five records still on the device. A GPU's copies finish when they finish.
    assert tracker.records_written == 16 if device == "cpu" else tracker.records_written in (0, 8, 16)
    tracker.close()
    records = readback.records(tmp_path / RUN)
    assert [step for step, _ in records] == list(range(21))
    assert [u.logged for _, u in records] == list(range(1, 22))
    assert readback.verdicts(tmp_path, run=RUN)["weight"]["changed_steps"] == 21


def test_records_are_the_same_whenever_they_are_read(tmp_path):
    written = {}
    for read_every in (1, 5):
        model, optimizer = _model()
        with tbt.ParameterUpdateTracker(model, log_dir=tmp_path / str(read_every), read_every=read_every) as tracker:
            _train(model, optimizer, 12, tracker)
        written[read_every] = readback.records(tmp_path / str(read_every))
    assert [step for step, _ in written[1]] == [step for step, _ in written[5]] == list(range(12))
    for (_, one), (_, five) in zip(written[1], written[5]):
        assert np.array_equal(one.floats, five.floats, equal_nan=True) and np.array_equal(one.ints, five.ints)


def test_an_exception_in_training_still_writes_what_was_pending(tmp_path):
    model, optimizer = _model()
    with pytest.raises(RuntimeError, match="training loop failed"):
        with tbt.ParameterUpdateTracker(model, log_dir=tmp_path / RUN, read_every=32) as tracker:
            _train(model, optimizer, 20, tracker, fail_at=13)
    assert [step for step, _ in readback.records(tmp_path / RUN)] == list(range(13))


def test_a_script_that_never_closes_writes_its_records_at_exit(tmp_path):
    code = (
        "import sys, torch\n"
        "sys.modules['tensorflow'] = None\n"
        "import tb_varupdate.torch as tbt\n"
        "model = torch.nn.Linear(3, 1)\n"
        "opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "tracker = tbt.ParameterUpdateTracker(model, log_dir=sys.argv[1], read_every=32)\n"
        "tracker.attach(opt)\n"
        "for _ in range(7):\n"
        "    opt.zero_grad(); model(torch.ones(4, 3)).sum().backward(); opt.step()\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / RUN)], capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 0, result.stderr
    assert [step for step, _ in readback.records(tmp_path / RUN)] == list(range(7))


@pytest.mark.parametrize("device", DEVICES)
def test_the_stuck_check_runs_at_the_first_read_after_stuck_after(tmp_path, device):
    model, _ = _model(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    tracker = tbt.ParameterUpdateTracker(model, log_dir=tmp_path / RUN, stuck_after=3, read_every=4,
                                         on_stuck="raise")
    # Raised at the read of records 0-3, not before: at once on the CPU, when the copy is done on a GPU.
    seen_at = "3" if device == "cpu" else r"[3-9]"
    with pytest.raises(StuckVariableError, match=r"after 3 records \(step 2, seen at step %s\)" % seen_at) as raised:
        _train(model, optimizer, 10, tracker)
    assert "weight: never_updated" in str(raised.value)
    assert tracker.records_written == 4
    tracker.close()


def test_results_reach_the_host_only_at_read_points(tmp_path, monkeypatch):
    # Every way a torch tensor's values reach Python, counted (and still done).
    reads = []

    def counting(name, original):
        def read(*args, **kwargs):
            reads.append(name)
            return original(*args, **kwargs)
        return read

    for name in ("item", "tolist", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, counting(name, getattr(torch.Tensor, name)))
    monkeypatch.setattr(torch, "equal", counting("equal", torch.equal))
    transfers = []
    monkeypatch.setattr(_torch_pending, "_Transfer", counting("transfer", _torch_pending._Transfer))
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = torch.randn(16, 3), torch.ones(16, 1)
    tracker = tbt.ParameterUpdateTracker(model, log_dir=tmp_path / RUN, read_every=4)
    per_record = []
    for step in range(12):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        del reads[:]
        tracker.log(step)
        per_record.append(list(reads))
    tracker.close()
    read_points = [i for i, found in enumerate(per_record) if "transfer" in found]
    assert read_points == [3, 7, 11]
    assert all(found == [] for i, found in enumerate(per_record) if i not in read_points), per_record
    assert [step for step, _ in readback.records(tmp_path / RUN)] == list(range(12))
