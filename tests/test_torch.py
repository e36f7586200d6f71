"""ParameterUpdateTracker on real PyTorch training, one test per cause, read back by TensorBoard.

Every test trains a tiny model of its own for a few dozen steps, records it,
reads the verdicts back the way `tb-varupdate check` does (TensorBoard's
loader), and compares them with which tensors really changed between the
start and the end of training.
"""

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

import readback
import tb_varupdate.torch as tbt
from tb_varupdate.errors import StuckVariableError
from tb_varupdate.format import metadata as md
from tb_varupdate.format import variables as vr
from tb_varupdate.writers.torch import tracker as torch_tracker

STEPS = 24
RUN = "run"
# A tensor as large as a layer's weight (256 KB of float32), beside small ones.
LARGE_ELEMENTS = 1 << 16


def _values(module):
    return {name: t.detach().clone() for name, t in list(module.named_parameters()) + list(module.named_buffers())}


def _changed(before, module):
    now = _values(module)
    return {name for name, value in before.items() if not torch.equal(value, now[name])}


def _verdicts(logdir, run=RUN, name="model"):
    return readback.verdicts(logdir, run=run, tag=md.updates_tag(name))


def _summary(rows):
    return {name: (row["status"], row["gradient"], row["trainable"]) for name, row in rows.items()}


def _assert_changed_match(rows, before, module):
    """The verdicts' changed set is exactly the set of tensors that really changed."""
    assert set(rows) <= set(before)
    assert {name for name, row in rows.items() if row["changed_steps"] > 0} == _changed(before, module) & set(rows)


def _entries(run_dir, name="model"):
    accumulator = event_accumulator.EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    accumulator.Reload()
    event = accumulator.Tensors(md.variables_tag(name))[-1]
    entries, _ = vr.parse_variables(tensor_util.make_ndarray(event.tensor_proto))
    return {entry["name"]: entry for entry in entries}


def _data(rows=32, features=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(rows, features, generator=generator) * 2 - 1
    return x, x @ torch.tensor([[1.0], [-2.0], [0.5]])[:features] + 0.3


def _fit(model, optimizer, x, y, steps=STEPS, before_step=None):
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        if before_step is not None:
            before_step()
        optimizer.step()


def _mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 1))


def test_healthy_mlp_updates_every_parameter_and_buffer(tmp_path):
    model = _mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    before = _values(model)
    x, y = _data()
    with tbt.ParameterUpdateTracker(model, log_dir=tmp_path / RUN) as tracker:
        tracker.attach(optimizer)
        _fit(model, optimizer, x, y)
    rows = _verdicts(tmp_path)
    assert _summary(rows) == {
        "0.weight": ("updating", "present", True), "0.bias": ("updating", "present", True),
        "2.weight": ("updating", "present", True), "2.bias": ("updating", "present", True),
        "2.running_mean": ("updating", "not_logged", False), "2.running_var": ("updating", "not_logged", False),
        "2.num_batches_tracked": ("updating", "not_logged", False),
        "3.weight": ("updating", "present", True), "3.bias": ("updating", "present", True),
    }
    assert all(row["logged_steps"] == STEPS and row["changed_steps"] == STEPS for row in rows.values())
    _assert_changed_match(rows, before, model)
    entries = _entries(tmp_path / RUN)
    assert {name: entry["role"] for name, entry in entries.items()} == {
        name: ("buffer" if name.startswith("2.r") or name.startswith("2.n") else "parameter") for name in rows
    }
    assert entries["2.num_batches_tracked"]["dtype"] == "int64" and entries["0.weight"]["shape"] == [8, 3]
    assert rows["2.num_batches_tracked"]["max_relative_update"] is None  # an integer has no size


def test_layer_replaced_after_the_optimizer_is_named_at_attach_and_never_updated(tmp_path):
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model[3] = torch.nn.Linear(8, 1)  # the bug: the optimizer holds the old layer's parameters
    before = _values(model)
    tracker = tbt.ParameterUpdateTracker(model, log_dir=tmp_path / RUN, on_stuck="ignore")
    with pytest.warns(UserWarning, match=r"2 trainable parameter\(s\).*none of the attached optimizers.*3\.weight, 3\.bias"):
        tracker.attach(optimizer)
    x, y = _data()
    _fit(model, optimizer, x, y)
    tracker.close()
    rows = _verdicts(tmp_path)
    assert _summary(rows)["3.weight"] == ("never_updated", "present", True)
    assert _summary(rows)["3.bias"] == ("never_updated", "present", True)
    assert _summary(rows)["0.weight"] == ("updating", "present", True)
    assert rows["3.weight"]["problem"] and not rows["0.weight"]["problem"]
    _assert_changed_match(rows, before, model)


