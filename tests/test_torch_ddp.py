"""DistributedDataParallel (gloo, two processes on 127.0.0.1): one exact series, from rank 0.

A parameter unused on every rank (`find_unused_parameters=True`) keeps
`grad is None` after every backward() on every rank, and must come out
`never_updated` with gradient `missing`, named as in the plain model.
"""

import os

import torch

import gloo_ranks
import readback
import tb_varupdate.torch as tbt
from tb_varupdate import cli

STEPS = 12


def _net():
    torch.manual_seed(0)
    return gloo_ranks.Net(unused=True)


def _batches(rank):
    return gloo_ranks.data(STEPS, rows=8, seed=rank)  # each rank its own data


def _worker(rank, port, logdir, results):
    with gloo_ranks.process_group(rank, port):
        model = _net()
        ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        grads_none = set()

        def note_missing_grads():
            grads_none.update(name for name, p in model.named_parameters() if p.grad is None)

        tracker = gloo_ranks.tracked(ddp, optimizer, os.path.join(logdir, "ddp"), _batches(rank),
                                     after_backward=note_missing_grads)
        changed = sorted(name for name, p in model.named_parameters() if not torch.equal(before[name], p))
        gloo_ranks.save(results, rank, {"changed": changed, "grads_none": sorted(grads_none),
                                        "written": tracker.records_written,
                                        "weights": {n: p.detach() for n, p in model.named_parameters()}})


def test_ddp_unused_parameter_is_never_updated_with_gradient_missing(tmp_path):
    logdir, ranks = gloo_ranks.spawn(_worker, tmp_path)
    # DDP keeps the replicas equal, so rank 0's series stands for every rank.
    assert all(torch.equal(ranks[0]["weights"][n], ranks[1]["weights"][n]) for n in ranks[0]["weights"])
    assert [r["written"] for r in ranks] == [STEPS, 0]  # rank 1 logs nothing
    assert len(list((logdir / "ddp").glob("events.out.tfevents.*"))) == 1
    rows = readback.verdicts(logdir, run="ddp")
    assert {name: (row["status"], row["gradient"]) for name, row in rows.items()} == {
        "hidden.weight": ("updating", "present"), "hidden.bias": ("updating", "present"),
        "out.weight": ("updating", "present"), "out.bias": ("updating", "present"),
        "unused.weight": ("never_updated", "missing"), "unused.bias": ("never_updated", "missing"),
    }
    assert {name for name, row in rows.items() if row["changed_steps"]} == set(ranks[0]["changed"])
    assert ranks[0]["grads_none"] == ranks[1]["grads_none"] == ["unused.bias", "unused.weight"]
    assert all(row["logged_steps"] == STEPS for row in rows.values())
    assert rows["unused.weight"]["problem"]


def test_pairs_from_a_ddp_model_lose_the_module_prefix(tmp_path):
    w = torch.nn.Parameter(torch.ones(2))
    with tbt.ParameterUpdateTracker([("module.layer.w", w)], log_dir=tmp_path / "run") as tracker:
        tracker.log(0)
    assert set(readback.verdicts(tmp_path, run="run")) == {"layer.w"}


def _diverging_worker(rank, port, logdir, results):
    """DDP with the tracker on every rank; rank 1 writes to `out.bias` alone after step 4."""
    with gloo_ranks.process_group(rank, port):
        model = _net()
        ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)

        def diverge(step):
            if step == 4 and rank == 1:
                with torch.no_grad():
                    model.out.bias.add_(0.25)  # DDP syncs gradients, never values: the copies part

        gloo_ranks.tracked(ddp, optimizer, os.path.join(logdir, "ddp"), _batches(rank), after_step=diverge)
        gloo_ranks.save(results, rank, {"bias": model.out.bias.detach()})


def test_ddp_replica_written_on_one_rank_is_replicas_diverged(tmp_path):
    logdir, ranks = gloo_ranks.spawn(_diverging_worker, tmp_path)
    biases = [r["bias"] for r in ranks]
    rows = readback.verdicts(logdir, run="ddp")
    diverged = {name: row for name, row in rows.items() if row["status"] == "replicas_diverged"}
    assert set(diverged) == {"out.bias"}
    row = diverged["out.bias"]
    # The check runs every 10 records: the 10th record is step 9.
    assert row["problem"] and row["replicas_diverged_step"] == 9
    assert abs(row["replica_spread"] - abs(float(biases[1] - biases[0]))) < 1e-6
    assert "differ" in row["diagnosis"] and "step 9" in row["diagnosis"]
    assert all(r["replica_spread"] == 0.0 for name, r in rows.items() if name != "out.bias" and name.startswith(("hidden", "out")))
    # The unused layer accepted, the diverged bias alone fails `check`.
    assert cli.main(["check", str(logdir), "--allow", "^unused\\."]) == cli.EXIT_PROBLEMS
    assert cli.main(["check", str(logdir), "--allow", "^unused\\.", "--allow", "^out\\.bias$"]) == cli.EXIT_HEALTHY


def _rank0_only_worker(rank, port, logdir, results):
    """DDP with the tracker on rank 0 only (a common pattern): rank 0 still records, without replica checks."""
    import warnings  # pylint: disable=import-outside-toplevel

    with gloo_ranks.process_group(rank, port):
        ddp = torch.nn.parallel.DistributedDataParallel(_net(), find_unused_parameters=True)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if rank == 0:
                tracker = gloo_ranks.tracked(ddp, optimizer, os.path.join(logdir, "ddp"), _batches(rank))
            else:
                tracker = None
                gloo_ranks.train(ddp, optimizer, _batches(rank))
        gloo_ranks.save(results, rank, {"warnings": [str(w.message) for w in caught],
                                        "written": tracker.records_written if tracker else None})


def test_ddp_tracker_on_rank_0_only_records_without_replica_checks(tmp_path):
    logdir, (rank0, _) = gloo_ranks.spawn(_rank0_only_worker, tmp_path)
    assert rank0["written"] == STEPS
    off = [w for w in rank0["warnings"] if "does not compare the parameters' replicas" in w]
    assert len(off) == 1 and "rank(s) [1] made no tracker" in off[0] and "on every rank" in off[0]
    rows = readback.verdicts(logdir, run="ddp")
    assert rows["out.weight"]["status"] == "updating" and rows["out.weight"]["replica_spread"] is None
