"""Tensor parallel (`ColwiseParallel` / `RowwiseParallel`, gloo, two processes on 127.0.0.1).

The first layer's weight and bias are sharded by rows, the second's weight by
columns and its bias replicated: the records must hold the whole parameters'
figures, equal to the same MLP trained in one process, the replicated bias
counted once and compared across the ranks as a replica.
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
STEPS = 10  # the replica check runs at the 10th record
DEADLINE_S = 150


class _Mlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(3, 8)
        self.fc2 = torch.nn.Linear(8, 1)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _data():
    generator = torch.Generator().manual_seed(1)
    return [torch.rand(16, 3, generator=generator) for _ in range(STEPS)]


def _train(model, optimizer, batches):
    for x in batches:
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), x.sum(dim=1, keepdim=True)).backward()
        optimizer.step()


def _worker(rank, port, logdir, results):
    from torch.distributed.device_mesh import init_device_mesh  # pylint: disable=import-outside-toplevel
    from torch.distributed.tensor.parallel import (  # pylint: disable=import-outside-toplevel
        ColwiseParallel, RowwiseParallel, parallelize_module)

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    try:
        torch.manual_seed(0)
        model = _Mlp()
        mesh = init_device_mesh("cpu", (WORLD,))
        parallelize_module(model, mesh, {"fc1": ColwiseParallel(), "fc2": RowwiseParallel()})
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        tracker = tbt.ParameterUpdateTracker(model, log_dir=os.path.join(logdir, "tp"), on_stuck="ignore")
        tracker.attach(optimizer)
        _train(model, optimizer, _data())
        tracker.close()
        placements = {name: str(p.placements) for name, p in model.named_parameters()}
        torch.save({"written": tracker.records_written, "placements": placements},
                   os.path.join(results, "rank%d.pt" % rank))
    finally:
        dist.destroy_process_group()


def test_tensor_parallel_mlp_records_the_whole_parameters(tmp_path):
    logdir, results = tmp_path / "logs", tmp_path / "results"
    results.mkdir()
    localnet.spawn_bounded(_worker, (str(logdir), str(results)), WORLD, DEADLINE_S)
    ranks = [torch.load(results / ("rank%d.pt" % rank)) for rank in range(WORLD)]
    assert [r["written"] for r in ranks] == [STEPS, 0]
    assert ranks[0]["placements"] == {"fc1.weight": "(Shard(dim=0),)", "fc1.bias": "(Shard(dim=0),)",
                                      "fc2.weight": "(Shard(dim=1),)", "fc2.bias": "(Replicate(),)"}
    torch.manual_seed(0)
    model = _Mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with tbt.ParameterUpdateTracker(model, log_dir=logdir / "single", on_stuck="ignore") as tracker:
        tracker.attach(optimizer)
        _train(model, optimizer, _data())
    sharded, single = readback.records(logdir / "tp"), readback.records(logdir / "single")
    assert len(sharded) == len(single) == STEPS
    for (_, a), (_, b) in zip(sharded, single):
        for column in (md.DELTA_L2, md.VALUE_L2, md.GRAD_L2):
            np.testing.assert_allclose(a.floats[:, column], b.floats[:, column], rtol=1e-5, atol=0)
    rows = readback.verdicts(logdir, run="tp")
    assert {name: (row["status"], row["gradient"]) for name, row in rows.items()} == {
        name: ("updating", "present") for name in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")}
    assert rows["fc1.weight"]["shape"] == [8, 3]
    # The replicated bias was compared across the ranks (equal); the sharded ones were not.
    assert rows["fc2.bias"]["replica_spread"] == 0.0
    assert rows["fc1.weight"]["replica_spread"] is None