def test_optimizer_built_after_the_change_gives_no_attach_warning(tmp_path):
    model = _mlp()
    model[3] = torch.nn.Linear(8, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with tbt.ParameterUpdateTracker(model, log_dir=tmp_path / RUN) as tracker:
            tracker.attach(optimizer)
            _fit(model, optimizer, *_data(), steps=3)


def test_requires_grad_false_by_accident_is_a_frozen_row(tmp_path):
    model = _mlp()
    model[0].weight.requires_grad_(False)  # meant to freeze something else
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = _values(model)
    with tbt.ParameterUpdateTracker(model, log_dir=tmp_path / RUN) as tracker:
        tracker.attach(optimizer)
        _fit(model, optimizer, *_data())
    rows = _verdicts(tmp_path)
    assert _summary(rows)["0.weight"] == ("never_updated", "missing", False)
    assert _summary(rows)["0.bias"] == ("updating", "present", True)
    _assert_changed_match(rows, before, model)


@pytest.mark.parametrize("set_to_none, gradient", [(True, "missing"), (False, "zero")])
def test_zero_grad_between_backward_and_step(tmp_path, set_to_none, gradient):
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = _values(model)
    with tbt.ParameterUpdateTracker(model, log_dir=tmp_path / RUN, on_stuck="ignore") as tracker:
        tracker.attach(optimizer)
        # The bug: the gradients are cleared after backward(), before step().
        with pytest.warns(UserWarning, match=r"6 parameter\(s\) got a gradient from backward\(\) that was gone.*"
                          r"0\.weight, 0\.bias, 2\.weight, 2\.bias, 3\.weight, 3\.bias\. Is optimizer\.zero_grad\(\)"):
            _fit(model, optimizer, *_data(), before_step=lambda: optimizer.zero_grad(set_to_none=set_to_none))
    rows = _verdicts(tmp_path)
    for name in ("0.weight", "0.bias", "2.weight", "2.bias", "3.weight", "3.bias"):
        assert _summary(rows)[name] == ("never_updated", gradient, True), name
    assert _summary(rows)["2.running_mean"] == ("updating", "not_logged", False)  # the forward pass still ran
    _assert_changed_match(rows, before, model)


def test_frozen_parameter_changed_by_weight_decay_and_by_a_data_write(tmp_path):
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.1)
    x, y = _data()
    _fit(model, optimizer, x, y, steps=1)
    # Frozen after a step: the zero-filled gradients zero_grad(set_to_none=False)
    # leaves still go through weight decay, so the frozen layer shrinks.
    model[3].requires_grad_(False)
    before = _values(model)
    with tbt.ParameterUpdateTracker(model, log_dir=tmp_path / RUN) as tracker:
        tracker.attach(optimizer)
        for _ in range(STEPS):
            optimizer.zero_grad(set_to_none=False)
            torch.nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
            with torch.no_grad():
                model[2].weight.requires_grad_(False)
                model[2].weight.data.mul_(0.99)  # a manual write to a frozen parameter
    rows = _verdicts(tmp_path)
    assert _summary(rows)["3.weight"] == ("updating", "zero", False)
    assert _summary(rows)["3.bias"] == ("updating", "zero", False)
    assert rows["2.weight"]["status"] == "updating" and not rows["2.weight"]["trainable"]
    entries = _entries(tmp_path / RUN)
    # What tells a frozen parameter that changes (suspicious) from a buffer (expected).
    assert entries["3.weight"]["role"] == "parameter" and entries["2.running_mean"]["role"] == "buffer"
    _assert_changed_match(rows, before, model)


