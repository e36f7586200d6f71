"""Issue #22 on PyTorch: the cause a user reads, checked on real training against the weights that changed.

Each test trains a tiny model in the style of an upstream example, healthy
and with one realistic bug, reads the verdicts back as `tb-varupdate check`
does, and asserts the verdict and the cause against which tensors really
changed.
"""

import contextlib
import math
import warnings

import pytest
import torch

import readback
import tb_varupdate.torch as tbt
from tb_varupdate.format import metadata as md
from tb_varupdate.format import variables as vr
from tb_varupdate.writers import reference


def _values(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def _changed_fraction(before, module):
    return {name: (p.detach() != before[name]).float().mean().item() for name, p in module.named_parameters()}


def _rows(logdir):
    return readback.verdicts(logdir, run="run", tag=md.updates_tag("model"))


def _bf16_mlp(scale=40.0):
    """The issue's model: Linear-GELU-Linear cast to bfloat16, the first layer's weights scaled up."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.GELU(), torch.nn.Linear(256, 256)).to(torch.bfloat16)
    with torch.no_grad():
        model[0].weight.mul_(scale)
    return model


def _track(model, optimizer, logdir, steps, step, warn="always", **tracker_kwargs):
    """Runs `step(index)` `steps` times under a tracker written to `logdir`/run; returns the warnings' messages.

    `warn` is the warnings filter meanwhile ("always" records every one,
    "ignore" none, "error" raises); None leaves the filters alone.
    """
    with warnings.catch_warnings(record=True) if warn else contextlib.nullcontext([]) as caught:
        if warn:
            warnings.simplefilter(warn)
        with tbt.ParameterUpdateTracker(model, log_dir=str(logdir / "run"), **tracker_kwargs) as tracker:
            tracker.attach(optimizer)
            for index in range(steps):
                step(index)
    return [str(w.message) for w in caught]


def _regression_step(model, optimizer, x, y):
    """One step of mean squared error from `model(x)` to `y`."""
    def step(_index):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    return step


def _square_step(model, optimizer, inputs):
    """One step minimising the mean square of `model(inputs())`."""
    def step(_index):
        optimizer.zero_grad()
        model(inputs()).pow(2).mean().backward()
        optimizer.step()
    return step


def _scheduled(step, schedule):
    """`step`, then `schedule.step()`."""
    def scheduled(index):
        step(index)
        schedule.step()
    return scheduled


def _fine_tune(logdir, optimize_base):
    """ResNet-style fine-tuning: a frozen base and a head, 30 steps, the base unfrozen at step 5.

    The optimizer holds the head only, or the whole model if `optimize_base`.
    Returns the warnings' messages and each parameter's changed fraction.
    """
    torch.manual_seed(0)
    base, head = torch.nn.Linear(8, 8), torch.nn.Linear(8, 1)
    model = torch.nn.Sequential(base, torch.nn.ReLU(), head)
    base.requires_grad_(False)
    optimizer = torch.optim.SGD((model if optimize_base else head).parameters(), lr=0.05)
    x, y = torch.randn(32, 8), torch.randn(32, 1)
    before = _values(model)
    train_step = _regression_step(model, optimizer, x, y)

    def step(index):
        if index == 5:
            base.requires_grad_(True)  # unfrozen; in the optimizer only if `optimize_base`
        train_step(index)

    return _track(model, optimizer, logdir, 30, step), _changed_fraction(before, model)


def _train(model, optimizer, logdir, warn, steps=20):
    """The bf16 MLP's training: a fixed batch, the loss in float32."""
    torch.manual_seed(1)
    x = torch.randn(64, 256).to(next(model.parameters()).dtype)
    y = torch.randn(64, 256).to(x.dtype)

    def step(_index):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x).float(), y.float()).backward()
        optimizer.step()

    _track(model, optimizer, logdir, steps, step, warn=warn)


