"""Verdict logic on hand-made records: no TensorFlow, no event files."""

import numpy as np
import pytest

from tb_varupdate.format import metadata as md
from tb_varupdate.verdicts import analysis
from tb_varupdate.verdicts import vocabulary as vocabulary_lib
from tb_varupdate.writers import reference


def _row(logged=100, step=99, trainable=True, joined=0, dtype="float32", shape=(4, 3), header=None,
         first_trainable=None, role=None, version=3, zero_init=None, **columns):
    """The verdict of one variable whose newest record has the given columns.

    `trainable` is the record's flag, `first_trainable` the variables record's
    (the same unless given); `header` adds header fields; `version=2` drops
    the TRAINABLE column as version 2 writers did.
    """
    ints = np.zeros((1, md.NUM_COLUMNS), np.int64)
    floats = np.zeros((1, md.NUM_COLUMNS), np.float64)
    ints[0, [md.FIRST_UPDATE_STEP, md.LAST_UPDATE_STEP, md.FIRST_NON_FINITE_STEP, md.ROWS_CHANGED]] = -1
    ints[0, md.TRAINABLE] = int(trainable)
    floats[0, md.VALUE_L2] = 1.0
    floats[0, md.MAX_RELATIVE_UPDATE] = 0.01
    for name, value in columns.items():
        column = getattr(md, name.upper())
        (floats if column in md.FLOAT_COLUMNS else ints)[0, column] = value
    fields = {"logged": logged, "names_hash": 0, "every_n": 1, "logs_at_last_finite_grads": logged}
    fields.update(header or {})
    array = reference.updates_record(fields, ints, floats)
    if version == 2:
        array = array[:, : md.NUM_COLUMNS_V2]
    record = md.parse_updates(array)
    entry = {"name": "v", "shape": list(shape), "dtype": dtype, "joined": joined,
             "trainable": trainable if first_trainable is None else first_trainable}
    if role:
        entry["role"] = role
    if zero_init is not None:
        entry["zero_init"] = zero_init
    (row,) = analysis.verdicts([entry], record, step)
    return row


def _healthy(**overrides):
    columns = dict(changed_steps=100, first_update_step=0, last_update_step=99, logs_at_last_update=100, grad_present_steps=100)
    columns.update(overrides)
    return _row(**columns)


def test_updating_variable_is_healthy():
    row = _healthy()
    assert (row["status"], row["gradient"], row["problem"]) == ("updating", "present", False)
    assert row["changed_fraction"] == 1.0 and row["diagnosis"] == "Updating."


@pytest.mark.parametrize(
    "gradient_columns, gradient, cause",
    [
        (dict(grad_present_steps=100), "present", "rebound with `v = v - lr * g`"),
        (dict(grad_none_steps=100), "missing", "not connected to the loss"),
        (dict(grad_zero_steps=100), "zero", "dead units"),
        (dict(grad_none_steps=50, grad_present_steps=50), "intermittent", "conditional branch"),
        (dict(grad_non_finite_steps=100), "non_finite", "NaN or Inf"),
        ({}, "not_logged", "pass `gradients=`"),
    ],
)
def test_never_updated_diagnosis_follows_the_gradient(gradient_columns, gradient, cause):
    row = _row(**gradient_columns)
    assert (row["status"], row["gradient"], row["problem"]) == ("never_updated", gradient, True)
    assert cause in row["diagnosis"]
    assert row["first_update_step"] is None and row["last_update_step"] is None


@pytest.mark.parametrize(
    "gradient_columns, cause",
    [
        (dict(grad_none_steps=100), "not on the path to the loss (a `target_modules` entry"),
        (dict(grad_zero_steps=100), "adapter's input is zero"),
        (dict(grad_present_steps=100), "in none of the optimizer's `param_groups`"),
    ],
)
def test_a_zero_init_parameter_that_never_changed_says_its_adapter_does_nothing(gradient_columns, cause):
    row = _row(role="parameter", zero_init=True, **gradient_columns)
    assert (row["status"], row["problem"]) == ("never_updated", True)
    assert row["diagnosis"].startswith("Never changed: it is still at its zero init, so its adapter adds nothing")
    assert cause in row["diagnosis"]
    # Without the mark, or once it changed, the usual sentences.
    assert "zero init" not in _row(role="parameter", **gradient_columns)["diagnosis"]
    assert _healthy(role="parameter", zero_init=True)["diagnosis"] == "Updating."


