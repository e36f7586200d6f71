"""Tests of tb_varupdate.writers.reference: the writer contract on NumPy, read back by the reader like any writer's."""

import subprocess
import sys

import numpy as np
import pytest

from tb_varupdate import cli
from tb_varupdate.errors import StuckVariableError
from tb_varupdate.format import metadata as md
from tb_varupdate.format import variables as vr
from tb_varupdate.verdicts import analysis
from tb_varupdate.writers import reference


def _train(tracker, weights, steps, stuck=("frozen",)):
    for step in range(steps):
        for name, array in weights.items():
            if name not in stuck:
                array -= np.float32(0.01)
        tracker.log(step, gradients={name: np.ones_like(array) for name, array in weights.items()
                                     if name not in stuck})


def test_records_read_back_with_the_verdicts_and_the_writers_framework(tmp_path):
    weights = {"w": np.ones(3, np.float32), "frozen": np.ones(2, np.float32)}
    tracker = reference.ReferenceTracker(weights, str(tmp_path / "run"), on_stuck="ignore", framework=vr.FRAMEWORK_TORCH)
    _train(tracker, weights, 12)
    tracker.close()
    report = cli.check(str(tmp_path))
    rows = {row["variable"]: row for row in report["runs"]["run"]["varupdate/model"]["rows"]}
    assert (rows["w"]["status"], rows["w"]["gradient"]) == ("updating", "present")
    assert (rows["frozen"]["status"], rows["frozen"]["gradient"]) == ("never_updated", "not_logged")
    assert report["unreadable"] == []
    entries, _ = vr.parse_variables(tracker.document)
    assert {entry["framework"] for entry in entries} == {vr.FRAMEWORK_TORCH}


def test_the_framework_in_the_record_picks_the_advice():
    diagnoses = {}
    for framework in vr.FRAMEWORKS:
        weights = {"w": np.ones(3, np.float32)}
        tracker = reference.ReferenceTracker(weights, on_stuck="ignore", framework=framework)
        for step in range(10):
            tracker.log(step, gradients={"w": None})
        entries, _ = vr.parse_variables(tracker.document)
        (row,) = analysis.verdicts(entries, md.parse_updates(tracker.records[-1][1]), 9)
        diagnoses[framework] = row["diagnosis"]
    assert diagnoses[vr.FRAMEWORK_TF] != diagnoses[vr.FRAMEWORK_TORCH]


def test_the_hand_made_record_lays_out_the_header_as_fold_does():
    weights = {"a": np.ones(2, np.float32), "b": np.zeros(4, np.float32)}
    tracker = reference.ReferenceTracker(weights, on_stuck="ignore")
    _train(tracker, weights, 3, stuck=("b",))
    tracker.log(1)  # a step that does not grow
    step, record = tracker.records[-1]
    updates = md.parse_updates(record)
    rebuilt = reference.updates_record(
        {"logged": updates.logged, "names_hash": updates.names_hash, "every_n": updates.every_n,
         "writer_id": updates.writer_id, "step_regressions": updates.step_regressions,
         "logs_at_last_finite_grads": updates.logs_at_last_finite_grads},
        updates.ints, updates.floats)
    assert step == 1 and updates.step_regressions == 1
    np.testing.assert_array_equal(rebuilt, record)


@pytest.mark.parametrize("on_stuck", ["warn", "raise"])
def test_the_stuck_check_warns_or_raises_through_the_shared_check(on_stuck):
    weights = {"w": np.ones(3, np.float32), "frozen": np.ones(2, np.float32)}
    tracker = reference.ReferenceTracker(weights, on_stuck=on_stuck, stuck_after=5)
    if on_stuck == "raise":
        with pytest.raises(StuckVariableError, match="after 5 records"):
            _train(tracker, weights, 5)
    else:
        with pytest.warns(UserWarning, match=r"after 5 records \(step 4\), 1 trainable variable\(s\)"):
            _train(tracker, weights, 5)
    assert "frozen: never_updated" in tracker.stuck_message


def test_options_are_checked_with_the_shared_messages():
    with pytest.raises(ValueError, match="delta must be one of"):
        reference.ReferenceTracker({"w": np.ones(1)}, delta="approx")
    with pytest.raises(ValueError, match="every_n_steps must be an int >= 1"):
        reference.ReferenceTracker({"w": np.ones(1)}, every_n_steps=0)


def test_a_logging_error_is_one_warning_and_training_goes_on():
    tracker = reference.ReferenceTracker({"w": np.ones(3, np.float32)})
    with pytest.warns(UserWarning, match="logging failed and was skipped"):
        tracker.log(0, gradients={"w": "not an array"})
        tracker.log(1, gradients={"w": "not an array"})
    tracker.log(2)
    assert [step for step, _ in tracker.records] == [2]


def test_the_reference_writer_imports_neither_framework():
    code = ("import sys; sys.modules['tensorflow'] = None; sys.modules['torch'] = None\n"
            "from tb_varupdate.writers import reference\n"
            "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
