"""Every demo scenario, trained for real, gets the verdicts it is about.

Each scenario is written once into a module-wide logdir and read back with
`cli.check`, the code path of `tb-varupdate check`. The expected verdicts
(`Scenario.expected`) and the numbers below were written from what each
scenario does, not copied from output.
"""

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `demo` lives at the top of the repository

from demo import scenarios  # noqa: E402
from tb_varupdate import cli  # noqa: E402
from tb_varupdate.reader import cache as cache_lib  # noqa: E402
from tb_varupdate.reader import service  # noqa: E402

NAMES = [scenario.name for scenario in scenarios.SCENARIOS]
TAG = "varupdate/model"


class Written:
    """One scenario's run, read back: rows by variable, warnings, report."""

    def __init__(self, scenario, logdir, caught):
        self.scenario = scenario
        self.logdir = logdir
        self.warnings = [str(w.message) for w in caught]
        self.report = cli.check(logdir, run_pattern="^%s$" % re.escape(scenario.run))
        self.tags = self.report["runs"][scenario.run]
        self.rows = {row["variable"]: row for row in self.tags[TAG]["rows"]}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """`written(name)`: the scenario's run, trained on first use only."""
    logdir = str(tmp_path_factory.mktemp("scenarios"))
    cache = {}

    def get(name):
        if name not in cache:
            scenario = scenarios.BY_NAME[name]
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                scenario.write(logdir)
            cache[name] = Written(scenario, logdir, caught)
        return cache[name]

    return get


def test_registry_names_are_unique_and_runs_follow_names():
    assert len(set(NAMES)) == len(NAMES) == 23
    for scenario in scenarios.SCENARIOS:
        assert scenario.run == (scenario.name + "/train" if scenario.keras_fit else scenario.name)
        assert scenario.not_trainable <= set(scenario.expected)


@pytest.mark.parametrize("name", NAMES)
def test_one_run_one_tracker(written, name):
    run = written(name)
    assert list(run.report["runs"]) == [run.scenario.run]
    assert list(run.tags) == [TAG]
    assert run.tags[TAG]["warnings"] == []


@pytest.mark.parametrize("name", NAMES)
def test_every_variable_gets_its_verdict(written, name):
    run = written(name)
    got = {variable: (row["status"], row["gradient"]) for variable, row in run.rows.items()}
    assert got == run.scenario.expected


@pytest.mark.parametrize("name", NAMES)
def test_trainable_flags(written, name):
    run = written(name)
    got = {variable: row["trainable"] for variable, row in run.rows.items()}
    expected = {variable: variable not in run.scenario.not_trainable for variable in run.scenario.expected}
    assert got == expected


@pytest.mark.parametrize("name", NAMES)
def test_check_fails_exactly_the_broken_scenarios(written, name):
    run = written(name)
    expected = cli.EXIT_HEALTHY if run.scenario.healthy else cli.EXIT_PROBLEMS
    assert cli.exit_code(run.report) == expected


# -- the question's three snippets ---------------------------------------------


def test_rebinding_warns_and_the_variable_stays_zero(written):
    run = written("seed1_rebinding")
    w = run.rows["w"]
    assert any("holds a tf.Tensor where a tracked variable was expected" in text for text in run.warnings)
    assert (w["value_l2"], w["changed_steps"], w["first_update_step"], w["last_update_step"]) == (0.0, 0, None, None)
    # Only step 0's pair held the variable; from step 1 on it held the tensor.
    assert w["gradient_steps"] == {"present": 1, "none": 0, "zero": 0, "non_finite": 0, "not_given": 29}
    assert "assign_sub" in w["diagnosis"]


@pytest.mark.parametrize("name", ["seed2_apply_gradients", "seed3_assign_sub"])
def test_in_place_updates_move_w_every_step(written, name):
    w = written(name).rows["w"]
    # loss = w, so g = 1 and each of the 30 steps subtracts lr = 0.1: w = -3.
    assert w["value_l2"] == pytest.approx(3.0, rel=1e-5)
    assert (w["first_update_step"], w["last_update_step"], w["changed_steps"]) == (0, 29, 30)
    assert w["problem"] is False


