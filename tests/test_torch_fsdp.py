"""FSDP2 (`fully_shard`, gloo, two processes on 127.0.0.1): every parameter's figures are the whole parameter's.

One two-process run trains a model with a used, an unused and a frozen
layer, every layer and the model `fully_shard`ed, AdamW, the tracker on
every rank; the same model, data and seed run in this process without
sharding. The records must agree within 1e-5 (relative), the unused layer
must be `never_updated` with its gradient `missing` (None on every rank),
the frozen one quiet. A second run makes the tracker on rank 0 only: it must
warn within a bounded time and training must finish.
"""

import os
import re
import time

import numpy as np
import pytest
import torch

import gloo_ranks
from gloo_ranks import DEADLINE_S
import readback
import tb_varupdate.torch as tbt
from tb_varupdate.format import metadata as md

STEPS = 12


def _net():
    return gloo_ranks.Net(unused=True, frozen=True)


def _data():
    return gloo_ranks.data(STEPS)


def _optimizer(model):
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)


def _sharded_model():
    from torch.distributed.fsdp import fully_shard  # pylint: disable=import-outside-toplevel

    torch.manual_seed(0)
    model = _net()
    for layer in (model.hidden, model.out, model.unused, model.frozen):
        fully_shard(layer)
    fully_shard(model)
    return model


def _worker(rank, port, logdir, results):
    import warnings  # pylint: disable=import-outside-toplevel

    with gloo_ranks.process_group(rank, port):
        model = _sharded_model()
        optimizer = _optimizer(model)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # The attach-time check, by full names: an optimizer that holds one parameter only.
            lacking = tbt.ParameterUpdateTracker(model, log_dir=os.path.join(logdir, "lacking"), name="lacking")
            lacking.attach(torch.optim.SGD([model.hidden.weight], lr=0.0))
            lacking.close()
            tracker = tbt.ParameterUpdateTracker(model, log_dir=os.path.join(logdir, "fsdp"), stuck_after=10)
            tracker.attach(optimizer)
            gloo_ranks.train(model, optimizer, gloo_ranks.shard(_data(), rank))
            tracker.close()
        gloo_ranks.save(results, rank, {"written": tracker.records_written,
                                        "warnings": [str(w.message) for w in caught]})


def _lone_worker(rank, port, logdir, results):
    """The tracker made on rank 0 only: a warning in bounded time, and training finishes."""
    import warnings  # pylint: disable=import-outside-toplevel

    from tb_varupdate.writers.torch import dist as _torch_dist  # pylint: disable=import-outside-toplevel

    _torch_dist.HANDSHAKE_S = 3.0
    with gloo_ranks.process_group(rank, port):
        model = _sharded_model()
        optimizer = _optimizer(model)
        batches = gloo_ranks.shard(_data(), rank)
        started = time.monotonic()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tracker = None
            if rank == 0:
                tracker = tbt.ParameterUpdateTracker(model, log_dir=os.path.join(logdir, "lone"))
                tracker.attach(optimizer)
            gloo_ranks.train(model, optimizer, batches)
            if tracker is not None:
                tracker.close()
        gloo_ranks.save(results, rank, {"seconds": time.monotonic() - started,
                                        "warnings": [str(w.message) for w in caught],
                                        "written": tracker.records_written if tracker else None})


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    started = time.monotonic()
    logdir, ranks = gloo_ranks.spawn(_worker, root)
    seconds = time.monotonic() - started
    # The same model, data and seed in one process, unsharded.
    torch.manual_seed(0)
    model = _net()
    gloo_ranks.single(logdir, model, _optimizer(model), _data())
    return logdir, ranks, seconds