def test_frozen_variable_that_never_changes_is_quiet():
    row = _row(trainable=False)
    assert (row["status"], row["severity"], row["problem"]) == ("never_updated", 0, False)
    assert "frozen on purpose" in row["diagnosis"]


def test_change_at_one_middle_step_of_a_thousand_is_a_stall_not_never_updated():
    row = _row(logged=1000, step=999, changed_steps=1, first_update_step=500, last_update_step=500,
               logs_at_last_update=501, grad_present_steps=1000)
    assert (row["status"], row["first_update_step"], row["last_update_step"], row["stalled_since_step"]) == (
        "stalled", 500, 500, 500)
    assert "Changed until step 500, then stopped for 499 logged steps" in row["diagnosis"]


@pytest.mark.parametrize(
    "logs_since, status",
    [
        (analysis.STALL_MIN_LOGS - 1, "updating"),  # too short to call
        (analysis.STALL_MIN_LOGS, "stalled"),
    ],
)
def test_stall_needs_a_minimum_quiet_window(logs_since, status):
    row = _row(logged=40, step=39, changed_steps=10, first_update_step=0, last_update_step=39 - logs_since,
               logs_at_last_update=40 - logs_since)
    assert row["status"] == status


def test_gradient_accumulation_rhythm_is_not_a_stall():
    # Changes every 30 steps; 29 quiet steps at the end of 120 is its rhythm.
    row = _row(logged=120, step=119, changed_steps=3, first_update_step=30, last_update_step=90,
               logs_at_last_update=91, grad_present_steps=120)
    assert row["status"] == "updating"


def test_tiny_updates_below_threshold_warn_but_do_not_fail():
    row = _healthy(max_relative_update=analysis.TINY_RELATIVE_UPDATE / 10)
    assert (row["status"], row["severity"], row["problem"]) == ("tiny_updates", 1, False)
    assert "learning rate is likely too small" in row["diagnosis"]


def test_non_finite_value_wins_over_everything():
    row = _healthy(first_non_finite_step=42, grad_non_finite_steps=3)
    assert (row["status"], row["gradient"], row["first_non_finite_step"]) == ("non_finite", "non_finite", 42)
    assert "step 42" in row["diagnosis"] and "non-finite at 3 steps" in row["diagnosis"]


def test_loss_scale_skipped_steps_are_healthy():
    row = _healthy(changed_steps=95, grad_present_steps=95, grad_non_finite_steps=5)
    assert (row["status"], row["gradient"], row["problem"]) == ("updating", "present", False)
    assert "5 steps had a non-finite gradient and were skipped" in row["diagnosis"]


def test_assignment_updated_statistic_is_healthy_without_gradient():
    row = _row(trainable=False, changed_steps=100, first_update_step=0, last_update_step=99, logs_at_last_update=100)
    assert (row["status"], row["gradient"], row["severity"]) == ("updating", "not_logged", 0)


def test_embedding_rows_never_updated_are_reported():
    row = _healthy(rows_changed=63, shape=(100, 8))
    assert (row["rows_changed"], row["rows_total"]) == (63, 100)
    assert "37% of rows (37 of 100) never updated" in row["diagnosis"]


def test_late_variable_counts_only_its_own_records():
    row = _row(logged=100, joined=60, changed_steps=40, first_update_step=60, last_update_step=99, logs_at_last_update=100)
    assert (row["logged_steps"], row["changed_fraction"]) == (40, 1.0)


def test_non_finite_numbers_become_none_for_json():
    row = _healthy(delta_l2=np.nan)
    assert row["latest_delta_l2"] is None and row["latest_relative_update"] is None


def test_rows_sort_problems_first_then_by_name():
    entries = [{"name": n, "shape": [2], "dtype": "float32", "trainable": True, "joined": 0} for n in ("a", "b", "c")]
    ints = np.zeros((3, md.NUM_COLUMNS), np.int64)
    floats = np.zeros((3, md.NUM_COLUMNS), np.float64)
    floats[:, md.MAX_RELATIVE_UPDATE] = [0.1, 0.1, 1e-8]
    ints[:, md.CHANGED_STEPS] = [10, 0, 10]
    ints[:, md.LAST_UPDATE_STEP] = [9, -1, 9]
    ints[:, md.LOGS_AT_LAST_UPDATE] = [10, 0, 10]
    ints[:, md.FIRST_NON_FINITE_STEP] = -1
    ints[:, md.TRAINABLE] = 1
    record = md.parse_updates(reference.updates_record({"logged": 10, "names_hash": 0, "every_n": 1}, ints, floats))
    rows = analysis.verdicts(entries, record, 9)
    assert [(r["variable"], r["status"]) for r in rows] == [("b", "never_updated"), ("c", "tiny_updates"), ("a", "updating")]
    assert analysis.summarize(rows) == {
        "variables": 3, "trainable": 3, "problems": 1, "warnings": 1,
        "by_status": {"non_finite": 0, "replicas_diverged": 0, "never_updated": 1, "stalled": 0, "tiny_updates": 1,
                      "updating": 1},
    }
    assert not analysis.is_healthy(rows)