def test_bf16_updates_that_round_away_are_named_with_sizes_and_fixes(tmp_path):
    model = _bf16_mlp()
    before = _values(model)
    _train(model, torch.optim.SGD(model.parameters(), lr=1e-5), tmp_path, warn="ignore")
    changed = _changed_fraction(before, model)
    rows = _rows(tmp_path)
    assert changed["0.weight"] == 0.0 and changed["0.bias"] == 0.0 and changed["2.weight"] > 0
    for name in ("0.weight", "0.bias"):
        row = rows[name]
        assert (row["status"], row["gradient"], row["problem"]) == ("never_updated", "present", True)
        text = row["diagnosis"]
        assert "rounded away" in text and "bfloat16" in text and "learning rate 1.0e-05" in text
        # The causes that were wrong here are gone; the fixes are named.
        assert "param_groups" not in text and "rebound" not in text and "is 0" not in text
        assert "master weights" in text and "autocast" in text and "mixed_bfloat16" not in text
    for name, fraction in changed.items():
        row = rows[name]
        assert (row["changed_steps"] > 0) == (fraction > 0), name
        if row["status"] == "tiny_updates":
            assert "rounded away" in row["diagnosis"] and "for most elements" in row["diagnosis"]


def test_bf16_with_a_learning_rate_that_moves_it_is_healthy(tmp_path):
    model = _bf16_mlp(scale=1.0)
    before = _values(model)
    # No training-time warning either.
    _train(model, torch.optim.SGD(model.parameters(), lr=0.5), tmp_path, warn="error")
    assert all(fraction > 0.5 for fraction in _changed_fraction(before, model).values())
    rows = _rows(tmp_path)
    assert {row["status"] for row in rows.values()} == {"updating"}
    assert not any(row["problem"] or row["severity"] for row in rows.values())


