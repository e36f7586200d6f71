"""Tests of tb_varupdate.reader.reading (and the reports built from it) over real event files."""

import numpy as np
import pytest

from tensorboard import context
from tensorboard import errors

from tb_varupdate.format import metadata as md
from tb_varupdate.format import variables as vr
from tb_varupdate.reader import history as history_lib
from tb_varupdate.reader import reading
from tb_varupdate.reader import reports
from tb_varupdate.verdicts import analysis
from tb_varupdate.verdicts import vocabulary as vocabulary_lib

import logdirs


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    return logdirs.write_standard_logdir(str(tmp_path_factory.mktemp("records")))


@pytest.fixture(scope="module")
def provider(logdir):
    return logdirs.load_provider(logdir, samples=10)[0]


CTX = context.RequestContext()


def read(provider, run, tag):
    return reading.read_tag(reading.Source(provider, CTX), run, tag)


def verdicts(provider, run, tag):
    return reports.verdicts_report(read(provider, run, tag))


def history(provider, tracker):
    return reading.read_history(reading.Source(provider, CTX), tracker)


def heatmap(provider, tracker, buckets):
    kept = history(provider, tracker)
    values = reports.heatmap_values(tracker, kept)
    return reports.heatmap_report(tracker, reports.verdicts_report(tracker), kept, values, buckets)


class CountingProvider:
    """A data provider that records the read_tensors calls made through it."""

    def __init__(self, provider):
        self._provider = provider
        self.reads = []

    def list_runs(self, *args, **kwargs):
        return self._provider.list_runs(*args, **kwargs)

    def list_tensors(self, *args, **kwargs):
        return self._provider.list_tensors(*args, **kwargs)

    def read_tensors(self, ctx, *, experiment_id, plugin_name, downsample, run_tag_filter):
        self.reads.append((downsample, sorted(run_tag_filter.runs), sorted(run_tag_filter.tags)))
        return self._provider.read_tensors(
            ctx, experiment_id=experiment_id, plugin_name=plugin_name,
            downsample=downsample, run_tag_filter=run_tag_filter,
        )


VTAG = logdirs.TAG + md.VARIABLES_TAG_SUFFIX


def test_list_update_tags_lists_only_supported_updates_tags(provider):
    scan = reading.scan(reading.Source(provider, CTX, ""))
    assert {run: sorted(tags) for run, tags in scan.updates.items()} == {
        "badjson": ["varupdate/model"],
        "hand": ["varupdate/hand"],
        "malformed": ["varupdate/model"],
        "mismatch": ["varupdate/model"],
        "nonfinite": ["varupdate/model"],
        "step500": ["varupdate/model"],
        "truncated": ["varupdate/model"],
    }


def test_read_verdicts_is_exact_under_downsampling(provider):
    report = verdicts(provider, "step500", logdirs.TAG)
    assert report["step"] == 999 and report["logged"] == 1000
    assert report["warnings"] == []
    by_name = {row["variable"]: row for row in report["rows"]}
    assert (by_name["w"]["first_update_step"], by_name["w"]["last_update_step"]) == (500, 500)
    assert by_name["w"]["status"] == vocabulary_lib.STALLED
    assert by_name["b"]["status"] == vocabulary_lib.UPDATING
    assert by_name["frozen"]["status"] == vocabulary_lib.NEVER_UPDATED
    assert report["summary"] == analysis.summarize(report["rows"])
    assert set(report) == {"run", "tag", "step", "logged", "summary", "rows", "warnings"}


def test_only_ten_records_were_kept(provider):
    steps = history(provider, read(provider, "step500", logdirs.TAG)).steps
    assert len(steps) == 10 and steps[-1] == 999


@pytest.mark.parametrize(
    "run, tag, match",
    [
        ("nope", logdirs.TAG, "no run 'nope'"),
        ("step500", "varupdate/other", "has no varupdate tag"),
        ("step500", logdirs.TAG + md.VARIABLES_TAG_SUFFIX, "holds variable names"),
    ],
)
def test_read_verdicts_unknown_run_or_tag_raises_not_found(provider, run, tag, match):
    with pytest.raises(errors.NotFoundError, match=match):
        verdicts(provider, run, tag)


def test_malformed_records_are_skipped_with_warnings(provider):
    report = verdicts(provider, "malformed", logdirs.TAG)
    assert report["step"] == 2
    assert [row["variable"] for row in report["rows"]] == ["x"]
    assert report["rows"][0]["last_update_step"] == 2
    assert len(report["warnings"]) == 2
    assert "skipped 2 of 5 updates records (steps 3, 4)" in report["warnings"][0]
    assert "dtype=float32" in report["warnings"][0]
    assert "verdicts are as of step 2" in report["warnings"][1]


