"""`TorchOps` folds exactly as `counters.NumPyOps`, the reference (tests/test_counters.py)."""

import numpy as np
import pytest
import torch

from tb_varupdate.format import metadata as md
from tb_varupdate.writers import counters
from tb_varupdate.writers.torch.ops import TorchOps, to_torch

VARIABLES = 6


def _random_measured(rng):
    """One record's measurements with every case: sentinels, zeros, NaN, Inf, -1 rows."""
    grad = rng.choice([0.0, 0.5, 3.0, md.GRAD_NONE, md.GRAD_NOT_GIVEN, np.inf], size=VARIABLES)
    delta = rng.choice([0.0, 1e-9, 0.1, np.nan], size=VARIABLES)
    value = rng.choice([0.0, 1.0, 2.5, np.inf], size=VARIABLES)
    return {
        "delta_l2": delta, "value_l2": value, "grad_l2": grad,
        "changed": delta != 0, "finite": np.isfinite(value),
        "rows_changed": rng.choice([-1, 0, 3], size=VARIABLES).astype(np.int64),
    }


def _fold(ops, convert, records, steps, trainable, sized):
    state, floats = counters.initial_state(VARIABLES)
    header = counters.initial_header()
    state, floats, header = convert(state), convert(floats), convert(header)
    out = []
    for values, step in zip(records, steps):
        measured = counters.Measured(**{key: convert(np.asarray(value)) for key, value in values.items()})
        state, floats, header, record = counters.fold(
            ops, state, floats, header, measured, convert(np.int64(step)), convert(trainable), convert(sized),
            names_hash=123, every_n=2, writer_id=987654,
        )
        out.append(np.asarray(record))
    return out, np.asarray(state), np.asarray(floats), np.asarray(header)


@pytest.mark.parametrize("seed", range(5))
def test_torch_ops_fold_equals_numpy_ops(seed):
    rng = np.random.default_rng(seed)
    records = [_random_measured(rng) for _ in range(12)]
    steps = [0, 1, 2, 2, 5, 4, 6, 2**33, 7, 8, 9, 10]
    trainable = rng.random(VARIABLES) > 0.3
    sized = rng.random(VARIABLES) > 0.3
    expected = _fold(counters.NumPyOps(), np.asarray, records, steps, trainable, sized)
    actual = _fold(TorchOps(), lambda a: to_torch(np.asarray(a)), records, steps, trainable, sized)
    for want, got in zip(expected[0], actual[0]):
        assert got.dtype == np.int32 and np.array_equal(want, got)  # bit for bit, NaN bits included
    for want, got in zip(expected[1:], actual[1:]):
        assert np.array_equal(want, got, equal_nan=True)
    assert md.parse_updates(actual[0][-1]).writer_id == 987654


def test_torch_ops_keep_the_tensors_device():
    ops = TorchOps()
    x = torch.tensor([1.0, float("nan")])
    assert ops.where(torch.isfinite(x), x, np.float32(-1)).tolist() == [1.0, -1.0]
    assert ops.bitcast_to_int32(torch.tensor([1.0])).item() == np.float32(1.0).view(np.int32)
    assert ops.clip_int32(torch.tensor([-5, 2**40, -2**40])).tolist() == [-5, counters.INT32_MAX, counters.INT32_MIN]
    assert ops.constant(7, torch.tensor(0)).device == x.device


def _fold_replicas(ops, convert, checks, steps):
    first, spread = (convert(a) for a in counters.initial_replicas(3))
    out = []
    for (checked, measured), step in zip(checks, steps):
        record = convert(np.zeros((4, md.NUM_COLUMNS), np.int32))
        first, spread, record = counters.fold_replicas(
            ops, first, spread, record, convert(np.asarray(checked)), convert(np.asarray(measured, np.float64)),
            convert(np.int64(step)))
        out.append(np.asarray(record))
    return out


def test_fold_replicas_matches_numpy_and_keeps_the_first_divergence():
    checks = [([False] * 3, [0.0] * 3),              # no check yet: spread NaN, never diverged
              ([True, True, False], [0.0, 0.5, 0.0]),  # row 1 differs at step 10
              ([True, True, False], [0.0, 0.25, 0.0])]  # smaller later: the largest stays
    steps = [0, 10, 20]
    reference = _fold_replicas(counters.NumPyOps(), lambda a: a, checks, steps)
    torch_records = _fold_replicas(TorchOps(), to_torch, checks, steps)
    for a, b in zip(reference, torch_records):
        np.testing.assert_array_equal(a, b)
    parsed = md.parse_updates(reference[-1])
    assert parsed.version == md.REPLICAS_VERSION
    assert parsed.first_diverged.tolist() == [-1, 10, -1]
    np.testing.assert_array_equal(parsed.replica_spread, [0.0, 0.5, np.nan])
    assert md.parse_updates(reference[0]).first_diverged.tolist() == [-1, -1, -1]
    assert md.parse_updates(np.zeros((2, md.NUM_COLUMNS), np.int32)).first_diverged is None  # version 3
