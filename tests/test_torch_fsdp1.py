"""FSDP1 (`FullyShardedDataParallel(use_orig_params=True)`, FULL_SHARD, gloo, two processes on 127.0.0.1).

Lightning and accelerate still wrap models this way. Each rank holds a
flattened slice of every parameter (maybe empty); the records must name the
parameters as the plain model does and hold the whole parameters' figures,
equal to the same model trained in one process.
"""

import os

import torch

import gloo_ranks
import readback

STEPS = 10


def _worker(rank, port, logdir, results):
    from torch.distributed.fsdp import FullyShardedDataParallel  # pylint: disable=import-outside-toplevel

    with gloo_ranks.process_group(rank, port):
        torch.manual_seed(0)
        model = FullyShardedDataParallel(gloo_ranks.Net(), use_orig_params=True, device_id=torch.device("cpu"))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        tracker = gloo_ranks.tracked(model, optimizer, os.path.join(logdir, "fsdp1"),
                                     gloo_ranks.shard(gloo_ranks.data(STEPS), rank))
        gloo_ranks.save(results, rank, {"written": tracker.records_written,
                                        "local": {n: tuple(p.shape) for n, p in model.named_parameters()}})


def test_fsdp1_orig_params_are_named_and_measured_whole(tmp_path):
    logdir, ranks = gloo_ranks.spawn(_worker, tmp_path)
    assert [r["written"] for r in ranks] == [STEPS, 0]
    assert ranks[0]["local"]["_fsdp_wrapped_module.hidden.bias"] == (0,)  # rank 0 holds none of it
    torch.manual_seed(0)
    model = gloo_ranks.Net()
    gloo_ranks.single(logdir, model, torch.optim.SGD(model.parameters(), lr=0.1), gloo_ranks.data(STEPS))
    gloo_ranks.compare_with_single(logdir, "fsdp1", STEPS)
    rows = readback.verdicts(logdir, run="fsdp1")
    assert {name: (row["status"], row["gradient"], row["shape"]) for name, row in rows.items()} == {
        "hidden.weight": ("updating", "present", [4, 3]), "hidden.bias": ("updating", "present", [4]),
        "out.weight": ("updating", "present", [1, 4]), "out.bias": ("updating", "present", [1]),
    }
