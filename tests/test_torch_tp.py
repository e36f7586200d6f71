"""Tensor parallel (`ColwiseParallel` / `RowwiseParallel`, gloo, two processes on 127.0.0.1).

The first layer's weight and bias are sharded by rows, the second's weight by
columns and its bias replicated: the records must hold the whole parameters'
figures, equal to the same MLP trained in one process, the replicated bias
counted once and compared across the ranks as a replica.
"""

import os

import torch

import gloo_ranks
from gloo_ranks import WORLD
import readback

STEPS = 10  # the replica check runs at the 10th record


def _mlp():
    torch.manual_seed(0)
    return gloo_ranks.Net(names=("fc1", "fc2"), width=8)


def _worker(rank, port, logdir, results):
    from torch.distributed.device_mesh import init_device_mesh  # pylint: disable=import-outside-toplevel
    from torch.distributed.tensor.parallel import (  # pylint: disable=import-outside-toplevel
        ColwiseParallel, RowwiseParallel, parallelize_module)

    with gloo_ranks.process_group(rank, port):
        model = _mlp()
        mesh = init_device_mesh("cpu", (WORLD,))
        parallelize_module(model, mesh, {"fc1": ColwiseParallel(), "fc2": RowwiseParallel()})
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        tracker = gloo_ranks.tracked(model, optimizer, os.path.join(logdir, "tp"), gloo_ranks.data(STEPS))
        placements = {name: str(p.placements) for name, p in model.named_parameters()}
        gloo_ranks.save(results, rank, {"written": tracker.records_written, "placements": placements})


def test_tensor_parallel_mlp_records_the_whole_parameters(tmp_path):
    logdir, ranks = gloo_ranks.spawn(_worker, tmp_path)
    assert [r["written"] for r in ranks] == [STEPS, 0]
    assert ranks[0]["placements"] == {"fc1.weight": "(Shard(dim=0),)", "fc1.bias": "(Shard(dim=0),)",
                                      "fc2.weight": "(Shard(dim=1),)", "fc2.bias": "(Replicate(),)"}
    model = _mlp()
    gloo_ranks.single(logdir, model, torch.optim.SGD(model.parameters(), lr=0.1), gloo_ranks.data(STEPS))
    gloo_ranks.compare_with_single(logdir, "tp", STEPS)
    rows = readback.verdicts(logdir, run="tp")
    assert {name: (row["status"], row["gradient"]) for name, row in rows.items()} == {
        name: ("updating", "present") for name in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")}
    assert rows["fc1.weight"]["shape"] == [8, 3]
    # The replicated bias was compared across the ranks (equal); the sharded ones were not.
    assert rows["fc2.bias"]["replica_spread"] == 0.0
    assert rows["fc1.weight"]["replica_spread"] is None
