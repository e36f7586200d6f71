"""FSDP1 (`FullyShardedDataParallel(use_orig_params=True)`, FULL_SHARD, gloo, two processes on 127.0.0.1).

Lightning and accelerate still wrap models this way. Each rank holds a
flattened slice of every parameter (maybe empty); the records must name the
parameters as the plain model does and hold the whole parameters' figures,
equal to the same model trained in one process.
"""

import datetime
import os

import numpy as np
import torch
import torch.distributed as dist

from demo import localnet
import readback
import tb_varupdate.torch as tbt
from tb_varupdate import metadata as md

WORLD = 2
STEPS = 10
BATCH = 8
DEADLINE_S = 150


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = torch.nn.Linear(3, 4)
        self.out = torch.nn.Linear(4, 1)

    def forward(self, x):
        return self.out(torch.relu(self.hidden(x)))


def _data():
    generator = torch.Generator().manual_seed(1)
    return [torch.rand(WORLD * BATCH, 3, generator=generator) for _ in range(STEPS)]


def _train(model, optimizer, batches):
    for x in batches:
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), x.sum(dim=1, keepdim=True)).backward()
        optimizer.step()


def _worker(rank, port, logdir, results):
    from torch.distributed.fsdp import FullyShardedDataParallel  # pylint: disable=import-outside-toplevel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    try:
        torch.manual_seed(0)
        model = FullyShardedDataParallel(_Net(), use_orig_params=True, device_id=torch.device("cpu"))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        tracker = tbt.ParameterUpdateTracker(model, log_dir=os.path.join(logdir, "fsdp1"), on_stuck="ignore")
        tracker.attach(optimizer)
        _train(model, optimizer, [x[rank * BATCH:(rank + 1) * BATCH] for x in _data()])
        tracker.close()
        torch.save({"written": tracker.records_written,
                    "local": {n: tuple(p.shape) for n, p in model.named_parameters()}},
                   os.path.join(results, "rank%d.pt" % rank))
    finally:
        dist.destroy_process_group()


def test_fsdp1_orig_params_are_named_and_measured_whole(tmp_path):
    logdir, results = tmp_path / "logs", tmp_path / "results"
    results.mkdir()
    localnet.spawn_bounded(_worker, (str(logdir), str(results)), WORLD, DEADLINE_S)
    ranks = [torch.load(results / ("rank%d.pt" % rank)) for rank in range(WORLD)]
    assert [r["written"] for r in ranks] == [STEPS, 0]
    assert ranks[0]["local"]["_fsdp_wrapped_module.hidden.bias"] == (0,)  # rank 0 holds none of it
    torch.manual_seed(0)
    model = _Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with tbt.ParameterUpdateTracker(model, log_dir=logdir / "single", on_stuck="ignore") as tracker:
        tracker.attach(optimizer)
        _train(model, optimizer, _data())
    sharded, single = readback.records(logdir / "fsdp1"), readback.records(logdir / "single")
    assert len(sharded) == len(single) == STEPS
    for (_, a), (_, b) in zip(sharded, single):
        for column in (md.DELTA_L2, md.VALUE_L2, md.GRAD_L2):
            np.testing.assert_allclose(a.floats[:, column], b.floats[:, column], rtol=1e-5, atol=0)
    rows = readback.verdicts(logdir, run="fsdp1")
    assert {name: (row["status"], row["gradient"], row["shape"]) for name, row in rows.items()} == {
        "hidden.weight": ("updating", "present", [4, 3]), "hidden.bias": ("updating", "present", [4]),
        "out.weight": ("updating", "present", [1, 4]), "out.bias": ("updating", "present", [1]),
    }
