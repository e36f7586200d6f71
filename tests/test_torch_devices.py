"""Every record against the weights' real changes, on each device (`torch_devices.DEVICES`).

A model with the classic bugs (a frozen layer, a parameter outside the
forward pass, one outside the optimizer, BatchNorm's integer counter, a
bfloat16 layer and a float32 one whose values underflow when squared) trains
with the tracker's default `read_every` (32 on CUDA: records leave the device
in batches through pinned memory). Each step's true change and norm are
computed in float64 on the host from copies taken around the step, and every
record must carry them.
"""

import warnings

import numpy as np
import pytest
import torch

import readback
import tb_varupdate.torch as tbt
from tb_varupdate.format import metadata as md
from tb_varupdate.writers.torch import tracker as torch_tracker
from torch_devices import DEVICES

RUN = "run"
STEPS = 40


class _Buggy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU())
        self.frozen = torch.nn.Linear(16, 16)
        self.frozen.requires_grad_(False)
        self.low = torch.nn.Linear(16, 16).to(torch.bfloat16)
        self.tiny = torch.nn.Parameter(torch.full((4, 16), 1e-30))  # squares underflow in float32
        self.unused = torch.nn.Parameter(torch.ones(3))  # never in the forward pass: its gradient is None
        self.forgotten = torch.nn.Linear(16, 1)  # left out of the optimizer below
        self.head = torch.nn.Linear(16, 1)

    def forward(self, x):
        h = self.frozen(self.body(x))
        h = self.low(h.to(torch.bfloat16)).float() + self.tiny.sum(0)
        return self.head(h) + self.forgotten(h)


def _state(model):
    return {name: t.detach().to("cpu", torch.float64, copy=True)
            for name, t in list(model.named_parameters()) + list(model.named_buffers())}


@pytest.mark.parametrize("device", DEVICES)
def test_every_record_carries_the_real_change_of_every_tensor(tmp_path, device):
    torch.manual_seed(0)
    model = _Buggy().to(device)
    trained = [p for name, p in model.named_parameters() if not name.startswith(("forgotten", "tiny"))]
    # `tiny`'s steps are ~1e-32 on values ~1e-30: every square underflows in float32.
    optimizer = torch.optim.SGD([{"params": trained}, {"params": [model.tiny], "lr": 1e-32}], lr=0.05)
    x = torch.randn(32, 8, device=device)
    y = torch.randn(32, 1, device=device)
    tracker = tbt.ParameterUpdateTracker(model, log_dir=tmp_path / RUN, on_stuck="ignore")
    assert tracker.read_every == (32 if device == "cuda" else 1)
    truth = []
    before = _state(model)
    for step in range(STEPS):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        tracker.log(step)
        after = _state(model)
        truth.append({name: (float((after[name] - before[name]).norm()), float(after[name].norm()))
                      for name in after})
        before = after
    tracker.close()

    # Integer buffers are compared, not measured: their verdict below says whether they changed.
    rows_of = {entry["name"]: row for row, entry in enumerate(readback.entries(tmp_path / RUN))}
    names = [name for name in rows_of if not name.endswith("num_batches_tracked")]
    records = readback.records(tmp_path / RUN)
    assert [step for step, _ in records] == list(range(STEPS))
    for (step, record), expected in zip(records, truth):
        for name in names:
            row, (delta, value) = rows_of[name], expected[name]
            # The step's change, taken in the tensor's dtype (a bfloat16 difference rounds to bfloat16's 8 bits).
            rel = 4e-3 if name.startswith("low.") else 1e-5
            assert record.floats[row, md.DELTA_L2] == pytest.approx(delta, rel=rel, abs=1e-45), (step, name)
            assert record.floats[row, md.VALUE_L2] == pytest.approx(value, rel=1e-5), (step, name)

    rows = readback.verdicts(tmp_path, run=RUN)
    for name, row in rows.items():
        assert row["changed_steps"] == sum(step[name][0] > 0 for step in truth), name
    never_changed = {name for name in rows if not any(step[name][0] > 0 for step in truth)}
    assert {name for name, row in rows.items() if row["status"] == "never_updated"} == never_changed
    # The bugs; on the CPU also body.0.bias, whose ~1e-9 gradient (BatchNorm cancels it) float32 rounds away.
    assert never_changed >= {"forgotten.weight", "forgotten.bias", "unused", "frozen.weight", "frozen.bias"}
    assert {name for name, row in rows.items() if row["problem"]} == never_changed - {"frozen.weight", "frozen.bias"}
    assert rows["unused"]["gradient"] == "missing" and rows["forgotten.weight"]["gradient"] == "present"
    assert rows["tiny"]["status"] == rows["low.weight"]["status"] == "updating"