def test_more_rows_than_names_is_a_format_error():
    record = md.parse_updates(reference.updates_record({"logged": 1, "names_hash": 0, "every_n": 1},
                                                np.zeros((2, md.NUM_COLUMNS)), np.zeros((2, md.NUM_COLUMNS))))
    with pytest.raises(md.FormatError, match="2 variable rows but its variables record names only 1"):
        analysis.verdicts([{"name": "v", "shape": [], "dtype": "float32", "trainable": True, "joined": 0}], record, 0)


# Honest verdicts (#10 items 6-7, #11, #13 item 14).

def _dying(run, version=3, logged=1000):
    """A variable that trained for `logged - run` records, then got only non-finite gradients (skipped)."""
    healthy = logged - run
    return _row(logged=logged, step=logged - 1, version=version, header={"logs_at_last_finite_grads": healthy},
                changed_steps=healthy, first_update_step=0, last_update_step=healthy - 1,
                logs_at_last_update=healthy, grad_present_steps=healthy, grad_non_finite_steps=run, grad_l2=np.inf)


def test_non_finite_gradients_to_the_end_are_a_problem_whatever_loss_scaling_does():
    row = _dying(analysis.NON_FINITE_RUN_MIN_LOGS + 30)
    assert (row["status"], row["gradient"], row["problem"]) == ("stalled", "non_finite", True)
    assert row["non_finite_gradient_run"] == 50
    assert "NaN or Inf at each of the last 50 logged steps" in row["diagnosis"]
    assert "last changed at step 949" in row["diagnosis"]


@pytest.mark.parametrize(
    "run, version",
    [
        (analysis.NON_FINITE_RUN_MIN_LOGS - 1, 3),  # a few skips in a row: loss scaling at work
        (50, 2),  # version 2 records do not say how long the run is: as before
    ],
)
def test_short_or_unknown_non_finite_runs_stay_loss_scale_skips(run, version):
    row = _dying(run, version=version)
    assert (row["status"], row["gradient"], row["problem"]) == ("updating", "present", False)
    assert "skipped, as loss scaling does" in row["diagnosis"]
    assert row["non_finite_gradient_run"] is None


def test_non_finite_run_spares_variables_whose_gradient_is_finite_now():
    row = _healthy(grad_l2=0.5, header={"logs_at_last_finite_grads": 10})
    assert (row["status"], row["problem"], row["non_finite_gradient_run"]) == ("updating", False, None)


def test_zero_gradient_says_the_loss_does_not_depend_on_it_not_only_dead_relus():
    row = _row(grad_zero_steps=100, shape=(1,))
    assert (row["status"], row["gradient"], row["problem"]) == ("never_updated", "zero", True)
    assert "the loss does not depend on it" in row["diagnosis"]
    assert "WGAN critic's output bias" in row["diagnosis"] and "--allow" in row["diagnosis"]


def test_embedding_with_gradients_but_no_row_changed_was_not_applied():
    row = _row(shape=(20000, 8), rows_changed=0, grad_present_steps=100)
    assert (row["status"], row["gradient"]) == ("never_updated", "present")
    assert "ids that never occur" not in row["diagnosis"]
    assert "No row ever changed although gradients arrived: the update was not applied" in row["diagnosis"]
    assert "learning rate is 0" in row["diagnosis"]


@pytest.mark.parametrize("max_relative", [np.nan, -1.0])
def test_unmeasured_relative_update_is_unknown_never_tiny(max_relative):
    row = _healthy(max_relative_update=max_relative)
    assert (row["status"], row["max_relative_update"], row["severity"]) == ("updating", None, 0)
    assert "relative update is unknown" in row["diagnosis"]