def test_unreadable_variables_record_gives_no_rows_and_a_warning(provider):
    report = verdicts(provider, "badjson", logdirs.TAG)
    assert report["rows"] == []
    assert report["step"] == 2
    assert any("{not json" in warning for warning in report["warnings"])
    assert any("cannot be named" in warning for warning in report["warnings"])


def test_names_hash_mismatch_warns(provider):
    report = verdicts(provider, "mismatch", logdirs.TAG)
    assert len(report["warnings"]) == 1
    assert "no kept variables record matches" in report["warnings"][0]


def test_other_format_version_is_skipped_with_warning(provider):
    scan = reading.scan(reading.Source(provider, CTX))
    assert "future" not in scan.updates
    assert scan.warnings == (
        "future varupdate/model: skipped: record format version 99 is not supported "
        "(this tb-varupdate reads versions %s); upgrade tb-varupdate to read it."
        % ", ".join(map(str, md.READABLE_VERSIONS)),
    )
    report = verdicts(provider, "future", logdirs.TAG)
    assert report["rows"] == [] and report["step"] is None
    assert "version 99" in report["warnings"][0]


def test_older_variables_record_with_matching_hash_is_used(tmp_path):
    # The newest variables record (step 5) names a variable that no updates
    # record has yet: the one at step 0 matches and must be used, silently.
    first, digest_1 = vr.encode_variables([logdirs.entry("a")])
    second, _ = vr.encode_variables([logdirs.entry("a"), logdirs.entry("z", joined=2)])
    vtag = logdirs.TAG + md.VARIABLES_TAG_SUFFIX
    rows = [{md.DELTA_L2: 1.0, md.VALUE_L2: 1.0, md.CHANGED_STEPS: 2, md.FIRST_UPDATE_STEP: 0,
             md.LAST_UPDATE_STEP: 1, md.LOGS_AT_LAST_UPDATE: 2}]
    logdirs.write_records(
        str(tmp_path / "run"),
        [(vtag, md.KIND_VARIABLES, 0, first), (vtag, md.KIND_VARIABLES, 5, second),
         (logdirs.TAG, md.KIND_UPDATES, 1, logdirs.updates(2, digest_1, rows))],
    )
    provider, _ = logdirs.load_provider(str(tmp_path))
    report = verdicts(provider, "run", logdirs.TAG)
    assert report["warnings"] == []
    assert [row["variable"] for row in report["rows"]] == ["a"]


def test_series_of_a_variable_appended_later_starts_when_it_joined(provider):
    tracker = read(provider, "hand", logdirs.HAND_TAG)
    report = reports.series_report(tracker, history(provider, tracker), ["c", "a"])
    assert list(report["series"]) == ["c", "a"]
    c, a = report["series"]["c"], report["series"]["a"]
    assert c["step"] == [3, 4, 5]
    assert c["relative_update"] == [0.0, None, 0.5]
    assert a["step"] == [0, 1, 2, 3, 4, 5]
    assert a["delta_l2"] == pytest.approx([0.0, 1.0, 0.0, 2.0, 0.0, 0.4])
    assert a["relative_update"] == pytest.approx([0.0, 0.5, 0.0, 0.5, 0.0, 0.1])
    assert a["gradient_state"] == ["not_given", "present", "zero", "none", "non_finite", "present"]
    assert a["gradient_l2"][:4] == [None, 1.5, 0.0, None] and a["gradient_l2"][4] is None
    assert (report["logged"], report["points"], report["downsampled"]) == (6, 6, False)


def test_series_unknown_variable_raises_not_found(provider):
    tracker = read(provider, "hand", logdirs.HAND_TAG)
    with pytest.raises(errors.NotFoundError, match="no variable 'zz'"):
        reports.series_report(tracker, history(provider, tracker), ["a", "zz"])


def test_heatmap_buckets_hand_records(provider):
    tracker = read(provider, "hand", logdirs.HAND_TAG)
    report = heatmap(provider, tracker, 3)
    assert report["bucket_start"] == [0, 2, 4] and report["bucket_end"] == [1, 3, 5]
    values = dict(zip(report["variables"], report["values"]))
    assert values["a"] == pytest.approx([0.5, 0.5, 0.1])
    # c: not tracked in the first bucket, logged without change in the second.
    assert values["c"] == [None, 0.0, 0.5]
    assert report["variables"] == [row["variable"] for row in reports.verdicts_report(tracker)["rows"]]