def test_fsdp2_records_equal_a_single_process_run(fsdp_run):
    logdir, ranks, seconds = fsdp_run
    assert seconds < DEADLINE_S
    assert [r["written"] for r in ranks] == [STEPS, 0]  # rank 0 writes, rank 1 takes part
    sharded, single = readback.records(logdir / "fsdp"), readback.records(logdir / "single")
    assert [step for step, _ in sharded] == [step for step, _ in single] == list(range(STEPS))
    for (_, a), (_, b) in zip(sharded, single):
        assert a.version == md.REPLICAS_VERSION and b.version == md.FORMAT_VERSION
        counted = list(range(md.CHANGED_STEPS, md.MAX_RELATIVE_UPDATE)) + [md.TRAINABLE]
        np.testing.assert_array_equal(a.ints[:, counted], b.ints[:, counted])
        np.testing.assert_allclose(a.floats[:, md.MAX_RELATIVE_UPDATE], b.floats[:, md.MAX_RELATIVE_UPDATE], rtol=1e-5)
    gloo_ranks.assert_norms_close(sharded, single)
    # The sharded parameters were never compared as replicas (no false divergence).
    assert np.isnan(sharded[-1][1].replica_spread).all()
    assert (sharded[-1][1].first_diverged == -1).all()


def test_fsdp2_unused_layer_is_never_updated_with_gradient_missing(fsdp_run):
    logdir, _, _ = fsdp_run
    rows = readback.verdicts(logdir, run="fsdp")
    assert {name: (row["status"], row["gradient"]) for name, row in rows.items() if row["trainable"]} == {
        "hidden.weight": ("updating", "present"), "hidden.bias": ("updating", "present"),
        "out.weight": ("updating", "present"), "out.bias": ("updating", "present"),
        "unused.weight": ("never_updated", "missing"), "unused.bias": ("never_updated", "missing"),
    }
    assert rows["unused.weight"]["problem"] and rows["unused.bias"]["problem"]
    assert rows["unused.weight"]["gradient_steps"]["none"] == STEPS
    assert rows["out.weight"]["shape"] == [1, 4]  # the whole parameter's shape, not a shard's


def test_fsdp2_frozen_submodule_is_quiet(fsdp_run):
    logdir, _, _ = fsdp_run
    rows = readback.verdicts(logdir, run="fsdp")
    for name in ("frozen.weight", "frozen.bias"):
        assert not rows[name]["trainable"] and not rows[name]["problem"] and rows[name]["quiet"]
        assert rows[name]["changed_steps"] == 0 and rows[name]["gradient"] == "missing"


def test_fsdp2_tracker_on_rank_0_only_warns_and_training_finishes(tmp_path):
    _, lone = gloo_ranks.spawn(_lone_worker, tmp_path)
    stopped = [w for w in lone[0]["warnings"] if "stopped recording" in w]
    assert len(stopped) == 1 and "rank(s) [1] made no tracker" in stopped[0]
    assert "every rank must create the tracker" in stopped[0]
    assert lone[0]["written"] == 0
    assert lone[0]["seconds"] < 3.0 + 60  # the handshake's bound, and the training itself


def test_fsdp2_training_time_warnings_name_full_parameters(fsdp_run):
    _, ranks, _ = fsdp_run
    lacking = [[w for w in rank["warnings"] if "in none of the attached optimizers' param_groups" in w]
               for rank in ranks]
    assert len(lacking[0]) == 1 and not lacking[1]  # rank 0 writes and warns; rank 1 would repeat it
    assert "hidden.bias, out.weight, out.bias, unused.weight, unused.bias" in lacking[0][0]
    assert "frozen.weight" not in lacking[0][0]
    stuck = [w for w in ranks[0]["warnings"] if "are stuck" in w]
    assert len(stuck) == 1
    # Grouped by cause: one line, both names.
    assert re.search(r"2 variables - unused\.(weight|bias), unused\.(weight|bias): never_updated", stuck[0])
    assert "hidden" not in stuck[0] and "out." not in stuck[0]
    assert not [w for w in ranks[1]["warnings"] if "are stuck" in w]  # rank 0 writes and checks
    assert not [w for w in ranks[0]["warnings"] + ranks[1]["warnings"] if "logging failed" in w]
