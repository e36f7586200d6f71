"""DistributedDataParallel (gloo, two processes on 127.0.0.1): one exact series, from rank 0.

A parameter unused on every rank (`find_unused_parameters=True`) keeps
`grad is None` after every backward() on every rank, and must come out
`never_updated` with gradient `missing`, named as in the plain model.
"""

import datetime
import os

import torch
import torch.distributed as dist

from demo import localnet
import readback
import tb_varupdate.torch as tbt
from tb_varupdate import cli

WORLD = 2
STEPS = 12
# Both workers start, train and exit in ~5-10 s here; the limit is for a loaded machine.
DEADLINE_S = 150


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = torch.nn.Linear(3, 4)
        self.out = torch.nn.Linear(4, 1)
        self.unused = torch.nn.Linear(4, 1)  # built, never called in forward()

    def forward(self, x):
        return self.out(torch.relu(self.hidden(x)))


def _worker(rank, port, logdir, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    try:
        torch.manual_seed(0)
        model = _Net()
        ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        generator = torch.Generator().manual_seed(rank)  # each rank its own data
        tracker = tbt.ParameterUpdateTracker(ddp, log_dir=os.path.join(logdir, "ddp"), on_stuck="ignore")
        tracker.attach(optimizer)
        grads_none = set()
        for _ in range(STEPS):
            x = torch.rand(8, 3, generator=generator)
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(ddp(x), x.sum(dim=1, keepdim=True)).backward()
            grads_none |= {name for name, p in model.named_parameters() if p.grad is None}
            optimizer.step()
        tracker.close()
        changed = sorted(name for name, p in model.named_parameters() if not torch.equal(before[name], p))
        torch.save({"changed": changed, "grads_none": sorted(grads_none), "written": tracker.records_written,
                    "weights": {n: p.detach() for n, p in model.named_parameters()}},
                   os.path.join(results, "rank%d.pt" % rank))
    finally:
        dist.destroy_process_group()


def test_ddp_unused_parameter_is_never_updated_with_gradient_missing(tmp_path):
    logdir, results = tmp_path / "logs", tmp_path / "results"
    results.mkdir()
    localnet.spawn_bounded(_worker, (str(logdir), str(results)), WORLD, DEADLINE_S)
    ranks = [torch.load(results / ("rank%d.pt" % rank)) for rank in range(WORLD)]
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
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    try:
        torch.manual_seed(0)
        model = _Net()
        ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
        generator = torch.Generator().manual_seed(rank)
        tracker = tbt.ParameterUpdateTracker(ddp, log_dir=os.path.join(logdir, "ddp"), on_stuck="ignore")
        tracker.attach(optimizer)
        for step in range(STEPS):
            x = torch.rand(8, 3, generator=generator)
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(ddp(x), x.sum(dim=1, keepdim=True)).backward()
            optimizer.step()
            if step == 4 and rank == 1:
                with torch.no_grad():
                    model.out.bias.add_(0.25)  # DDP syncs gradients, never values: the copies part
        tracker.close()
        torch.save({"bias": model.out.bias.detach()}, os.path.join(results, "rank%d.pt" % rank))
    finally:
        dist.destroy_process_group()


def test_ddp_replica_written_on_one_rank_is_replicas_diverged(tmp_path):
    logdir, results = tmp_path / "logs", tmp_path / "results"
    results.mkdir()
    localnet.spawn_bounded(_diverging_worker, (str(logdir), str(results)), WORLD, DEADLINE_S)
    biases = [torch.load(results / ("rank%d.pt" % rank))["bias"] for rank in range(WORLD)]
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

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    try:
        torch.manual_seed(0)
        ddp = torch.nn.parallel.DistributedDataParallel(_Net(), find_unused_parameters=True)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
        generator = torch.Generator().manual_seed(rank)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tracker = tbt.ParameterUpdateTracker(ddp, log_dir=os.path.join(logdir, "ddp"), on_stuck="ignore") \
                if rank == 0 else None
            if tracker is not None:
                tracker.attach(optimizer)
            for _ in range(STEPS):
                x = torch.rand(8, 3, generator=generator)
                optimizer.zero_grad()
                torch.nn.functional.mse_loss(ddp(x), x.sum(dim=1, keepdim=True)).backward()
                optimizer.step()
            if tracker is not None:
                tracker.close()
        torch.save({"warnings": [str(w.message) for w in caught],
                    "written": tracker.records_written if tracker else None}, os.path.join(results, "rank%d.pt" % rank))
    finally:
        dist.destroy_process_group()


def test_ddp_tracker_on_rank_0_only_records_without_replica_checks(tmp_path):
    logdir, results = tmp_path / "logs", tmp_path / "results"
    results.mkdir()
    localnet.spawn_bounded(_rank0_only_worker, (str(logdir), str(results)), WORLD, DEADLINE_S)
    rank0 = torch.load(results / "rank0.pt")
    assert rank0["written"] == STEPS
    off = [w for w in rank0["warnings"] if "does not compare the parameters' replicas" in w]
    assert len(off) == 1 and "rank(s) [1] made no tracker" in off[0] and "on every rank" in off[0]
    rows = readback.verdicts(logdir, run="ddp")
    assert rows["out.weight"]["status"] == "updating" and rows["out.weight"]["replica_spread"] is None
