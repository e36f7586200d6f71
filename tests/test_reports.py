"""Tests of tb_varupdate.reader.reports: route documents from data already read (no I/O)."""

import numpy as np
import pytest

from tensorboard import errors

from tb_varupdate.format import metadata as md
from tb_varupdate.format import variables as vr
from tb_varupdate.reader import history as history_lib
from tb_varupdate.reader import reading
from tb_varupdate.reader import reports

import logdirs


def test_compare_report_puts_disagreements_first():
    def row(name, status, severity, trainable=True):
        return {"variable": name, "status": status, "gradient": "present", "trainable": trainable,
                "severity": severity, "label": "frozen" if not trainable else status.replace("_", " "),
                "quiet": not trainable, "allowed": False}

    report = reports.compare_report(
        "varupdate/model",
        {
            "buggy": {"rows": [row("k", "never_updated", 2), row("b", "updating", 0)], "warnings": []},
            "fixed": {"rows": [row("k", "updating", 0), row("b", "never_updated", 0, trainable=False),
                               row("extra", "updating", 0)],
                      "warnings": []},
            "empty": None,
        },
    )
    assert report["runs"] == ["buggy", "fixed", "empty"]
    assert [r["variable"] for r in report["rows"]] == ["k", "b", "extra"]
    assert report["rows"][0]["statuses"] == {"buggy": "never_updated", "fixed": "updating", "empty": None}
    assert all(r["disagree"] for r in report["rows"])  # "empty" lacks every variable
    # Each run's badge as its own row has it: b is frozen (quiet) in "fixed" only.
    badges = report["rows"][1]["badges"]
    assert badges["buggy"] == {"status": "updating", "label": "updating", "quiet": False, "severity": 0, "allowed": False}
    assert badges["fixed"] == {"status": "never_updated", "label": "frozen", "quiet": True, "severity": 0, "allowed": False}
    assert badges["empty"] is None
    assert report["warnings"] == ["empty: has no tag 'varupdate/model'"]


class Datum:
    """What a data provider's read_tensors returns per record (step and numpy)."""

    def __init__(self, step, numpy):
        self.step, self.numpy = step, numpy


def _records_and_history(entries, updates_by_step):
    data = [Datum(step, array) for step, array in updates_by_step]
    history = history_lib.read_history("run", logdirs.TAG, data)
    records = reading.TagRecords("run", logdirs.TAG, entries, history.steps[-1].item() if len(history.steps) else None,
                                 history.newest, history.warnings, history=history)
    return records, history


def _one_variable_records(name, steps):
    entries = [logdirs.entry(name)]
    _, digest = vr.encode_variables(entries)
    updates = []
    for index, step in enumerate(steps):
        rows = [{md.DELTA_L2: 1.0, md.VALUE_L2: 2.0, md.CHANGED_STEPS: index + 1, md.FIRST_UPDATE_STEP: 0,
                 md.LAST_UPDATE_STEP: 0, md.LOGS_AT_LAST_UPDATE: index + 1}]
        updates.append((step, logdirs.updates(index + 1, digest, rows)))
    return _records_and_history(entries, updates)


@pytest.mark.parametrize(
    "steps",
    [
        [-(2**63), 0, 2**63 - 1],  # int64 extremes: the span overflows int64
        [0, 1, 2, 1_764_000_000_000_000_000],  # a time.time_ns() step
        [-50, -40, -30],  # negative steps
    ],
)
def test_heatmap_of_extreme_steps_has_ordered_buckets_inside_the_steps(steps):
    records, history = _one_variable_records("x", steps)
    document = reports.heatmap_report(
        records, reports.verdicts_report(records), history, reports.heatmap_values(records, history), 100
    )
    starts, ends = document["bucket_start"], document["bucket_end"]
    assert starts[0] == steps[0] and ends[-1] == steps[-1]
    assert all(start <= end for start, end in zip(starts, ends))
    assert all(end + 1 == start for end, start in zip(ends, starts[1:]))
    # A cell has a value exactly where some kept record's step falls.
    filled = {max(i for i, start in enumerate(starts) if start <= step) for step in steps}
    assert {i for i, cell in enumerate(document["values"][0]) if cell is not None} == filled


def test_series_of_a_variable_no_kept_record_carries_is_empty():
    # Only float32 updates records: none readable, but the variables record names "x".
    entries = [logdirs.entry("x")]
    records, history = _records_and_history(entries, [(0, np.zeros((2, md.NUM_COLUMNS), np.float32))])
    document = reports.series_report(records, history, ["x"])
    assert document["series"]["x"]["step"] == [] and document["series"]["x"]["gradient_state"] == []
    assert "skipped 1 of 1 updates records" in document["warnings"][0]


def test_a_variable_named_empty_string_has_a_series():
    records, history = _one_variable_records("", [0, 1])
    assert reports.series_report(records, history, [""])["series"][""]["step"] == [0, 1]
    with pytest.raises(errors.NotFoundError, match="no variable 'y'"):
        reports.series_report(records, history, ["y"])


def test_a_history_written_by_two_trackers_says_so():
    records = logdirs.restarted_steps_records(writer_ids=(7, 8), step_regressions=0)
    data = [Datum(step, value) for tag, _, step, value in records if tag == logdirs.TAG]
    history = history_lib.read_history("run", logdirs.TAG, data)
    (warning,) = history.warnings
    assert "2 trackers wrote to this tag" in warning and "use another tracker name or logdir" in warning


def test_step_regressions_in_the_newest_header_are_a_tag_warning():
    records = logdirs.restarted_steps_records(writer_ids=(7,), step_regressions=4)
    newest = md.parse_updates(records[-1][3])
    (warning,) = reading.header_warnings("run", logdirs.TAG, newest, {7})
    assert "4 of 3 records had a step that was not greater" in warning and "step=optimizer.iterations" in warning


def test_compare_report_of_a_tag_without_verdicts_and_a_run_without_the_tag():
    empty = reading.TagRecords("a", "varupdate/model", None, None, None, ("a varupdate/model: skipped",))
    report = reports.compare_report("varupdate/model", {"a": reports.verdicts_report(empty), "b": None})
    assert report["rows"] == [] and report["runs"] == ["a", "b"]
    assert report["warnings"] == ["a varupdate/model: skipped", "b: has no tag 'varupdate/model'"]
