"""The PyTorch measurement's cost proxies: kernels per record that do not grow with the tensors.

A GPU pays per kernel launched and per wait for the device; neither can be
timed in CI, so these count what causes them, on CPU tensors (the same code
path): the aten operations one record dispatches, with TensorFlow blocked as
in a PyTorch-only environment.
"""

import json
import subprocess
import sys

import pytest
import torch

from tb_varupdate.writers.torch import measure
from tb_varupdate.format import metadata as md
from torch_devices import DEVICES

COUNT_OPS = r"""
import collections, json, sys, tempfile
sys.modules["tensorflow"] = None  # as in a PyTorch-only environment
import torch
from torch.utils._python_dispatch import TorchDispatchMode
import tb_varupdate.torch as tbt

class Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))

def ops_per_record(blocks):
    torch.manual_seed(0)
    layers = []
    for _ in range(blocks):  # a weight above the large-tensor threshold; small tensors; an int buffer
        layers += [torch.nn.Linear(256, 256), torch.nn.BatchNorm1d(256), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with tempfile.TemporaryDirectory() as logdir:
        tracker = tbt.ParameterUpdateTracker(model, log_dir=logdir, read_every=1000)
        for step in range(4):
            optimizer.zero_grad()
            model(torch.randn(8, 256)).sum().backward()
            optimizer.step()
            if step < 3:
                tracker.log(step)
        with Count() as count:
            tracker.log(3)
        tracker.close()
    return sum(count.ops.values())

print(json.dumps({blocks: ops_per_record(blocks) for blocks in (5, 50)}))
"""