def test_entries_say_torch_and_name_each_parameters_learning_rate_slot(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    optimizer = torch.optim.SGD([{"params": model[0].parameters(), "lr": 0.1},
                                 {"params": model[1].parameters(), "lr": 0.02}])
    _track(model, optimizer, tmp_path, 3, _square_step(model, optimizer, lambda: torch.randn(8, 4)), warn=None)
    (_, newest), = readback.records(tmp_path / "run")[-1:]
    entries = {e["name"]: e for e in readback.entries(tmp_path / "run")}
    assert {e["framework"] for e in entries.values()} == {vr.FRAMEWORK_TORCH}
    assert entries["0.weight"]["lr_slot"] == 0 and entries["1.bias"]["lr_slot"] == 1
    assert newest.learning_rates[:2] == pytest.approx([0.1, 0.02])


def test_a_learning_rate_of_zero_is_named_from_the_record(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.GELU(), torch.nn.Linear(256, 256))
    before = _values(model)
    _train(model, torch.optim.SGD(model.parameters(), lr=0.0), tmp_path, warn="ignore")
    assert not any(_changed_fraction(before, model).values())
    for row in _rows(tmp_path).values():
        assert row["status"] == "never_updated"
        assert "learning rate of its optimizer was 0" in row["diagnosis"]
        assert "param_groups" not in row["diagnosis"]


def test_clipping_to_zero_is_named_where_every_gradient_is_zero(tmp_path):
    """pytorch/examples' word language model with `--clip 0`: 0 clips everything to zero."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(50, 16), torch.nn.LSTM(16, 16, batch_first=True))
    decoder = torch.nn.Linear(16, 50)
    net = torch.nn.ModuleDict({"rnn": model, "decoder": decoder})
    optimizer = torch.optim.SGD(net.parameters(), lr=20.0)
    data = torch.randint(0, 50, (8, 12))
    before = _values(net)

    def step(_index):
        optimizer.zero_grad()
        out, _ = model(data[:, :-1])
        loss = torch.nn.functional.cross_entropy(decoder(out).reshape(-1, 50), data[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 0)
        optimizer.step()

    _track(net, optimizer, tmp_path, 12, step, warn="ignore")
    assert not any(_changed_fraction(before, net).values())
    rows = _rows(tmp_path)
    assert {(row["status"], row["gradient"]) for row in rows.values()} == {("never_updated", "zero")}
    for row in rows.values():
        assert row["diagnosis"].index("max_norm=0") < row["diagnosis"].index("zero_grad(set_to_none=False)")


def test_amp_clipping_without_unscale_is_stuck_not_tiny(tmp_path):
    """AMP with clipping but no `scaler.unscale_(opt)`: steps max_norm / 65536, a problem, with that cause.

    Each parameter either never changes (float32 rounds the step away) or
    changes orders of magnitude below healthy training; both are problems
    whose cause is the clipping of the scaled gradients.
    """
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
    x, y = torch.randn(64, 32), torch.randn(64, 1)
    before = _values(model)

    def step(_index):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.mse_loss(model(x).float(), y)
        scaler.scale(loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)  # the scaled gradients: the bug
        scaler.step(optimizer)
        scaler.update()

    caught = _track(model, optimizer, tmp_path, 12, step)
    rows = _rows(tmp_path)
    moved = {name for name, fraction in _changed_fraction(before, model).items() if fraction}
    assert moved == {name for name, row in rows.items() if row["changed_steps"]}
    for name, row in rows.items():
        assert row["status"] in ("never_updated", "tiny_updates") and row["problem"], name
        assert "scaler.unscale_(optimizer)" in row["diagnosis"], row["diagnosis"]
        if row["status"] == "tiny_updates":
            assert row["max_relative_update"] < 1e-9 and "not training" in row["diagnosis"]
        assert "param_groups" not in row["diagnosis"] and "rebound" not in row["diagnosis"]
    messages = [message for message in caught if "stuck" in message]
    assert messages and "unscale_" in messages[0]


def test_parameters_unfrozen_mid_run_outside_the_optimizer_are_warned_and_named(tmp_path):
    """ResNet fine-tuning: the head trains, the base is unfrozen later but never added to the optimizer."""
    caught, changed = _fine_tune(tmp_path, optimize_base=False)
    messages = [message for message in caught if "now require grad" in message]
    assert len(messages) == 1 and "0.weight" in messages[0] and "0.bias" in messages[0]
    rows = _rows(tmp_path)
    for name in ("0.weight", "0.bias"):
        assert changed[name] == 0.0
        assert rows[name]["status"] == "never_updated" and rows[name]["problem"]
        assert "add_param_group" in rows[name]["diagnosis"]
    assert rows["2.weight"]["status"] == "updating" and changed["2.weight"] > 0


def test_a_torch_entry_without_role_still_gets_pytorch_advice():
    """The entry's framework decides, not the presence of `role` (older records keep the guess)."""
    from tb_varupdate.verdicts import analysis  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel

    ints = np.zeros((1, md.NUM_COLUMNS), np.int64)
    floats = np.zeros((1, md.NUM_COLUMNS), np.float64)
    ints[0, [md.FIRST_UPDATE_STEP, md.LAST_UPDATE_STEP, md.FIRST_NON_FINITE_STEP, md.ROWS_CHANGED]] = -1
    ints[0, md.TRAINABLE] = 1
    ints[0, md.GRAD_NONE_STEPS] = 10
    floats[0, md.VALUE_L2] = 1.0
    floats[0, md.MAX_RELATIVE_UPDATE] = math.nan
    record = md.parse_updates(reference.updates_record({"logged": 10, "names_hash": 0, "every_n": 1}, ints, floats))
    entry = {"name": "w", "shape": [2], "dtype": "float32", "trainable": True, "joined": 0}
    (tf_row,) = analysis.verdicts([entry], record, 9)
    (torch_row,) = analysis.verdicts([dict(entry, framework=vr.FRAMEWORK_TORCH)], record, 9)
    assert "p.grad" in torch_row["diagnosis"] and "p.grad" not in tf_row["diagnosis"]


def test_a_warmup_schedule_that_reaches_zero_is_warned_during_training(tmp_path):
    """A warmup transformer whose LambdaLR reaches 0 at step 19: the stall is warned, with its cause."""
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, dropout=0.0, batch_first=True)
    model = torch.nn.Sequential(layer, torch.nn.Linear(16, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / 19))
    x, y = torch.randn(8, 6, 16), torch.randn(8, 6, 1)
    caught = _track(model, optimizer, tmp_path, 45, _scheduled(_regression_step(model, optimizer, x, y), schedule))
    messages = [message for message in caught if "are stuck" in message]
    assert len(messages) == 1 and "after 40 records" in messages[0]
    assert "stalled" in messages[0] and "learning rate is 0" in messages[0]
    rows = _rows(tmp_path)
    assert {row["status"] for row in rows.values()} == {"stalled"}
    assert all(row["last_update_step"] <= 19 for row in rows.values())