@pytest.mark.parametrize("device", DEVICES)
def test_pending_records_survive_an_exception_on_each_device(tmp_path, device):
    model = torch.nn.Linear(4, 1).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(8, 4, device=device)
    with pytest.raises(RuntimeError, match="loop failed"):
        with tbt.ParameterUpdateTracker(model, log_dir=tmp_path / RUN, read_every=16) as tracker:
            for step in range(40):
                if step == 21:
                    raise RuntimeError("the training loop failed")
                optimizer.zero_grad()
                model(x).sum().backward()
                optimizer.step()
                tracker.log(step)
    assert [step for step, _ in readback.records(tmp_path / RUN)] == list(range(21))
    values = [record.floats[:, md.VALUE_L2] for _, record in readback.records(tmp_path / RUN)]
    assert np.all(np.isfinite(values))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA's sync debug mode needs a GPU; CPU proxies: test_torch_pending")
def test_no_record_makes_the_host_wait_for_the_gpu(tmp_path):
    # torch.cuda.set_sync_debug_mode("error") raises at any operation that waits for the device
    # (.item(), a device-to-host copy, nonzero, a copy from pageable memory): none may happen in
    # log() once the plan is built, read points included, across tensor refreshes (REFRESH_EVERY).
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(100, 32), torch.nn.Flatten(), torch.nn.Linear(4 * 32, 512, bias=False),
                                torch.nn.BatchNorm1d(512), torch.nn.ReLU(), torch.nn.Linear(512, 1)).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    ids, y = torch.randint(0, 100, (64, 4), device="cuda"), torch.randn(64, 1, device="cuda")
    steps = 2 * torch_tracker.REFRESH_EVERY + 20
    # log() turns its own errors into warnings: a wait caught by the debug mode would show there.
    with warnings.catch_warnings(record=True) as caught, \
            tbt.ParameterUpdateTracker(model, log_dir=tmp_path / RUN, read_every=8) as tracker:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", "Synchronization debug mode is a prototype")
        for step in range(steps):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(ids), y).backward()
            optimizer.step()
            if step >= 2:
                torch.cuda.set_sync_debug_mode("error")
            try:
                tracker.log(step)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        assert tracker.records_written >= steps - 2 * 8
    assert not caught, [str(warning.message) for warning in caught]
    assert [step for step, _ in readback.records(tmp_path / RUN)] == list(range(steps))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the fold is replayed as a CUDA graph on CUDA only")
def test_the_graphed_fold_writes_the_records_of_the_eager_fold(tmp_path):
    written = {}
    for how in ("graph", "eager"):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.Linear(16, 1)).cuda()
        model[0].bias.requires_grad_(False)
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        x, y = torch.randn(32, 8, device="cuda"), torch.randn(32, 1, device="cuda")
        with tbt.ParameterUpdateTracker(model, log_dir=tmp_path / how, read_every=8) as tracker:
            tracker._recorder._fold._eager_only = how == "eager"  # pylint: disable=protected-access
            for step in range(30):
                optimizer.zero_grad()
                torch.nn.functional.mse_loss(model(x), y).backward()
                if step == 12:
                    model[2].weight.grad.fill_(float("nan"))  # non-finite counters and header too
                optimizer.step()
                if step == 20:
                    model[0].bias.requires_grad_(True)  # the trainable flags change mid-run
                tracker.log(step * 3)
        written[how] = readback.records(tmp_path / how)
    assert [step for step, _ in written["graph"]] == [step for step, _ in written["eager"]] == list(range(0, 90, 3))
    for (_, graphed), (_, eager) in zip(written["graph"], written["eager"]):
        assert np.array_equal(graphed.ints, eager.ints) and graphed.logged == eager.logged
        assert np.array_equal(graphed.floats, eager.floats, equal_nan=True)