def test_heatmap_of_downsampled_run_reports_points(provider):
    tracker = read(provider, "step500", logdirs.TAG)
    report = heatmap(provider, tracker, 100)
    assert (report["logged"], report["points"], report["downsampled"]) == (1000, 10, True)
    assert len(report["bucket_start"]) == 100
    assert all(len(row) == 100 for row in report["values"])
    # 10 kept records in 100 buckets: at most 10 cells per variable are set.
    assert all(sum(cell is not None for cell in row) <= 10 for row in report["values"])


def test_verdicts_read_only_the_newest_records_and_the_history_on_demand(provider):
    counting = CountingProvider(provider)
    tracker = read(counting, "step500", logdirs.TAG)
    assert reports.verdicts_report(tracker)["step"] == 999
    assert counting.reads == [(1, ["step500"], [logdirs.TAG, VTAG])]
    steps = history(counting, tracker).steps
    assert steps[-1] == 999 and len(steps) == 10
    assert counting.reads[1:] == [(history_lib.DEFAULT_SAMPLES, ["step500"], [logdirs.TAG])]


def test_an_unreadable_newest_record_makes_the_tracker_read_every_kept_record(provider):
    counting = CountingProvider(provider)
    tracker = read(counting, "malformed", logdirs.TAG)
    assert tracker.newest_step == 2
    assert [read[0] for read in counting.reads] == [1, history_lib.DEFAULT_SAMPLES, history_lib.KEEP_ALL_SAMPLES]
    history(counting, tracker)
    assert len(counting.reads) == 3  # the history came with it


def test_older_unreadable_records_are_explained_by_the_charts_only(tmp_path):
    # The verdicts come from the newest record, which is fine; the series and
    # heatmap read every kept record and say which they skipped.
    good, _ = logdirs._three_step_records()
    bad = (logdirs.TAG, md.KIND_UPDATES, 1, np.zeros((2, md.NUM_COLUMNS), dtype=np.float32))
    logdirs.write_records(str(tmp_path / "run"), good[:2] + [bad] + good[3:])
    provider, _ = logdirs.load_provider(str(tmp_path))
    tracker = read(provider, "run", logdirs.TAG)
    assert reports.verdicts_report(tracker)["warnings"] == []
    (warning,) = heatmap(provider, tracker, 3)["warnings"]
    assert "skipped 1 of 3 updates records (steps 1)" in warning
    assert reports.series_report(tracker, history(provider, tracker), ["x"])["warnings"] == [warning]


def test_truncated_event_file_reads_up_to_the_cut(provider):
    report = verdicts(provider, "truncated", logdirs.TAG)
    assert 0 < report["step"] < 999
    assert report["logged"] == report["step"] + 1
    assert {row["variable"] for row in report["rows"]} == {"w", "b", "frozen"}


def test_non_finite_values_become_none(provider):
    report = verdicts(provider, "nonfinite", logdirs.TAG)
    (row,) = report["rows"]
    assert row["status"] == vocabulary_lib.NON_FINITE
    assert row["value_l2"] is None and row["latest_delta_l2"] is None
    tracker = read(provider, "nonfinite", logdirs.TAG)
    series = reports.series_report(tracker, history(provider, tracker), ["x"])
    assert series["series"]["x"]["value_l2"] == [None]
    assert series["series"]["x"]["gradient_state"] == ["non_finite"]


def test_real_tracker_with_a_variable_added_mid_run(tmp_path):
    import tensorflow as tf

    from tb_varupdate.writers.tf.tracker import VariableUpdateTracker

    class Growing(tf.Module):
        def __init__(self):
            super().__init__()
            self.weights = [tf.Variable(1.0, name="first")]

    module = Growing()
    tracker = VariableUpdateTracker(module, name="grow", on_stuck="ignore")
    writer = tf.summary.create_file_writer(str(tmp_path / "run"))
    with writer.as_default():
        for step in range(10):
            if step == 4:
                module.weights.append(tf.Variable(2.0, name="late"))
            for variable in module.weights:
                variable.assign_add(0.5)
            tracker.log(step)
    writer.close()
    provider, _ = logdirs.load_provider(str(tmp_path))
    loaded = read(provider, "run", md.updates_tag("grow"))
    report = reports.verdicts_report(loaded)
    assert report["warnings"] == []
    first, late = loaded.names()
    rows = {row["variable"]: row for row in report["rows"]}
    assert rows[late]["logged_steps"] == 6
    series = reports.series_report(loaded, history(provider, loaded), [first, late])["series"]
    assert series[first]["step"] == list(range(10))
    assert series[late]["step"] == [4, 5, 6, 7, 8, 9]