def test_a_stall_after_the_last_check_is_warned_at_close(tmp_path):
    """35 records: the checks at 10 and 20 come before the stall shows; close() checks the last record."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 if step < 10 else 0.0)
    caught = _track(model, optimizer, tmp_path, 35,
                    _scheduled(_square_step(model, optimizer, lambda: torch.randn(8, 4)), schedule))
    (message,) = [message for message in caught if "are stuck" in message]
    assert "after 35 records" in message and "learning rate is 0" in message
    assert {row["status"] for row in _rows(tmp_path).values()} == {"stalled"}


def test_console_warnings_group_variables_by_cause_and_stay_short(tmp_path):
    """Many parameters stuck for one reason: one line with a count, the first names and the cause once."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(8, 8) for _ in range(12)])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for index in range(12):
        model[index] = torch.nn.Linear(8, 8)  # replaced after the optimizer was built: never trained
    x = torch.randn(16, 8)
    caught = _track(model, optimizer, tmp_path, 10, _square_step(model, optimizer, lambda: x))
    (message,) = [message for message in caught if "are stuck" in message]
    assert "24 trainable variable(s)" in message and "24 variables - " in message and "and 19 more" in message
    assert message.count("param_groups") == 1 and len(message) < 1500


def test_a_distillation_teacher_in_no_optimizer_is_a_warning_a_forgotten_layer_is_not(tmp_path):
    """A teacher run under `torch.no_grad()` and in no optimizer is fine; a student layer off the loss is not."""
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    student = torch.nn.ModuleDict({"body": torch.nn.Linear(4, 1), "unused": torch.nn.Linear(4, 1)})
    model = torch.nn.ModuleDict({"teacher": teacher, "student": student})
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    before = _values(model)

    def step(_index):
        optimizer.zero_grad()
        with torch.no_grad():
            soft = teacher(x)
        out = student["body"](x)
        (torch.nn.functional.mse_loss(out, y) + torch.nn.functional.mse_loss(out, soft)).backward()
        optimizer.step()

    _track(model, optimizer, tmp_path, 12, step, warn="ignore")
    changed = _changed_fraction(before, model)
    rows = _rows(tmp_path)
    for name, row in rows.items():
        assert (row["changed_steps"] > 0) == (changed[name] > 0), name
        if name.startswith("teacher."):
            assert row["status"] == "never_updated" and row["severity"] == 1 and not row["problem"]
            assert "fixed model" in row["diagnosis"] and "requires_grad_(False)" in row["diagnosis"]
        elif name.startswith("student.unused"):
            assert row["problem"] and "not on the path to the loss" in row["diagnosis"]


def test_a_parameter_unfrozen_mid_run_has_a_present_gradient_not_an_intermittent_one(tmp_path):
    """ResNet fine-tuning done right: the optimizer holds every parameter, the base is unfrozen at step 5."""
    caught, changed = _fine_tune(tmp_path, optimize_base=True)
    assert not [message for message in caught if "tb_varupdate" in message]
    for name, row in _rows(tmp_path).items():
        assert changed[name] > 0 and row["status"] == "updating" and row["gradient"] == "present", name


def test_each_record_holds_the_learning_rate_of_its_own_step_when_read_in_batches(tmp_path):
    """Learning rates are host floats kept beside the records on the device and written when a batch is read."""
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    seen = []

    def step(_index):
        optimizer.zero_grad()
        model(torch.randn(8, 4)).pow(2).mean().backward()
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()

    _track(model, optimizer, tmp_path, 10, step, warn=None, read_every=4)
    records = readback.records(tmp_path / "run")
    assert [updates.learning_rates[0] for _, updates in records] == pytest.approx(seen, rel=1e-6)


class _Block(torch.nn.Module):
    """nanoGPT's transformer block, in miniature: pre-norm causal attention and a GELU MLP."""

    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = torch.nn.LayerNorm(width), torch.nn.LayerNorm(width)
        self.c_attn, self.c_proj = torch.nn.Linear(width, 3 * width), torch.nn.Linear(width, width)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(width, 4 * width), torch.nn.GELU(), torch.nn.Linear(4 * width, width))

    def forward(self, x):
        batch, tokens, width = x.shape
        q, k, v = (t.view(batch, tokens, self.heads, -1).transpose(1, 2)
                   for t in self.c_attn(self.ln_1(x)).split(width, dim=2))
        attended = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(attended.transpose(1, 2).reshape(batch, tokens, width))
        return x + self.mlp(self.ln_2(x))