@pytest.mark.parametrize("cut", ["detach", "no_grad"])
def test_detach_or_no_grad_on_the_path_leaves_the_gradient_none(tmp_path, cut):
    torch.manual_seed(0)
    encoder, head = torch.nn.Linear(3, 4), torch.nn.Linear(4, 1)
    model = torch.nn.ModuleDict({"encoder": encoder, "head": head})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _data()
    before = _values(model)
    with tbt.ParameterUpdateTracker(model, log_dir=tmp_path / RUN, on_stuck="ignore") as tracker:
        tracker.attach(optimizer)
        for _ in range(STEPS):
            optimizer.zero_grad()
            if cut == "detach":
                features = encoder(x).detach()
            else:
                with torch.no_grad():
                    features = encoder(x)
            torch.nn.functional.mse_loss(head(features), y).backward()
            optimizer.step()
    rows = _verdicts(tmp_path)
    assert _summary(rows) == {
        "encoder.weight": ("never_updated", "missing", True), "encoder.bias": ("never_updated", "missing", True),
        "head.weight": ("updating", "present", True), "head.bias": ("updating", "present", True),
    }
    _assert_changed_match(rows, before, model)


def test_rebinding_p_minus_lr_grad_leaves_the_parameter_unchanged(tmp_path):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.zeros(3, 1))
    b = torch.nn.Parameter(torch.zeros(1))
    x, y = _data()
    before = {"w": w.detach().clone(), "b": b.detach().clone()}
    with tbt.ParameterUpdateTracker([("w", w), ("b", b)], log_dir=tmp_path / RUN, on_stuck="ignore") as tracker:
        for step in range(STEPS):
            loss = torch.nn.functional.mse_loss(x @ w + b, y)
            w.grad = b.grad = None
            loss.backward()
            with torch.no_grad():
                b -= 0.1 * b.grad  # in place: trains
            weights = w - 0.1 * w.grad  # the bug: a new tensor; the Parameter `w` never changes
            del weights
            tracker.log(step)
    rows = _verdicts(tmp_path)
    assert _summary(rows) == {"w": ("never_updated", "present", True), "b": ("updating", "present", True)}
    assert torch.equal(w, before["w"]) and not torch.equal(b, before["b"])


def test_learning_rate_zero(tmp_path):
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    before = _values(model)
    with tbt.ParameterUpdateTracker(model, log_dir=tmp_path / RUN, buffers=False, on_stuck="ignore") as tracker:
        tracker.attach(optimizer)
        _fit(model, optimizer, *_data())
    rows = _verdicts(tmp_path)
    assert set(_summary(rows).values()) == {("never_updated", "present", True)}
    assert set(rows) == {"0.weight", "0.bias", "2.weight", "2.bias", "3.weight", "3.bias"}  # buffers=False
    _assert_changed_match(rows, before, model)


def test_dead_relu_gives_zero_gradients_upstream(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    with torch.no_grad():
        model[0].bias.fill_(-100.0)  # every unit's input is below 0 for inputs in [-1, 1]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = _values(model)
    with tbt.ParameterUpdateTracker(model, log_dir=tmp_path / RUN, on_stuck="ignore") as tracker:
        tracker.attach(optimizer)
        _fit(model, optimizer, *_data())
    rows = _verdicts(tmp_path)
    assert _summary(rows) == {
        "0.weight": ("never_updated", "zero", True), "0.bias": ("never_updated", "zero", True),
        "2.weight": ("never_updated", "zero", True), "2.bias": ("updating", "present", True),
    }
    _assert_changed_match(rows, before, model)


def test_nan_in_the_input_poisons_every_parameter(tmp_path):
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _data()
    with tbt.ParameterUpdateTracker(model, log_dir=tmp_path / RUN, on_stuck="ignore") as tracker:
        tracker.attach(optimizer)
        _fit(model, optimizer, x, y, steps=5)
        x[0, 0] = float("nan")
        _fit(model, optimizer, x, y, steps=5)
    rows = _verdicts(tmp_path)
    assert {name: row["status"] for name, row in rows.items()} == {"weight": "non_finite", "bias": "non_finite"}
    assert rows["weight"]["first_non_finite_step"] == 5 and rows["weight"]["gradient_steps"]["non_finite"] == 5
    assert torch.isnan(model.weight).all()


def test_grad_scaler_skipped_steps_are_recorded_and_healthy(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001)
    # A scale that overflows float32 gradients: the first steps are skipped
    # while the scaler halves it, as it does when training starts.
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)
    x, y = _data()
    y = y * 30
    skipped = 0
    with tbt.ParameterUpdateTracker(model, log_dir=tmp_path / RUN) as tracker:
        for step in range(STEPS):
            optimizer.zero_grad()
            before = model.weight.detach().clone()
            scaler.scale(torch.nn.functional.mse_loss(model(x), y)).backward()
            scaler.step(optimizer)
            scaler.update()
            skipped += torch.equal(before, model.weight)
            tracker.log(step)  # after update(): skipped steps are recorded too
    rows = _verdicts(tmp_path)
    assert 0 < skipped < STEPS - 5
    assert _summary(rows)["weight"] == ("updating", "present", True)
    assert rows["weight"]["gradient_steps"]["non_finite"] == skipped
    assert rows["weight"]["changed_steps"] == STEPS - skipped
    assert not rows["weight"]["problem"] and "skipped" in rows["weight"]["diagnosis"]


