"""PyTorch demo runs: one tiny, deterministic training per way a parameter fails to update.

Every scenario trains a real `torch.nn.Module` on the CPU for a few dozen
steps and writes one TensorBoard run, `<logdir>/<name>`, with
`tb_varupdate.torch.ParameterUpdateTracker`, so the PyTorch runs sit in the
same "Variable Updates" tab beside the TensorFlow ones. Its `SCENARIOS` are
`demo.catalogue.Scenario`s like `demo.scenarios.SCENARIOS`, and
`demo.run_all` runs both lists. No TensorFlow import.
"""

import datetime
import os
import shutil

import torch

from demo import catalogue
from demo import localnet
import tb_varupdate.torch as tbt

STEPS = 30
LR = 0.1
SEED = 7
DDP_WORLD = 2
DDP_DEADLINE_S = 150

UPDATING, NEVER = "updating", "never_updated"
PRESENT, MISSING, ZERO, NOT_LOGGED = "present", "missing", "zero", "not_logged"


SCENARIOS = []
_scenario = catalogue.registry(SCENARIOS, lambda: torch.manual_seed(SEED))


def _data(rows=32):
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(rows, 3, generator=generator) * 2 - 1
    return x, x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3


class _Net(torch.nn.Module):
    """Linear(3, 8) -> ReLU -> BatchNorm -> Linear(8, 1), named hidden / norm / head."""

    def __init__(self):
        super().__init__()
        self.hidden = torch.nn.Linear(3, 8)
        self.norm = torch.nn.BatchNorm1d(8)
        self.head = torch.nn.Linear(8, 1)

    def forward(self, x):
        return self.head(self.norm(torch.relu(self.hidden(x))))


_BUFFERS = {
    "norm.running_mean": (UPDATING, NOT_LOGGED), "norm.running_var": (UPDATING, NOT_LOGGED),
    "norm.num_batches_tracked": (UPDATING, NOT_LOGGED),
}
_BUFFER_NAMES = tuple(_BUFFERS)


def _train(run_dir, model, optimizer, before_step=None, set_to_none=True):
    x, y = _data()
    with tbt.ParameterUpdateTracker(model, log_dir=run_dir) as tracker:
        tracker.attach(optimizer)
        for _ in range(STEPS):
            optimizer.zero_grad(set_to_none=set_to_none)
            torch.nn.functional.mse_loss(model(x), y).backward()
            if before_step is not None:
                before_step()
            optimizer.step()


@_scenario("torch_healthy", "a PyTorch MLP with BatchNorm that trains: every parameter and buffer updates",
           dict({name: (UPDATING, PRESENT) for name in (
               "hidden.weight", "hidden.bias", "norm.weight", "norm.bias", "head.weight", "head.bias")}, **_BUFFERS),
           not_trainable=_BUFFER_NAMES)
def torch_healthy(run_dir):
    model = _Net()
    _train(run_dir, model, torch.optim.Adam(model.parameters(), lr=0.01))


@_scenario("torch_layer_replaced", "the head is replaced after the optimizer was created: it never trains",
           dict({name: (UPDATING, PRESENT) for name in ("hidden.weight", "hidden.bias", "norm.weight", "norm.bias")},
                **{"head.weight": (NEVER, PRESENT), "head.bias": (NEVER, PRESENT)}, **_BUFFERS),
           not_trainable=_BUFFER_NAMES)
def torch_layer_replaced(run_dir):
    model = _Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    model.head = torch.nn.Linear(8, 1)  # the bug: the optimizer still holds the old head
    _train(run_dir, model, optimizer)


@_scenario("torch_zero_grad_before_step", "optimizer.zero_grad() between backward() and step(): nothing trains",
           dict({name: (NEVER, MISSING) for name in (
               "hidden.weight", "hidden.bias", "norm.weight", "norm.bias", "head.weight", "head.bias")}, **_BUFFERS),
           not_trainable=_BUFFER_NAMES)
def torch_zero_grad_before_step(run_dir):
    model = _Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    _train(run_dir, model, optimizer, before_step=optimizer.zero_grad)


@_scenario("torch_frozen_weight_decay",
           "the head is frozen (requires_grad=False) but weight decay on its zero gradients still shrinks it",
           dict({name: (UPDATING, PRESENT) for name in ("hidden.weight", "hidden.bias", "norm.weight", "norm.bias")},
                **{"head.weight": (UPDATING, ZERO), "head.bias": (UPDATING, ZERO)}, **_BUFFERS),
           not_trainable=_BUFFER_NAMES + ("head.weight", "head.bias"))