class _GPT(torch.nn.Module):
    """nanoGPT's model in miniature, the token embedding tied to the output head."""

    def __init__(self, vocab=64, context=16, width=32, layers=2, heads=2):
        super().__init__()
        self.wte, self.wpe = torch.nn.Embedding(vocab, width), torch.nn.Embedding(context, width)
        self.h = torch.nn.ModuleList(_Block(width, heads) for _ in range(layers))
        self.ln_f = torch.nn.LayerNorm(width)
        self.lm_head = torch.nn.Linear(width, vocab, bias=False)
        self.wte.weight = self.lm_head.weight  # weight tying, as nanoGPT does

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    def configure_optimizers(self, weight_decay, learning_rate, forget_no_decay=False):
        """nanoGPT's two param groups: weight decay for matrices, none for biases and norms."""
        params = {name: p for name, p in self.named_parameters() if p.requires_grad}
        decay = [p for p in params.values() if p.dim() >= 2]
        no_decay = [p for p in params.values() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}]
        if not forget_no_decay:  # the bug: a refactor that dropped the second group
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return torch.optim.AdamW(groups, lr=learning_rate, betas=(0.9, 0.95))


@pytest.mark.parametrize("forget_no_decay", [False, True])
def test_a_nanogpt_style_amp_run_names_the_parameters_left_out_of_its_param_groups(tmp_path, forget_no_decay):
    """nanoGPT's train loop: bf16 autocast, a GradScaler (enabled for float16 only), unscale and clip, then step."""
    torch.manual_seed(0)
    model = _GPT()
    optimizer = model.configure_optimizers(0.1, 1e-3, forget_no_decay)
    scaler = torch.amp.GradScaler("cpu", enabled=False)  # nanoGPT enables it for float16 only
    data = torch.randint(0, 64, (8, 17))
    before = _values(model)

    def step(_index):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(data[:, :-1], data[:, 1:])
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    caught = _track(model, optimizer, tmp_path, 12, step)
    changed = _changed_fraction(before, model)
    rows = _rows(tmp_path)
    assert set(rows) == set(changed)  # the tied embedding is one row, named once
    left_out = {name for name, p in model.named_parameters() if p.dim() < 2} if forget_no_decay else set()
    assert {name for name, fraction in changed.items() if fraction == 0.0} == left_out
    assert {name for name, row in rows.items() if row["problem"]} == left_out
    for name in left_out:
        assert rows[name]["status"] == "never_updated" and rows[name]["gradient"] == "present"
        assert "param_groups" in rows[name]["diagnosis"]
    assert any("param_group" in message for message in caught) == forget_no_decay


@pytest.mark.parametrize("rebind", [False, True])
def test_an_ema_copy_whose_update_rebinds_a_name_is_told_how_in_place_updates_differ(tmp_path, rebind):
    """A diffusion-style EMA of the model, updated after each step in place, or (the bug) by rebinding names."""
    import copy  # pylint: disable=import-outside-toplevel

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.SiLU(), torch.nn.Linear(8, 4))
    both = torch.nn.ModuleDict({"model": model, "ema": copy.deepcopy(model)})
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(32, 4)
    before = _values(both)
    train_step = _regression_step(model, optimizer, x, x)

    def step(index):
        train_step(index)
        with torch.no_grad():
            for ema_p, p in zip(both["ema"].parameters(), model.parameters()):
                if rebind:
                    ema_p = 0.99 * ema_p + 0.01 * p  # noqa: F841 (the bug)
                else:
                    ema_p.lerp_(p, 0.01)

    _track(both, optimizer, tmp_path, 10, step)
    changed = _changed_fraction(before, both)
    rows = _rows(tmp_path)
    ema = {name for name in rows if name.startswith("ema.")}
    assert len(ema) == 4 and all((changed[name] > 0) == (not rebind) for name in ema)
    for name in ema:
        if rebind:
            assert rows[name]["status"] == "never_updated" and rows[name]["severity"] == 1
            assert not rows[name]["problem"] and "`p.lerp_(...)`" in rows[name]["diagnosis"]
        else:
            assert rows[name]["status"] == "updating"
    assert all(rows[name]["status"] == "updating" for name in rows if name.startswith("model."))