# Small tensors are measured by multi-tensor kernels, large ones one at a time.
SIZES = [pytest.param(50, id="small"), pytest.param(LARGE_ELEMENTS // 2, id="large")]


@pytest.mark.parametrize("rows_total", SIZES)
def test_sparse_embedding_counts_the_rows_that_changed(tmp_path, rows_total):
    torch.manual_seed(0)
    embedding = torch.nn.Embedding(rows_total, 4, sparse=True)
    head = torch.nn.Linear(4, 1)
    model = torch.nn.ModuleDict({"embedding": embedding, "head": head})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    ids = torch.arange(32) % 10  # only ids 0..9 ever occur
    y = torch.ones(32, 1)
    before = embedding.weight.detach().clone()
    with tbt.ParameterUpdateTracker(model, log_dir=tmp_path / RUN) as tracker:
        tracker.attach(optimizer)
        for _ in range(STEPS):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(head(embedding(ids)), y).backward()
            assert embedding.weight.grad.is_sparse
            optimizer.step()
    rows = _verdicts(tmp_path)
    really = int((embedding.weight.detach() != before).any(dim=1).sum())
    assert really == 10
    assert _summary(rows)["embedding.weight"] == ("updating", "present", True)
    assert rows["embedding.weight"]["rows_changed"] == really and rows["embedding.weight"]["rows_total"] == rows_total
    assert "of rows (%d of %d) never updated" % (rows_total - 10, rows_total) in rows["embedding.weight"]["diagnosis"]
    assert rows["head.weight"]["rows_changed"] is None  # dense gradients: rows not counted


def test_two_optimizers_give_one_record_per_step(tmp_path):
    torch.manual_seed(0)
    generator, discriminator = torch.nn.Linear(2, 3), torch.nn.Linear(3, 1)
    model = torch.nn.ModuleDict({"g": generator, "d": discriminator})
    opt_g = torch.optim.Adam(generator.parameters(), lr=0.01)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=0.01)
    noise, real = torch.randn(16, 2), torch.randn(16, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # both optimizers together hold every parameter: no attach warning
        tracker = tbt.ParameterUpdateTracker(model, log_dir=tmp_path / RUN)
        tracker.attach(opt_d, opt_g)  # in the loop's order: the record follows opt_g's step
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    for _ in range(STEPS):
        opt_d.zero_grad()
        fake = generator(noise).detach()
        (bce(discriminator(real), torch.ones(16, 1)) + bce(discriminator(fake), torch.zeros(16, 1))).backward()
        opt_d.step()
        opt_g.zero_grad()
        bce(discriminator(generator(noise)), torch.ones(16, 1)).backward()
        opt_g.step()
    tracker.close()
    # One record per training step, after the last given optimizer's step, holding both changes.
    steps = [step for step, _ in readback.records(tmp_path / RUN)]
    assert steps == list(range(STEPS))
    rows = _verdicts(tmp_path)
    assert {row["status"] for row in rows.values()} == {"updating"}
    assert {row["changed_steps"] for row in rows.values()} == {STEPS}


def test_handle_remove_stops_logging(tmp_path):
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    tracker = tbt.ParameterUpdateTracker(model, log_dir=tmp_path / RUN)
    handle = tracker.attach(optimizer)
    _fit(model, optimizer, *_data(), steps=3)
    handle.remove()
    _fit(model, optimizer, *_data(), steps=3)
    tracker.close()
    assert tracker.records_written == 3


def test_every_n_steps_and_checksum_mode(tmp_path):
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model[3].weight.requires_grad_(False)
    before = _values(model)
    with tbt.ParameterUpdateTracker(model, log_dir=tmp_path / RUN, every_n_steps=4, delta="checksum") as tracker:
        tracker.attach(optimizer)
        _fit(model, optimizer, *_data())
    assert [step for step, _ in readback.records(tmp_path / RUN)] == list(range(0, STEPS, 4))
    rows = _verdicts(tmp_path)
    assert rows["3.weight"]["status"] == "never_updated" and rows["0.weight"]["status"] == "updating"
    assert rows["0.weight"]["changed_steps"] == STEPS // 4 and rows["0.weight"]["latest_delta_l2"] is None
    _assert_changed_match(rows, before, model)


def test_records_land_in_the_users_summary_writer_run(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    writer = SummaryWriter(tmp_path / RUN)
    with tbt.ParameterUpdateTracker(model, writer=writer, name="linear") as tracker:
        tracker.attach(optimizer)
        for step in range(5):
            writer.add_scalar("loss", float(step), step)
            _fit(model, optimizer, *_data(), steps=1)
    writer.close()
    accumulator = event_accumulator.EventAccumulator(str(tmp_path / RUN))
    accumulator.Reload()
    assert "loss" in accumulator.Tags()["scalars"]
    assert set(_verdicts(tmp_path, name="linear")) == {"weight", "bias"}


def test_dataparallel_and_compile_prefixes_are_removed(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 1))
    wrapped = torch.compile(torch.nn.DataParallel(model))  # compiled lazily: never called here
    assert next(iter(wrapped.named_parameters()))[0].startswith("_orig_mod.module.")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with tbt.ParameterUpdateTracker(wrapped, log_dir=tmp_path / RUN) as tracker:
        tracker.attach(optimizer)
        _fit(model, optimizer, *_data(), steps=2)
    assert set(_verdicts(tmp_path)) == {"0.weight", "0.bias"}


def test_stuck_parameters_warn_once_or_raise(tmp_path):
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    tracker = tbt.ParameterUpdateTracker(model, log_dir=tmp_path / "warn", stuck_after=3)
    tracker.attach(optimizer)
    with pytest.warns(UserWarning, match=r"after 3 records \(step 2\), 2 trainable variable\(s\) of tracker 'model'"):
        _fit(model, optimizer, *_data(), steps=6)
    tracker.close()
    tracker = tbt.ParameterUpdateTracker(model, log_dir=tmp_path / "raise", stuck_after=3, on_stuck="raise")
    tracker.attach(optimizer)
    with pytest.raises(StuckVariableError, match=r"weight: never_updated"):
        _fit(model, optimizer, *_data(), steps=6)
    tracker.close()
    assert _verdicts(tmp_path, run="raise")["weight"]["logged_steps"] == 3  # on disk for the CLI


def test_an_internal_error_is_one_warning_and_training_goes_on(tmp_path):
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    tracker = tbt.ParameterUpdateTracker(model, writer=object())  # not a SummaryWriter
    tracker.attach(optimizer)
    before = model.weight.detach().clone()
    with pytest.warns(UserWarning, match=r"logging failed and was skipped; training goes on.*_get_file_writer") as caught:
        _fit(model, optimizer, *_data(), steps=4)
    assert len([w for w in caught if "logging failed" in str(w.message)]) == 1
    assert not torch.equal(before, model.weight)
    with pytest.warns(UserWarning, match=r"wrote no records: every log\(\) failed"):
        tracker.close()


@pytest.mark.parametrize("attach, match", [
    (True, "wrote no records: no attached optimizer stepped"),
    (False, r"wrote no records: log\(\) was never called"),
])
def test_a_tracker_that_wrote_nothing_says_so(tmp_path, attach, match):
    model = torch.nn.Linear(3, 1)
    tracker = tbt.ParameterUpdateTracker(model, log_dir=tmp_path / RUN)
    if attach:
        tracker.attach(torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.warns(UserWarning, match=match):
        tracker.close()


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "a/b"}, r"name must be a non-empty string without '/'.*Received: name='a/b'"),
    ({"name": ""}, r"name must be a non-empty string"),
    ({"every_n_steps": 0}, r"every_n_steps must be an int >= 1. Received: every_n_steps=0"),
    ({"every_n_steps": True}, r"every_n_steps must be an int >= 1"),
    ({"on_stuck": "crash"}, r"on_stuck must be one of .*Received: on_stuck='crash'"),
    ({"stuck_after": 0}, r"stuck_after must be an int >= 1. Received: stuck_after=0"),
    ({"delta": "approx"}, r"delta must be one of \('exact', 'checksum'\). Received: delta='approx'"),
    ({"log_dir": None}, r"give exactly one of log_dir .* and writer"),
])
def test_arguments_are_validated(tmp_path, kwargs, match):
    arguments = dict({"log_dir": str(tmp_path)}, **kwargs)
    with pytest.raises(ValueError, match=match):
        tbt.ParameterUpdateTracker(torch.nn.Linear(2, 1), **arguments)


