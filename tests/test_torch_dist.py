"""`_torch_dist` in this process, over a one-rank gloo group: the DTensor path without spawning workers.

The two-process runs (tests/test_torch_fsdp.py, test_torch_tp.py,
test_torch_ddp.py, test_torch_fsdp1.py) check the sums across ranks; here a
one-rank mesh checks that a DTensor tracker writes what a plain one does, and
that a layout the tracker cannot add up stops it with one warning.
"""

import datetime
import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist

from demo import localnet
import readback
import tb_varupdate.torch as tbt
from tb_varupdate.format import metadata as md


@pytest.fixture
def one_rank():
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:%d" % localnet.free_port(), rank=0, world_size=1,
                            timeout=datetime.timedelta(seconds=30))
    try:
        yield
    finally:
        dist.destroy_process_group()


def _train(model, log_dir, steps=4):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with tbt.ParameterUpdateTracker(model, log_dir=log_dir, on_stuck="ignore") as tracker:
        tracker.attach(optimizer)
        generator = torch.Generator().manual_seed(0)
        for _ in range(steps):
            x = torch.rand(8, 3, generator=generator)
            optimizer.zero_grad()
            model(x).pow(2).mean().backward()
            optimizer.step()
    return tracker


def test_a_fully_sharded_model_on_one_rank_writes_what_the_plain_model_does(one_rank, tmp_path):
    from torch.distributed.fsdp import fully_shard  # pylint: disable=import-outside-toplevel

    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    torch.manual_seed(0)
    sharded = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    fully_shard(sharded)
    assert all(type(p).__name__ == "DTensor" for p in sharded.parameters())
    _train(plain, tmp_path / "plain")
    _train(sharded, tmp_path / "sharded")
    a, b = readback.records(tmp_path / "sharded"), readback.records(tmp_path / "plain")
    assert len(a) == len(b) == 4
    for (_, x), (_, y) in zip(a, b):
        np.testing.assert_allclose(x.floats[:, :md.CHANGED_STEPS], y.floats[:, :md.CHANGED_STEPS], rtol=1e-6)
        np.testing.assert_array_equal(x.ints[:, md.CHANGED_STEPS:md.MAX_RELATIVE_UPDATE],
                                      y.ints[:, md.CHANGED_STEPS:md.MAX_RELATIVE_UPDATE])


def test_a_layout_that_cannot_be_added_up_stops_the_tracker_with_one_warning(one_rank, tmp_path):
    from torch.distributed.device_mesh import init_device_mesh  # pylint: disable=import-outside-toplevel
    from torch.distributed.tensor import DTensor, Partial  # pylint: disable=import-outside-toplevel

    mesh = init_device_mesh("cpu", (1,))
    weight = torch.nn.Parameter(DTensor.from_local(torch.ones(3), mesh, [Partial()]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with tbt.ParameterUpdateTracker([("w", weight)], log_dir=tmp_path / "run") as tracker:
            for step in range(3):
                tracker.log(step)
    messages = [str(w.message) for w in caught]
    stopped = [m for m in messages if "stopped recording" in m]
    assert len(stopped) == 1 and "cannot add up a parameter with a Partial placement" in stopped[0]
    assert not [m for m in messages if "logging failed" in m]
    assert tracker.records_written == 0
