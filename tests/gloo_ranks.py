"""Shared pieces of the two-process gloo tests (DDP, FSDP1, FSDP2, tensor parallel).

The small model, the seeded data, the training loop, the process group of a
worker and the per-rank results. Workers run through
`demo.localnet.spawn_bounded` (a loopback port, a deadline, one retry); the
single-process reference runs use the same model, seed and data, so their
records can be compared with the distributed ones number for number.
"""

import contextlib
import datetime
import os
import shutil

import numpy as np
import torch
import torch.distributed as dist

from demo import localnet
import readback
import tb_varupdate.torch as tbt
from tb_varupdate.format import metadata as md

WORLD = 2
# Both workers start, train and exit in ~5-10 s here; the limit is for a loaded machine.
DEADLINE_S = 150


class Net(torch.nn.Module):
    """Linear(3, width), relu, Linear(width, 1), the two layers named `names`.

    `unused` adds a layer that forward() never calls; `frozen` a layer without
    gradients whose output is added to the first layer's.
    """

    def __init__(self, names=("hidden", "out"), width=4, unused=False, frozen=False):
        super().__init__()
        self._names = names
        setattr(self, names[0], torch.nn.Linear(3, width))
        setattr(self, names[1], torch.nn.Linear(width, 1))
        if unused:
            self.unused = torch.nn.Linear(width, 1)
        self.frozen = torch.nn.Linear(3, width).requires_grad_(False) if frozen else None

    def forward(self, x):
        first, second = (getattr(self, name) for name in self._names)
        hidden = first(x) if self.frozen is None else first(x) + self.frozen(x)
        return second(torch.relu(hidden))


def data(steps, rows=16, seed=1):
    """`steps` batches of `rows` x 3 uniform inputs from a generator seeded with `seed`."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(rows, 3, generator=generator) for _ in range(steps)]


def shard(batches, rank, batch=8):
    """Rank `rank`'s slice of `batch` rows of each batch."""
    return [x[rank * batch:(rank + 1) * batch] for x in batches]


def train(model, optimizer, batches, after_backward=None, after_step=None):
    """Regresses the sum of each batch's inputs; `after_backward()` and `after_step(step)` run in each step."""
    for step, x in enumerate(batches):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), x.sum(dim=1, keepdim=True)).backward()
        if after_backward is not None:
            after_backward()
        optimizer.step()
        if after_step is not None:
            after_step(step)


def tracked(model, optimizer, log_dir, batches, **train_kwargs):
    """Trains under a tracker (`on_stuck="ignore"`) writing to `log_dir`; returns the closed tracker."""
    tracker = tbt.ParameterUpdateTracker(model, log_dir=str(log_dir), on_stuck="ignore")
    tracker.attach(optimizer)
    train(model, optimizer, batches, **train_kwargs)
    tracker.close()
    return tracker


def single(logdir, model, optimizer, batches):
    """The reference run in this process, written to `logdir`/single."""
    tracked(model, optimizer, logdir / "single", batches)


@contextlib.contextmanager
def process_group(rank, port):
    """A worker's gloo process group on 127.0.0.1:`port`, one thread, destroyed on the way out."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    try:
        yield
    finally:
        dist.destroy_process_group()


def save(results, rank, result):
    """A worker's result, for `spawn` to load back."""
    torch.save(result, os.path.join(results, "rank%d.pt" % rank))


def spawn(worker, root):
    """Runs `worker(rank, port, logdir, results)` on WORLD ranks; returns `root`/logs and the ranks' saved results."""
    logdir, results = root / "logs", root / "results"
    results.mkdir()

    def start_over():  # a retried run must not find the failed one's records and results
        shutil.rmtree(logdir, ignore_errors=True)
        shutil.rmtree(results)
        results.mkdir()

    localnet.spawn_bounded(worker, (str(logdir), str(results)), WORLD, DEADLINE_S, on_retry=start_over)
    return logdir, [torch.load(results / ("rank%d.pt" % rank)) for rank in range(WORLD)]


def assert_norms_close(sharded, single_records):
    """Each record's delta, value and gradient L2 norms equal within 1e-5 (relative)."""
    for (_, a), (_, b) in zip(sharded, single_records):
        for column in (md.DELTA_L2, md.VALUE_L2, md.GRAD_L2):
            np.testing.assert_allclose(a.floats[:, column], b.floats[:, column], rtol=1e-5, atol=0)


def compare_with_single(logdir, run, steps):
    """The `run` records and the single-process ones: `steps` of each, their norms close; returns both."""
    sharded, reference = readback.records(logdir / run), readback.records(logdir / "single")
    assert len(sharded) == len(reference) == steps, (len(sharded), len(reference), steps)
    assert_norms_close(sharded, reference)
    return sharded, reference