@pytest.mark.parametrize("source, match", [
    ([], r"needs tensors to track.*Received: list with none"),
    (torch.nn.ReLU(), r"needs tensors to track.*Received: ReLU with none"),
    ([1.0], r"iterable of parameters or \(name, parameter\) pairs. Received: item #0 of type float"),
])
def test_nothing_to_track_is_an_error(tmp_path, source, match):
    with pytest.raises(ValueError, match=match):
        tbt.ParameterUpdateTracker(source, log_dir=tmp_path)


def test_attach_needs_optimizers(tmp_path):
    tracker = tbt.ParameterUpdateTracker(torch.nn.Linear(2, 1), log_dir=tmp_path)
    with pytest.raises(TypeError, match=r"Received: Linear"):
        tracker.attach(torch.nn.Linear(2, 1))


def test_import_and_a_whole_run_work_with_tensorflow_blocked(tmp_path):
    code = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
        "import torch, tb_varupdate.torch as tbt\n"
        "from tb_varupdate import cli\n"
        "model = torch.nn.Linear(3, 1); opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "with tbt.ParameterUpdateTracker(model, log_dir=sys.argv[1] + '/run') as tracker:\n"
        "    tracker.attach(opt)\n"
        "    for _ in range(3):\n"
        "        opt.zero_grad(); model(torch.ones(4, 3)).sum().backward(); opt.step()\n"
        "rows = cli.check(sys.argv[1])['runs']['run']['varupdate/model']['rows']\n"
        "assert 'tensorflow' not in sys.modules or sys.modules['tensorflow'] is None\n"
        "print(sorted((r['variable'], r['status']) for r in rows))\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[('bias', 'updating'), ('weight', 'updating')]"