@pytest.mark.parametrize("shape", [(0,), (0, 3), (5, 0)])
def test_a_variable_without_elements_is_not_a_problem(shape):
    row = _row(shape=shape, grad_zero_steps=100)
    assert (row["status"], row["severity"], row["problem"], row["quiet"]) == ("empty", 0, False, True)
    assert row["label"] == "no elements"
    assert "no elements" in row["diagnosis"] and "dead" not in row["diagnosis"]
    assert analysis.summarize([row])["by_status"] == dict.fromkeys(vocabulary_lib.COUNTED_STATUSES, 0)


def test_frozen_mid_run_after_changing_is_frozen_not_a_problem():
    row = _row(trainable=False, first_trainable=True, changed_steps=50, first_update_step=0,
               last_update_step=49, logs_at_last_update=50, grad_present_steps=50)
    assert (row["trainable"], row["severity"], row["quiet"], row["label"]) == (False, 0, True, "frozen")
    assert "Frozen (trainable=False now, trainable when first tracked); it last changed at step 49" in row["diagnosis"]


@pytest.mark.parametrize(
    "role, fix",
    [(None, "call `compile()` again"), ("parameter", "optimizer.add_param_group")],
)
def test_unfrozen_without_effect_is_a_problem_that_names_the_recompile(role, fix):
    row = _row(trainable=True, first_trainable=False, role=role, grad_present_steps=100)
    assert (row["status"], row["problem"]) == ("never_updated", True)
    assert "Made trainable after it was first tracked (unfrozen), but never changed" in row["diagnosis"]
    assert fix in row["diagnosis"]


def test_torch_frozen_parameter_that_changes_is_suspicious():
    row = _row(trainable=False, role="parameter", changed_steps=100, first_update_step=0, last_update_step=99,
               logs_at_last_update=100, grad_zero_steps=100)
    assert (row["severity"], row["problem"], row["quiet"], row["role"]) == (1, False, False, "parameter")
    assert "weight decay applied to a zero-filled gradient" in row["diagnosis"] and "`.data`" in row["diagnosis"]


@pytest.mark.parametrize("changed", [0, 100])
def test_torch_buffers_are_expected_to_change_or_not(changed):
    row = _row(trainable=False, role="buffer", changed_steps=changed, first_update_step=0 if changed else -1,
               last_update_step=99 if changed else -1, logs_at_last_update=changed)
    assert (row["severity"], row["quiet"]) == (0, True)
    assert "buffer" in row["diagnosis"].lower()


@pytest.mark.parametrize(
    "gradient_columns, cause",
    [
        (dict(grad_present_steps=100), "in none of the optimizer's `param_groups` (a layer replaced after the optimizer was created"),
        (dict(grad_present_steps=100), "`p = p - lr * p.grad`"),
        (dict(grad_none_steps=100), "`detach()` or `torch.no_grad()`"),
        (dict(grad_none_steps=100), "`zero_grad()` runs between `backward()` and `step()`"),
        (dict(grad_none_steps=100), "`find_unused_parameters=True`"),
        (dict(grad_zero_steps=100), "`zero_grad(set_to_none=False)`"),
        (dict(grad_zero_steps=100), "dead units"),
        (dict(grad_non_finite_steps=100), "NaN or Inf"),
    ],
)
def test_torch_rows_name_pytorch_causes(gradient_columns, cause):
    row = _row(role="parameter", **gradient_columns)
    assert (row["status"], row["problem"]) == ("never_updated", True)
    assert cause in row["diagnosis"]
    assert "assign_sub" not in row["diagnosis"]


def test_torch_grad_scaler_skips_are_healthy():
    row = _healthy(role="parameter", changed_steps=95, grad_present_steps=95, grad_non_finite_steps=5)
    assert (row["status"], row["problem"]) == ("updating", False)
    assert "skipped, as `GradScaler` does with AMP" in row["diagnosis"]


def test_accepted_rows_are_marked_and_not_counted_as_problems():
    row = _row(grad_zero_steps=100)
    assert row["allowed"] is False
    (accepted,) = analysis.apply_allow([row], analysis.compile_allow(["^v$"]))
    assert (accepted["allowed"], accepted["problem"], accepted["severity"]) == (True, False, 2)
    assert analysis.summarize([accepted])["problems"] == 0


def test_rows_carry_what_the_dashboard_draws():
    frozen = _row(trainable=False)
    problem = _row(grad_present_steps=100)
    assert (frozen["quiet"], frozen["label"], frozen["severity"]) == (True, "frozen", 0)
    assert (problem["quiet"], problem["label"], problem["severity"]) == (False, "never updated", 2)


def test_zero_bias_that_never_trains_has_relative_update_zero_like_the_heatmap():
    row = _row(value_l2=0.0, delta_l2=0.0, grad_none_steps=100)
    assert row["latest_relative_update"] == 0.0


