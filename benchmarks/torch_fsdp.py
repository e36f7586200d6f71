"""PyTorch under FSDP2: step time with the tracker every step against no logging, two processes over gloo.

Two ranks on 127.0.0.1 train one `fully_shard`ed MLP (every Linear and the
model sharded, AdamW) with one thread each. Both variants run in the same
processes, their timed blocks interleaved round by round (a barrier before
each) so drift in machine load hits them alike; rank 0 reports the medians.
"Tracker every step" calls `tracker.log(step)` after `optimizer.step()`, what
`attach(optimizer)` does from the step hook, on both ranks. The bytes the
tracker reduces per record are counted from the tensor it all-reduces (six
float64 values per sharded parameter), beside what FSDP2 itself moves per
step (an all-gather of the parameters in forward and in backward, a
reduce-scatter of the gradients).
"""

import datetime
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

WORLD = 2
BATCH = 64  # per rank
DEADLINE_S = 600
VARIANTS = ("no logging", "tracker every step")


def mlp(width):
    return torch.nn.Sequential(
        torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, width), torch.nn.ReLU(),
        torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, 10),
    )


def _worker(rank, port, width, rounds, steps, out):
    import torch.distributed as dist  # pylint: disable=import-outside-toplevel
    from torch.distributed.fsdp import fully_shard  # pylint: disable=import-outside-toplevel

    import tb_varupdate.torch as tbt  # pylint: disable=import-outside-toplevel
    from tb_varupdate.writers.torch import dist as _torch_dist  # pylint: disable=import-outside-toplevel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=120))
    try:
        torch.manual_seed(0)
        model = mlp(width)
        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer)
        fully_shard(model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        generator = torch.Generator().manual_seed(rank)
        x, y = torch.randn(BATCH, width, generator=generator), torch.randint(0, 10, (BATCH,), generator=generator)
        with tempfile.TemporaryDirectory() as logdir:
            tracker = tbt.ParameterUpdateTracker(model, log_dir=logdir, on_stuck="ignore")
            step = 0

            def block(log):
                nonlocal step
                dist.barrier()
                started = time.perf_counter()
                for _ in range(steps):
                    optimizer.zero_grad()
                    torch.nn.functional.cross_entropy(model(x), y).backward()
                    optimizer.step()
                    if log:
                        tracker.log(step)
                    step += 1
                return (time.perf_counter() - started) / steps

            block(False)
            block(True)  # warm-up: the plan, the handshake, the writer
            times = {variant: [] for variant in VARIANTS}
            for _ in range(rounds):
                for variant in VARIANTS:
                    times[variant].append(block(variant != "no logging"))
            tracker.close()
            sharded = sum(1 for p in model.parameters() if _torch_dist.is_dtensor(p))
        if rank == 0:
            params = sum(p.numel() for p in model.parameters())
            torch.save({"times": {k: statistics.median(v) for k, v in times.items()}, "params": params,
                        "tensors": len(list(model.parameters())), "sharded": sharded,
                        "written": tracker.records_written}, out)
    finally:
        dist.destroy_process_group()


def measure(width, rounds, steps):
    """{"times": {variant: median seconds per step}, "params", "tensors", "sharded", "written"} of rank 0."""
    from demo import localnet  # pylint: disable=import-outside-toplevel

    with tempfile.TemporaryDirectory() as scratch:
        out = os.path.join(scratch, "rank0.pt")
        localnet.spawn_bounded(_worker, (width, rounds, steps, out), WORLD, DEADLINE_S)
        return torch.load(out)


def run(quick):
    width, rounds, steps = (64, 2, 3) if quick else (512, 15, 10)
    common.progress("torch_fsdp: width %d, %d rounds of %d steps per variant" % (width, rounds, steps))
    result = measure(width, rounds, steps)
    times = result["times"]
    reduced = 6 * 8 * result["sharded"]  # float64 [6, sharded rows], one all-reduce per record
    fsdp_bytes = 3 * 4 * result["params"]  # float32: all-gather forward + backward, reduce-scatter gradients
    ratio = times["tracker every step"] / times["no logging"]
    rows = [(
        "FSDP2 MLP %d-wide, %s params in %d tensors, 2 ranks"
        % (width, format(result["params"], ","), result["tensors"]),
        "%d B (%d tensors x 6 float64)" % (reduced, result["sharded"]),
        "~%.1f MB" % (fsdp_bytes / 1e6),
        common.ms(times["no logging"]), common.ms(times["tracker every step"]), "%.2fx" % ratio,
    )]
    body = "\n\n".join([
        __doc__.split("\n", 1)[1].strip(),
        common.table(("model", "tracker reduces per record", "FSDP2 moves per step (whole parameters x 3)",
                      "no logging", "tracker every step", "ratio"), rows),
        "Every rank measures its shards on its device and adds its part to one float64 "
        "[6, sharded tensors] all-reduce (squared norms of the change, the value and the "
        "gradient; changed, non-finite and gradient-present counts); nothing is read back "
        "to the host for it. The replica check (every 10 records) has nothing to compare "
        "here: every parameter is sharded.",
    ])
    return common.Section("Training overhead, PyTorch FSDP2 (two processes)", body)


if __name__ == "__main__":
    sys.exit(common.main_for(run))