@pytest.mark.parametrize("size", [4, LARGE_ELEMENTS])
def test_tiny_changes_below_float32_square_underflow_are_seen(tmp_path, size):
    w = torch.nn.Parameter(torch.full((size,), 1e-30))
    with tbt.ParameterUpdateTracker([("w", w)], log_dir=tmp_path / RUN, on_stuck="ignore") as tracker:
        for step in range(3):
            with torch.no_grad():
                w.add_(1e-31)
            tracker.log(step)
    rows = _verdicts(tmp_path)
    assert rows["w"]["changed_steps"] == 3 and rows["w"]["latest_delta_l2"] == pytest.approx(1e-31 * size**0.5, rel=1e-3)


def test_tiny_and_zero_gradients_of_stacked_tensors_are_measured_exactly_each(tmp_path):
    # Same-shape small tensors are measured as rows of one matrix; the float64
    # second look of the ones whose float32 norm underflowed must land on the
    # right rows, beside exact zeros, ordinary values and another shape.
    grads = {"zero": 0.0, "tiny": 1e-30, "one": 1.0, "small": 1e-25, "other_shape": 1e-28}
    params = {name: torch.nn.Parameter(torch.ones(3 if name == "other_shape" else 4)) for name in grads}
    for name, param in params.items():
        param.grad = torch.full_like(param, grads[name])
    with tbt.ParameterUpdateTracker(list(params.items()), log_dir=tmp_path / RUN, on_stuck="ignore") as tracker:
        for step in range(2):
            with torch.no_grad():
                params["tiny"].add_(1e-31)  # a change whose float32 square underflows too
            tracker.log(step)
    (_, record), = readback.records(tmp_path / RUN)[-1:]
    names = [entry["name"] for entry in vr.parse_variables(tracker._recorder.document)[0]]
    grad_l2 = dict(zip(names, record.floats[:, md.GRAD_L2]))
    delta_l2 = dict(zip(names, record.floats[:, md.DELTA_L2]))
    for name, value in grads.items():
        size = params[name].numel()
        assert grad_l2[name] == pytest.approx(value * size**0.5, rel=1e-5), name
    assert delta_l2["tiny"] == pytest.approx(1e-31 * 2, rel=1e-3)
    assert all(delta_l2[name] == 0.0 for name in grads if name != "tiny")
    rows = _verdicts(tmp_path)
    assert rows["zero"]["gradient"] != rows["tiny"]["gradient"]


