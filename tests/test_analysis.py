"""Verdict logic on hand-made records: no TensorFlow, no event files."""

import numpy as np
import pytest

from tb_varupdate import analysis
from tb_varupdate import metadata as md


def _row(logged=100, step=99, trainable=True, joined=0, dtype="float32", shape=(4, 3), **columns):
    """The verdict of one variable whose newest record has the given columns."""
    ints = np.zeros((1, md.NUM_COLUMNS), np.int64)
    floats = np.zeros((1, md.NUM_COLUMNS), np.float64)
    ints[0, [md.FIRST_UPDATE_STEP, md.LAST_UPDATE_STEP, md.FIRST_NON_FINITE_STEP, md.ROWS_CHANGED]] = -1
    ints[0, md.TRAINABLE] = int(trainable)
    floats[0, md.VALUE_L2] = 1.0
    floats[0, md.MAX_RELATIVE_UPDATE] = 0.01
    for name, value in columns.items():
        column = getattr(md, name.upper())
        (floats if column in md.FLOAT_COLUMNS else ints)[0, column] = value
    record = md.parse_updates(md.encode_updates({"logged": logged, "names_hash": 0, "every_n": 1}, ints, floats))
    entry = {"name": "v", "shape": list(shape), "dtype": dtype, "trainable": trainable, "joined": joined}
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
    floats[:, md.MAX_RELATIVE_UPDATE] = [0.1, 0.1, 1e-9]
    ints[:, md.CHANGED_STEPS] = [10, 0, 10]
    ints[:, md.LAST_UPDATE_STEP] = [9, -1, 9]
    ints[:, md.LOGS_AT_LAST_UPDATE] = [10, 0, 10]
    ints[:, md.FIRST_NON_FINITE_STEP] = -1
    ints[:, md.TRAINABLE] = 1
    record = md.parse_updates(md.encode_updates({"logged": 10, "names_hash": 0, "every_n": 1}, ints, floats))
    rows = analysis.verdicts(entries, record, 9)
    assert [(r["variable"], r["status"]) for r in rows] == [("b", "never_updated"), ("c", "tiny_updates"), ("a", "updating")]
    assert analysis.summarize(rows) == {
        "variables": 3, "trainable": 3, "problems": 1, "warnings": 1,
        "by_status": {"non_finite": 0, "never_updated": 1, "stalled": 0, "tiny_updates": 1, "updating": 1},
    }
    assert not analysis.is_healthy(rows)


def test_more_rows_than_names_is_a_format_error():
    record = md.parse_updates(md.encode_updates({"logged": 1, "names_hash": 0, "every_n": 1},
                                                np.zeros((2, md.NUM_COLUMNS)), np.zeros((2, md.NUM_COLUMNS))))
    with pytest.raises(md.FormatError, match="2 variable rows but its variables record names only 1"):
        analysis.verdicts([{"name": "v", "shape": [], "dtype": "float32", "trainable": True, "joined": 0}], record, 0)