def torch_frozen_weight_decay(run_dir):
    model = _Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, weight_decay=0.1)
    x, y = _data()
    torch.nn.functional.mse_loss(model(x), y).backward()
    optimizer.step()  # one step with gradients, so the head's .grad tensors exist
    model.head.requires_grad_(False)  # frozen, but zero_grad(set_to_none=False) keeps zero-filled grads
    _train(run_dir, model, optimizer, set_to_none=False)


class _DDPNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = torch.nn.Linear(3, 8)
        self.head = torch.nn.Linear(8, 1)
        self.aux_head = torch.nn.Linear(8, 1)  # built for a loss that was dropped: unused on every rank

    def forward(self, x):
        return self.head(torch.relu(self.hidden(x)))


def _ddp(model):
    """DDP over the whole model, SGD: rank 0 writes; the other rank takes part in the replica checks."""
    ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    return ddp, torch.optim.SGD(ddp.parameters(), lr=LR)


def _fsdp2(model):
    """FSDP2, AdamW: every rank measures its shards, rank 0 writes the sums."""
    from torch.distributed.fsdp import fully_shard  # pylint: disable=import-outside-toplevel

    for layer in (model.hidden, model.head, model.aux_head):
        fully_shard(layer)  # parameters become DTensors, sharded by rows over the 2 ranks
    fully_shard(model)
    return model, torch.optim.AdamW(model.parameters(), lr=LR)


def _spawn(run_dir, wrap):
    """The 2-process run; a retried start begins from an empty run (the failed one's records removed)."""
    localnet.spawn_bounded(_gloo_worker, (run_dir, wrap), DDP_WORLD, DDP_DEADLINE_S,
                           on_retry=lambda: shutil.rmtree(run_dir, ignore_errors=True))


def _gloo_worker(rank, port, run_dir, wrap):
    # torch's SummaryWriter imports TensorFlow where it is installed, and its
    # C++ runtime logs to descriptor 2 in each fresh worker; a worker's error
    # still reaches the parent, which torch.multiprocessing re-raises.
    with catalogue.quiet_stderr():
        _gloo_train(rank, port, run_dir, wrap)


def _gloo_train(rank, port, run_dir, wrap):
    """One rank of a 2-process run over gloo: `wrap(model)` gives the model to train and its optimizer."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=DDP_WORLD,
                                         timeout=datetime.timedelta(seconds=60))
    try:
        torch.manual_seed(SEED)
        model, optimizer = wrap(_DDPNet())
        x, y = _data()
        shard = slice(rank * 16, rank * 16 + 16)
        # Every rank makes and attaches the tracker (the README's rule under torch.distributed).
        with tbt.ParameterUpdateTracker(model, log_dir=run_dir, on_stuck="ignore") as tracker:
            tracker.attach(optimizer)
            for _ in range(STEPS):
                optimizer.zero_grad()
                torch.nn.functional.mse_loss(model(x[shard]), y[shard]).backward()
                optimizer.step()
    finally:
        torch.distributed.destroy_process_group()


# Both 2-process runs train `_DDPNet`: its aux_head is never on the path to the loss.
_DDP_NET_EXPECTED = {
    "hidden.weight": (UPDATING, PRESENT), "hidden.bias": (UPDATING, PRESENT),
    "head.weight": (UPDATING, PRESENT), "head.bias": (UPDATING, PRESENT),
    "aux_head.weight": (NEVER, MISSING), "aux_head.bias": (NEVER, MISSING),
}


@_scenario("torch_ddp_unused_parameter",
           "DDP over gloo, 2 processes (find_unused_parameters=True): aux_head is unused on every rank",
           _DDP_NET_EXPECTED)
def torch_ddp_unused_parameter(run_dir):
    _spawn(run_dir, _ddp)


@_scenario("torch_fsdp2_unused_layer",
           "FSDP2 (fully_shard) over gloo, 2 processes, AdamW: aux_head is unused, its gradient None on every rank",
           _DDP_NET_EXPECTED)
def torch_fsdp2_unused_layer(run_dir):
    _spawn(run_dir, _fsdp2)