def test_layer_replaced_after_the_tracker_follows_the_new_layer(tmp_path, monkeypatch):
    monkeypatch.setattr(torch_tracker, "REFRESH_EVERY", 1)  # re-read the module at every record, not every 50th
    model = torch.nn.Sequential(torch.nn.Linear(3, 1))
    tracker = tbt.ParameterUpdateTracker(model, log_dir=tmp_path / RUN, on_stuck="ignore")
    tracker.log(0)
    model[0] = torch.nn.Linear(3, 1)  # replaced: not a change of the tracked parameter
    tracker.log(1)
    with torch.no_grad():
        model[0].bias.add_(1.0)
    tracker.log(2)
    tracker.close()
    rows = _verdicts(tmp_path)
    assert (rows["0.weight"]["changed_steps"], rows["0.bias"]["changed_steps"]) == (0, 1)


def test_log_with_step_none_counts_calls_and_numpy_free_values(tmp_path):
    w = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    with tbt.ParameterUpdateTracker([w], log_dir=tmp_path / RUN, on_stuck="ignore") as tracker:
        for _ in range(3):
            tracker.log()
    assert [step for step, _ in readback.records(tmp_path / RUN)] == [0, 1, 2]
    assert set(_verdicts(tmp_path)) == {"param_0"}
    assert np.isclose(_verdicts(tmp_path)["param_0"]["value_l2"], np.sqrt(2))


class _Lora(torch.nn.Module):
    """A linear layer with a LoRA-style adapter: `lora_B` starts at zero, as PEFT's does."""

    def __init__(self, used=True):
        super().__init__()
        torch.manual_seed(0)
        self.base, self.used = torch.nn.Linear(3, 1), used
        self.lora_A = torch.nn.Linear(3, 2, bias=False)
        self.lora_B = torch.nn.Linear(2, 1, bias=False)
        torch.nn.init.zeros_(self.lora_B.weight)
        self.base.requires_grad_(False)

    def forward(self, x):
        return self.base(x) + (self.lora_B(self.lora_A(x)) if self.used else 0)


@pytest.mark.parametrize("used", [True, False])
def test_a_zero_lora_b_is_marked_and_diagnosed_when_it_never_leaves_zero(tmp_path, used):
    model = _Lora(used)
    adapter = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(adapter, lr=0.1)
    x, y = _data()
    with tbt.ParameterUpdateTracker(model, log_dir=tmp_path / RUN, on_stuck="ignore") as tracker:
        tracker.attach(optimizer)
        if not used:
            y = y.requires_grad_()  # a loss with a gradient path, none through the adapter
        _fit(model, optimizer, x, y)
    entries = _entries(tmp_path / RUN)
    assert {name for name, entry in entries.items() if entry.get("zero_init")} == {"lora_B.weight"}
    row = _verdicts(tmp_path)["lora_B.weight"]
    if used:
        assert row["status"] == "updating"
    else:
        assert (row["status"], row["gradient"]) == ("never_updated", "missing")
        assert "still at its zero init" in row["diagnosis"]


def test_zero_init_marks_only_matching_names_that_are_zero(tmp_path):
    model = _Lora()
    torch.nn.init.zeros_(model.lora_A.weight)
    with tbt.ParameterUpdateTracker(model, log_dir=tmp_path / RUN, zero_init=(r"lora_A",)) as tracker:
        tracker.log(0)
    assert {name for name, entry in _entries(tmp_path / RUN).items() if entry.get("zero_init")} == {"lora_A.weight"}


def test_negative_steps_of_a_resumed_run_are_the_steps_shown(tmp_path):
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with tbt.ParameterUpdateTracker(model, log_dir=tmp_path / RUN) as tracker:
        x, y = _data()
        for step in range(-30, -5, 5):  # a run resumed with its step counter offset below 0
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
            tracker.log(step)
    row = _verdicts(tmp_path)["weight"]
    assert (row["first_update_step"], row["last_update_step"], row["changed_steps"]) == (-30, -10, 5)