def test_relative_update_is_the_backends_formula():
    delta = np.array([0.0, 0.0, 1.0, 1.0, np.nan, 1.0, np.inf])
    value = np.array([0.0, 2.0, 2.0, 0.0, 1.0, np.nan, 1.0])
    expected = np.array([0.0, 0.0, 0.5, np.nan, np.nan, np.nan, np.nan])
    np.testing.assert_array_equal(analysis.relative_update(delta, value), expected)


def test_vocabulary_lists_every_status_and_gradient_in_order():
    vocabulary = vocabulary_lib.vocabulary()
    assert [s["name"] for s in vocabulary["statuses"]] == list(vocabulary_lib.STATUSES)
    assert {s["name"] for s in vocabulary["statuses"] if s["problem"]} == vocabulary_lib.PROBLEM_STATUSES
    assert [g["name"] for g in vocabulary["gradients"]] == list(vocabulary_lib.GRADIENT_VERDICTS)
    assert vocabulary["counted_statuses"] == list(vocabulary_lib.COUNTED_STATUSES)
    assert [s["value"] for s in vocabulary["severities"]] == [2, 1, 0]
    assert vocabulary["labels"] == {"frozen": "frozen", "accepted": "accepted"}


def test_replicas_diverged_is_a_problem_with_its_step_and_spread_trainable_or_not():
    entries = [{"name": n, "shape": [2], "dtype": "float32", "trainable": t, "joined": 0, "role": "parameter"}
               for n, t in (("w", True), ("frozen", False), ("ok", True))]
    ints = np.zeros((3, md.NUM_COLUMNS), np.int64)
    floats = np.zeros((3, md.NUM_COLUMNS), np.float64)
    ints[:, md.CHANGED_STEPS] = [10, 0, 10]
    ints[:, md.LAST_UPDATE_STEP] = [9, -1, 9]
    ints[:, md.LOGS_AT_LAST_UPDATE] = [10, 0, 10]
    ints[:, md.FIRST_NON_FINITE_STEP] = -1
    ints[:, md.TRAINABLE] = [1, 0, 1]
    floats[:, md.MAX_RELATIVE_UPDATE] = 0.1
    record = reference.updates_record({"logged": 10, "names_hash": 0, "every_n": 1}, ints, floats)
    extra = np.zeros((4, 2), np.int32)
    extra[1:, 0] = np.asarray([0.5, 0.25, 0.0], np.float32).view(np.int32)
    extra[1:, 1] = [9, 4, -1]
    updates = md.parse_updates(np.concatenate([record, extra], 1))
    rows = {r["variable"]: r for r in analysis.verdicts(entries, updates, 9)}
    assert rows["w"]["status"] == rows["frozen"]["status"] == "replicas_diverged"
    assert rows["w"]["problem"] and rows["frozen"]["problem"] and not rows["ok"]["problem"]
    assert (rows["w"]["replicas_diverged_step"], rows["w"]["replica_spread"]) == (9, 0.5)
    assert "step 9" in rows["w"]["diagnosis"] and "0.5" in rows["w"]["diagnosis"]
    assert (rows["ok"]["status"], rows["ok"]["replicas_diverged_step"], rows["ok"]["replica_spread"]) == ("updating", None, 0.0)
    assert analysis.summarize(list(rows.values()))["by_status"]["replicas_diverged"] == 1  # trainable ones
    # Version 3 records carry no replica check.
    plain = analysis.verdicts(entries, md.parse_updates(record), 9)
    assert all(r["replicas_diverged_step"] is None and r["replica_spread"] is None for r in plain)


def test_relative_update_cases():
    delta = [0.0, 1.0, 1.0, 1.0, np.nan, 0.0]
    value = [0.0, 4.0, 0.0, float("inf"), 2.0, np.nan]
    result = analysis.relative_update(delta, value)
    # no change is 0 even at value 0; undefined ratios are NaN.
    np.testing.assert_array_equal(result, [0.0, 0.25, np.nan, np.nan, np.nan, 0.0])


def test_relative_update_keeps_float32_when_asked():
    delta = np.array([[0.0, 1.0], [2.0, np.nan]], dtype=np.float32)
    value = np.array([[0.0, 4.0], [8.0, 1.0]], dtype=np.float32)
    result = analysis.relative_update(delta, value, dtype=np.float32)
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, [[0.0, 0.25], [0.25, np.nan]])