@pytest.mark.parametrize("args, code", [
    (["--run", "^seed1_rebinding$"], cli.EXIT_PROBLEMS),
    (["--run", "^seed[23]_"], cli.EXIT_HEALTHY),
])
def test_cli_main_on_the_seed_runs(written, capsys, args, code):
    for name in ("seed1_rebinding", "seed2_apply_gradients", "seed3_assign_sub"):
        logdir = written(name).logdir
    assert cli.main(["check", logdir] + args) == code
    out = capsys.readouterr().out
    if code == cli.EXIT_PROBLEMS:
        assert re.search(r"FAIL +never_updated +grad=present +w ", out)
        assert "assign_sub" in out
    else:
        assert "FAIL" not in out and out.count("updating") == 2


def test_console_script_on_the_rebinding_run(written):
    logdir = written("seed1_rebinding").logdir
    script = Path(sys.executable).parent / "tb-varupdate"
    proc = subprocess.run(
        [str(script), "check", logdir, "--run", "^seed1_rebinding$", "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == cli.EXIT_PROBLEMS, proc.stderr
    (row,) = json.loads(proc.stdout)["runs"]["seed1_rebinding"][TAG]["rows"]
    assert (row["variable"], row["status"], row["problem"]) == ("w", "never_updated", True)
    assert "v.assign_sub(lr * g)" in row["diagnosis"]


# -- the other scenarios' details ----------------------------------------------


def test_keras_fit_frozen_layer_and_unused_head(written):
    rows = written("keras_frozen_and_unused").rows
    # 32 rows in batches of 8 for 8 epochs: 32 logged steps.
    for name in ("net/aux/kernel", "net/aux/bias"):
        assert rows[name]["gradient_steps"]["none"] == 32
        assert rows[name]["problem"] is True
    for name in ("net/features/kernel", "net/features/bias"):
        # Frozen: not given to the optimizer, so no gradient is logged, and not a problem.
        assert rows[name]["gradient_steps"]["not_given"] == 32
        assert rows[name]["problem"] is False
    assert rows["net/head/kernel"]["changed_steps"] == 32


def test_variable_left_out_of_apply_gradients(written):
    rows = written("left_out_of_apply_gradients").rows
    assert rows["scale"]["value_l2"] == 1.0  # still its initial value
    assert rows["scale"]["gradient_steps"]["present"] == 30
    assert rows["linear/kernel"]["changed_steps"] == 30


@pytest.mark.parametrize("name", ["lr_zero", "lr_1e-12"])
def test_learning_rates_that_move_nothing(written, name):
    for row in written(name).rows.values():
        assert (row["changed_steps"], row["gradient_steps"]["present"]) == (0, 30)
        assert "learning rate" in row["diagnosis"]


def test_learning_rate_1e_7_gives_tiny_updates(written):
    for row in written("lr_1e-7_tiny").rows.values():
        assert row["changed_steps"] == 30
        # Steps of 2e-7 to 5e-7 of the weights' size (see the scenario).
        assert 1e-7 < row["max_relative_update"] < 1e-6
        assert row["severity"] == 1 and row["problem"] is False


def test_dead_relu_gradients_are_exactly_zero(written):
    rows = written("dead_relu").rows
    for name in ("hidden/kernel", "hidden/bias", "out/kernel"):
        assert rows[name]["gradient_steps"]["zero"] == 30
        assert rows[name]["changed_steps"] == 0
    assert rows["out/bias"]["changed_steps"] == 30


def test_round_and_argmax_cut_the_gradient(written):
    rows = written("non_differentiable").rows
    for name in ("offset", "selector"):
        assert rows[name]["gradient_steps"]["none"] == 30
        assert "argmax" in rows[name]["diagnosis"]


def test_embedding_rows_never_updated(written):
    rows = written("embedding_unused_rows").rows
    table = rows["embedding/embeddings"]
    assert (table["rows_changed"], table["rows_total"]) == (scenarios.USED_IDS, scenarios.VOCABULARY) == (19, 30)
    assert "37% of rows (11 of 30) never updated" in table["diagnosis"]
    # Dense gradients: rows are only counted for sparse (IndexedSlices) ones.
    assert rows["head/kernel"]["rows_changed"] is None


def test_nan_midway(written):
    for row in written("nan_midway").rows.values():
        assert row["first_non_finite_step"] == scenarios.NAN_STEP == 15
        assert row["first_update_step"] == 0
        assert (row["gradient_steps"]["present"], row["gradient_steps"]["non_finite"]) == (15, 15)
        assert row["value_l2"] is None  # NaN, sent as null


def test_nan_value_stops_counting_as_changed(written):
    for row in written("nan_midway").rows.values():
        # Changes at steps 0..14, then NaN appears at step 15; after that the
        # optimizer writes NaN over NaN, which is no change.
        assert (row["last_update_step"], row["changed_steps"]) == (15, 16)


def test_stalled_since_the_schedule_reached_zero(written):
    rows = written("stalled_lr_schedule").rows
    for name in ("body/kernel", "body/bias"):
        # The rate is 0 from step 20 on, so step 19 made the last change.
        assert (rows[name]["last_update_step"], rows[name]["stalled_since_step"]) == (19, 19)
        assert rows[name]["logs_since_update"] == 40
        assert "gradient is still present" in rows[name]["diagnosis"]
    for name in ("head/kernel", "head/bias"):
        assert (rows[name]["last_update_step"], rows[name]["stalled_since_step"]) == (59, None)


def test_mixed_precision_skipped_steps_are_healthy(written):
    rows = written("mixed_precision").rows
    # A skipped step skips every variable, so they all start changing together,
    # after the first step(s) overflowed at loss scale 2**20.
    assert len({row["first_update_step"] for row in rows.values()}) == 1
    assert len({row["changed_steps"] for row in rows.values()}) == 1
    for row in rows.values():
        assert row["first_update_step"] >= 1
        assert 1 <= row["gradient_steps"]["non_finite"] <= 8
        assert row["first_non_finite_step"] is None
        assert row["severity"] == 0
        assert "skipped" in row["diagnosis"]


def test_gradient_accumulation_changes_every_fourth_step(written):
    for row in written("gradient_accumulation").rows.values():
        # 32 steps; updates at steps 3, 7, ..., 31.
        assert (row["first_update_step"], row["last_update_step"], row["changed_steps"]) == (3, 31, 8)
        assert row["gradient_steps"]["present"] == 32


def test_batchnorm_moving_statistics(written):
    rows = written("batchnorm_stats").rows
    for name in ("bn_net/bn/moving_mean", "bn_net/bn/moving_variance"):
        assert rows[name]["changed_steps"] == 32
        assert rows[name]["severity"] == 0
        assert "expected" in rows[name]["diagnosis"]


def test_bfloat16_updates_round_away(written):
    rows = written("bfloat16_rounding").rows
    assert {row["dtype"] for row in rows.values()} == {"bfloat16"}
    assert rows["linear/kernel"]["value_l2"] == pytest.approx(3 ** 0.5, rel=1e-3)  # still all ones
    assert rows["linear/bias"]["value_l2"] == 1.0
    assert all(row["changed_steps"] == 0 for row in rows.values())


def test_integer_trainable_variable(written):
    shift = written("int_trainable").rows["shift"]
    assert (shift["dtype"], shift["trainable"]) == ("int32", True)
    assert shift["gradient_steps"]["none"] == 30
    assert shift["max_relative_update"] is None  # no norm for integers


def test_compare_pair_disagrees_on_the_encoder_only(written):
    logdir = written("compare_buggy").logdir
    written("compare_fixed")
    from tensorboard import context

    provider = cli.load_provider(logdir)
    ctx = context.RequestContext()
    report = service.compare(cache_lib.RecordCache(provider), ctx, "", TAG, ["compare_buggy", "compare_fixed"])
    disagree = {row["variable"]: row["statuses"] for row in report["rows"] if row["disagree"]}
    assert disagree == {
        "encoder/kernel": {"compare_buggy": "never_updated", "compare_fixed": "updating"},
        "encoder/bias": {"compare_buggy": "never_updated", "compare_fixed": "updating"},
    }