def test_operations_per_record_do_not_grow_with_the_number_of_tensors():
    result = subprocess.run([sys.executable, "-c", COUNT_OPS], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    counts = {int(k): v for k, v in json.loads(result.stdout.strip().splitlines()[-1]).items()}
    # 5 blocks are 26 tensors, 50 blocks 251: the landed writer dispatched 250 and 654.
    assert counts[50] <= 1.3 * counts[5], counts


def _rows(*tensors, delta=measure.EXACT):
    return [measure.Row(t, delta) for t in tensors]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("size", [4, measure.LARGE_ELEMENTS])
def test_tiny_changes_and_gradients_are_measured_exactly_in_packs_and_lists(dtype, size, device):
    tiny = torch.nn.Parameter(torch.zeros(size, dtype=dtype, device=device))
    same = torch.nn.Parameter(torch.ones(size, dtype=dtype, device=device))
    rows = _rows(tiny, same)
    measurement = measure.Measurement()
    with torch.no_grad():
        tiny.add_(1e-30)
    tiny.grad = torch.full_like(tiny, 1e-30)
    same.grad = torch.zeros_like(same)
    out = measurement.measure(rows, [tiny.grad, same.grad]).cpu().numpy()
    expected = torch.tensor(1e-30, dtype=dtype).double().item() * size ** 0.5
    assert out[measure.CHANGED].tolist() == [1.0, 0.0]
    assert out[measure.DELTA_L2][0] == pytest.approx(expected, rel=1e-5) and out[measure.DELTA_L2][1] == 0.0
    assert out[measure.GRAD_L2][0] == pytest.approx(expected, rel=1e-5) and out[measure.GRAD_L2][1] == 0.0


@pytest.mark.parametrize("device", DEVICES)
def test_integer_and_bool_buffers_are_compared_on_the_device(device):
    counter, mask = torch.tensor(3, device=device), torch.zeros(5, dtype=torch.bool, device=device)
    empty = torch.zeros(0, dtype=torch.int64, device=device)
    rows = _rows(counter, mask, empty)
    measurement = measure.Measurement()
    grads = [md.GRAD_NOT_GIVEN] * 3
    counter.add_(1)
    assert measurement.measure(rows, grads)[measure.CHANGED].tolist() == [1.0, 0.0, 0.0]
    mask[2] = True
    assert measurement.measure(rows, grads)[measure.CHANGED].tolist() == [0.0, 1.0, 0.0]
    assert measurement.measure(rows, grads)[measure.CHANGED].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("device", DEVICES)
def test_non_finite_gradients_and_values_read_as_such(device):
    w = torch.nn.Parameter(torch.ones(3, device=device))
    rows = _rows(w)
    w.grad = torch.tensor([1.0, float("nan"), 0.0], device=device)
    out = measure.Measurement().measure(rows, [w.grad])
    assert out[measure.GRAD_L2, 0].item() == float("inf") and out[measure.FINITE, 0].item() == 1.0
    with torch.no_grad():
        w[0] = float("inf")
    out = measure.Measurement().measure(_rows(w), [md.GRAD_NONE])
    assert out[measure.FINITE, 0].item() == 0.0 and out[measure.GRAD_L2, 0].item() == md.GRAD_NONE


@pytest.mark.parametrize("device", DEVICES)
def test_channels_last_and_strided_tensors_are_measured_in_their_own_layout(device):
    # A channels_last conv weight is laid end to end in memory order (flat block); a strided view
    # cannot be, and is measured as a list. Both over several records, as the snapshots are re-pointed.
    conv = torch.randn(8, 4, 3, 3, device=device).to(memory_format=torch.channels_last)
    strided = torch.randn(6, 10, device=device)[:, ::2]
    assert measure.flat_view(conv) is not None and measure.flat_view(strided) is None
    rows = _rows(conv, strided)
    measurement = measure.Measurement()
    grads = [md.GRAD_NOT_GIVEN] * 2
    measurement.measure(rows, grads)
    assert {block.kind for block in measurement.plan.floats} == {measure.FLAT, measure.LIST}
    for k in range(3):
        conv[k, 1, 2, 0] += 0.5
        strided[k, 3] -= 0.25
        out = measurement.measure(rows, grads).cpu()
        assert out[measure.DELTA_L2].tolist() == pytest.approx([0.5, 0.25], rel=1e-6)
        assert out[measure.VALUE_L2].tolist() == pytest.approx(
            [float(conv.double().norm()), float(strided.double().norm())], rel=1e-6)
        assert out[measure.CHANGED].tolist() == [1.0, 1.0]
    assert measurement.measure(rows, grads)[measure.CHANGED].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("device", DEVICES)
def test_each_gradient_is_measured_by_the_path_its_kind_needs_at_every_record(device):
    # Which gradients a block measures together is cached per kind of the record's gradients:
    # a gradient that comes, goes, changes dtype or turns sparse must be measured right at once.
    small = torch.nn.Parameter(torch.ones(4, 3, device=device))  # a flat block
    large = torch.nn.Parameter(torch.ones(measure.LARGE_ELEMENTS, device=device))  # a list block
    small.grad_dtype = None  # lets a gradient of another dtype be assigned, as torch allows
    rows = _rows(small, large)
    measurement = measure.Measurement()

    def grad_l2(grads):
        return measurement.measure(rows, grads)[measure.GRAD_L2].tolist()

    def l2(tensor):
        return float(tensor.to_dense().double().norm())

    dense = torch.full((4, 3), 0.5, device=device)
    wide = torch.full((4, 3), 1e-30, dtype=torch.float64, device=device)  # underflows in float32 squares
    sparse = torch.sparse_coo_tensor([[1, 3]], torch.full((2, 3), 2.0, device=device), (4, 3),
                                     check_invariants=True)
    large_grad = torch.full((measure.LARGE_ELEMENTS,), 0.25, device=device)
    assert grad_l2([None, None]) == [md.GRAD_NONE, md.GRAD_NONE]
    for grad in (dense, wide, sparse, dense, None, wide):
        expected = md.GRAD_NONE if grad is None else pytest.approx(l2(grad), rel=1e-6)
        assert grad_l2([grad, large_grad]) == [expected, pytest.approx(l2(large_grad), rel=1e-6)]
    plan = measurement.plan
    rows[1].reset(torch.zeros(measure.LARGE_ELEMENTS, device=device), measure.EXACT)  # a layer replaced
    out = measurement.measure(rows, [dense, None])
    assert measurement.plan is not plan and out[measure.CHANGED].tolist() == [0.0, 0.0]


def test_the_accelerators_float64_norms_measure_as_the_cpus_two_looks():
    # CI has no GPU: the float64 accumulation CUDA uses (`measure.FLOAT64`) runs here on CPU
    # tensors beside the CPU's own two looks, over the same records, and must agree with them.
    def tensors():
        torch.manual_seed(0)
        return [torch.randn(5, 3), torch.zeros(measure.LARGE_ELEMENTS), torch.randn(measure.LARGE_ELEMENTS + 3),
                torch.zeros(7, dtype=torch.bfloat16), torch.tensor(0), torch.randn(4, 2)]

    runs = []
    for how in (None, measure.FLOAT64):
        values = tensors()
        rows, measurement = _rows(*values), measure.Measurement()
        sparse = torch.sparse_coo_tensor([[1]], torch.ones(1, 2), (4, 2), check_invariants=True)
        records = []
        for step in range(3):
            with torch.no_grad():
                values[0][step] += 0.5
                values[1][step] += 1e-30  # squares underflow in float32
                values[2].mul_(1.5)
                values[3][step] += 1
                values[4] += step
            grads = [torch.full((5, 3), 1e-30 * step), None, torch.ones(measure.LARGE_ELEMENTS + 3),
                     torch.ones(7, dtype=torch.bfloat16), md.GRAD_NOT_GIVEN, sparse]
            if how is not None:
                measurement.plan_for(rows, grads).how = how
            records.append(measurement.measure(rows, grads))
        runs.append(torch.stack(records))
    scaled, float64 = runs
    # The value norms are the one plain float32 look on the CPU (module docstring): values of
    # ~1e-30 read 0 there, their true norm in float64.
    assert scaled[:, measure.VALUE_L2, 1].tolist() == [0.0] * 3
    assert float64[:, measure.VALUE_L2, 1].tolist() == pytest.approx([1e-30, 2 ** 0.5 * 1e-30, 3 ** 0.5 * 1e-30])
    float64[:, measure.VALUE_L2, 1] = 0.0
    torch.testing.assert_close(float64, scaled, rtol=1e-6, atol=0, equal_nan=True)
    assert (scaled[:, measure.CHANGED, :4] == 1).all() and scaled[:, measure.DELTA_L2, 1].tolist() == pytest.approx(
        [1e-30] * 3) and scaled[2, measure.GRAD_L2, 0] == pytest.approx(15 ** 0.5 * 2e-30)
