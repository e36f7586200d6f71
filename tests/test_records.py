"""Tests of tb_varupdate.records: pure helpers, then reading real event files."""

import math

import numpy as np
import pytest

from tensorboard import context
from tensorboard import errors

from tb_varupdate import analysis
from tb_varupdate import metadata as md
from tb_varupdate import records

import logdirs

NAN = float("nan")


# Pure helpers: no event files.


def test_downsample_count_maps_unset_and_keep_all():
    assert records.downsample_count(None) == records.DEFAULT_SAMPLES
    assert records.downsample_count(0) == records.KEEP_ALL_SAMPLES
    assert records.downsample_count(7) == 7


def test_downsample_count_rejects_negative():
    with pytest.raises(ValueError, match="samples=-1"):
        records.downsample_count(-1)


def test_json_safe_turns_non_finite_into_none():
    value = {"a": [1.0, NAN, float("inf")], "b": (np.float32("-inf"), np.int64(3)), "c": "x"}
    assert records.json_safe(value) == {"a": [1.0, None, None], "b": [None, 3], "c": "x"}


def test_round_significant():
    values = np.array([np.float32(0.1), 123456.789, -0.000123456, 0.0, NAN, float("inf")])
    result = records.round_significant(values, 4)
    assert result[:4].tolist() == [0.1, 123500.0, -0.0001235, 0.0]
    assert math.isnan(result[4]) and result[5] == float("inf")
    assert records.round_significant([np.float32(0.4)], 7).tolist() == [0.4]


def test_relative_update_cases():
    delta = [0.0, 1.0, 1.0, 1.0, NAN, 0.0]
    value = [0.0, 4.0, 0.0, float("inf"), 2.0, NAN]
    result = records.relative_update(delta, value)
    # no change is 0 even at value 0; undefined ratios are NaN.
    np.testing.assert_array_equal(result, [0.0, 0.25, NAN, NAN, NAN, 0.0])


@pytest.mark.parametrize(
    "first, last, buckets, starts, ends",
    [
        (0, 9, 5, [0, 2, 4, 6, 8], [1, 3, 5, 7, 9]),
        (0, 9, 3, [0, 3, 6], [2, 5, 9]),
        (10, 12, 100, [10, 11, 12], [10, 11, 12]),  # fewer steps than buckets
        (5, 5, 4, [5], [5]),
    ],
)
def test_bucket_edges(first, last, buckets, starts, ends):
    got_starts, got_ends = records.bucket_edges(first, last, buckets)
    assert got_starts.tolist() == starts
    assert got_ends.tolist() == ends


def test_bucket_max_takes_largest_and_leaves_empty_buckets_nan():
    steps = [0, 1, 5, 9]
    values = [[0.1, NAN], [0.3, NAN], [NAN, NAN], [0.0, 0.2]]
    starts, ends, matrix = records.bucket_max(steps, values, 3)
    assert starts.tolist() == [0, 3, 6]
    assert ends.tolist() == [2, 5, 9]
    np.testing.assert_array_equal(matrix, [[0.3, NAN, 0.0], [NAN, NAN, 0.2]])


def test_bucket_max_of_no_records_is_empty():
    starts, ends, matrix = records.bucket_max([], np.zeros((0, 2)), 10)
    assert starts.tolist() == [] and ends.tolist() == []
    assert matrix.shape == (2, 0)


def test_relative_update_keeps_float32_when_asked():
    delta = np.array([[0.0, 1.0], [2.0, NAN]], dtype=np.float32)
    value = np.array([[0.0, 4.0], [8.0, 1.0]], dtype=np.float32)
    result = records.relative_update(delta, value, dtype=np.float32)
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, [[0.0, 0.25], [0.25, NAN]])


def test_bucket_max_matches_a_loop_over_buckets():
    # Gaps between steps leave buckets empty, NaNs leave cells without a value.
    rng = np.random.default_rng(0)
    steps = np.sort(rng.choice(np.arange(1000), size=60, replace=False))
    values = rng.random((60, 3)).astype(np.float32)
    values[rng.random((60, 3)) < 0.3] = np.nan
    starts, ends, matrix = records.bucket_max(steps, values, 50)
    expected = np.full((3, len(starts)), np.nan)
    for bucket, (start, end) in enumerate(zip(starts, ends)):
        inside = values[(steps >= start) & (steps <= end)]
        for column in range(3):
            kept = inside[:, column][~np.isnan(inside[:, column])]
            if len(kept):
                expected[column, bucket] = kept.max()
    assert np.isnan(expected).any(axis=1).all()  # the case under test occurs
    np.testing.assert_array_equal(matrix, expected)


def test_encode_json_is_compact_with_non_finite_as_null():
    assert records.encode_json({"a": [1.5, 2], "b": "x"}) == b'{"a":[1.5,2],"b":"x"}'
    assert records.encode_json({"a": [NAN, float("inf")], "b": np.int64(3)}) == b'{"a":[null,null],"b":3}'
    assert records.encode_json({"name": "\u00e9"}) == b'{"name":"\\u00e9"}'


def test_nan_to_none():
    assert records.nan_to_none(np.array([[0.5, NAN], [float("-inf"), 0.0]])) == [[0.5, None], [None, 0.0]]


def test_history_count_caps_wide_trackers_by_bytes():
    assert records.history_count(None, 300) == records.DEFAULT_SAMPLES
    assert records.history_count(5, 300) == 5
    record_bytes = 10001 * md.NUM_COLUMNS * 4
    assert records.history_count(None, 10000) == records.MAX_HISTORY_BYTES // record_bytes
    assert records.history_count(0, 10000) == records.MAX_HISTORY_BYTES // record_bytes
    assert records.history_count(None, 10**9) == 1


def test_compare_report_puts_disagreements_first():
    class FakeTracker:
        def __init__(self, rows):
            self._rows = rows

        def verdicts(self):
            return {"rows": self._rows, "warnings": []}

    def row(name, status, severity):
        return {"variable": name, "status": status, "gradient": "present", "trainable": True, "severity": severity}

    report = records.compare_report(
        "varupdate/model",
        {
            "buggy": FakeTracker([row("k", "never_updated", 2), row("b", "updating", 0)]),
            "fixed": FakeTracker([row("k", "updating", 0), row("b", "updating", 0), row("extra", "updating", 0)]),
            "empty": None,
        },
    )
    assert report["runs"] == ["buggy", "fixed", "empty"]
    assert [r["variable"] for r in report["rows"]] == ["k", "b", "extra"]
    assert report["rows"][0]["statuses"] == {"buggy": "never_updated", "fixed": "updating", "empty": None}
    assert all(r["disagree"] for r in report["rows"])  # "empty" lacks every variable
    assert report["warnings"] == ["empty: has no tag 'varupdate/model'"]


# Real event files.


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    return logdirs.write_standard_logdir(str(tmp_path_factory.mktemp("records")))


@pytest.fixture(scope="module")
def provider(logdir):
    return logdirs.load_provider(logdir, samples=10)[0]


CTX = context.RequestContext()


def test_list_update_tags_lists_only_supported_updates_tags(provider):
    assert records.list_update_tags(provider, CTX, "") == {
        "badjson": ["varupdate/model"],
        "hand": ["varupdate/hand"],
        "malformed": ["varupdate/model"],
        "mismatch": ["varupdate/model"],
        "nonfinite": ["varupdate/model"],
        "step500": ["varupdate/model"],
        "truncated": ["varupdate/model"],
    }


def test_read_verdicts_is_exact_under_downsampling(provider):
    report = records.read_verdicts(provider, CTX, "", "step500", logdirs.TAG)
    assert report["step"] == 999 and report["logged"] == 1000
    assert report["warnings"] == []
    by_name = {row["variable"]: row for row in report["rows"]}
    assert (by_name["w"]["first_update_step"], by_name["w"]["last_update_step"]) == (500, 500)
    assert by_name["w"]["status"] == analysis.STALLED
    assert by_name["b"]["status"] == analysis.UPDATING
    assert by_name["frozen"]["status"] == analysis.NEVER_UPDATED
    assert report["summary"] == analysis.summarize(report["rows"])
    assert set(report) == {"run", "tag", "step", "logged", "summary", "rows", "warnings"}


def test_only_ten_records_were_kept(provider):
    tracker = records.read_tracker(provider, CTX, "", "step500", logdirs.TAG)
    assert len(tracker.steps) == 10 and tracker.steps[-1] == 999


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
        records.read_verdicts(provider, CTX, "", run, tag)


def test_malformed_records_are_skipped_with_warnings(provider):
    report = records.read_verdicts(provider, CTX, "", "malformed", logdirs.TAG)
    assert report["step"] == 2
    assert [row["variable"] for row in report["rows"]] == ["x"]
    assert report["rows"][0]["last_update_step"] == 2
    assert len(report["warnings"]) == 2
    assert "skipped 2 of 5 updates records (steps 3, 4)" in report["warnings"][0]
    assert "dtype=float32" in report["warnings"][0]
    assert "verdicts are as of step 2" in report["warnings"][1]


def test_unreadable_variables_record_gives_no_rows_and_a_warning(provider):
    report = records.read_verdicts(provider, CTX, "", "badjson", logdirs.TAG)
    assert report["rows"] == []
    assert report["step"] == 2
    assert any("{not json" in warning for warning in report["warnings"])
    assert any("cannot be named" in warning for warning in report["warnings"])


def test_names_hash_mismatch_warns(provider):
    report = records.read_verdicts(provider, CTX, "", "mismatch", logdirs.TAG)
    assert len(report["warnings"]) == 1
    assert "no kept variables record matches" in report["warnings"][0]


def test_other_format_version_is_skipped_with_warning(provider):
    found, warnings = records.scan_tags(provider, CTX, "")
    assert "future" not in found
    assert warnings == [
        "future varupdate/model: skipped: record format version 99 is not supported "
        "(this tb-varupdate reads version %d); upgrade tb-varupdate to read it." % md.FORMAT_VERSION
    ]
    report = records.read_verdicts(provider, CTX, "", "future", logdirs.TAG)
    assert report["rows"] == [] and report["step"] is None
    assert "version 99" in report["warnings"][0]


def test_older_variables_record_with_matching_hash_is_used(tmp_path):
    # The newest variables record (step 5) names a variable that no updates
    # record has yet: the one at step 0 matches and must be used, silently.
    first, digest_1 = md.encode_variables([logdirs.entry("a")])
    second, _ = md.encode_variables([logdirs.entry("a"), logdirs.entry("z", joined=2)])
    vtag = logdirs.TAG + md.VARIABLES_TAG_SUFFIX
    rows = [{md.DELTA_L2: 1.0, md.VALUE_L2: 1.0, md.CHANGED_STEPS: 2, md.FIRST_UPDATE_STEP: 0,
             md.LAST_UPDATE_STEP: 1, md.LOGS_AT_LAST_UPDATE: 2}]
    logdirs.write_records(
        str(tmp_path / "run"),
        [(vtag, md.KIND_VARIABLES, 0, first), (vtag, md.KIND_VARIABLES, 5, second),
         (logdirs.TAG, md.KIND_UPDATES, 1, logdirs.updates(2, digest_1, rows))],
    )
    provider, _ = logdirs.load_provider(str(tmp_path))
    report = records.read_verdicts(provider, CTX, "", "run", logdirs.TAG)
    assert report["warnings"] == []
    assert [row["variable"] for row in report["rows"]] == ["a"]


def test_series_of_a_variable_appended_later_starts_when_it_joined(provider):
    tracker = records.read_tracker(provider, CTX, "", "hand", logdirs.HAND_TAG)
    report = records.series_report(tracker, ["c", "a"])
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
    tracker = records.read_tracker(provider, CTX, "", "hand", logdirs.HAND_TAG)
    with pytest.raises(errors.NotFoundError, match="no variable 'zz'"):
        records.series_report(tracker, ["a", "zz"])


def test_heatmap_buckets_hand_records(provider):
    tracker = records.read_tracker(provider, CTX, "", "hand", logdirs.HAND_TAG)
    report = records.heatmap_report(tracker, buckets=3)
    assert report["bucket_start"] == [0, 2, 4] and report["bucket_end"] == [1, 3, 5]
    values = dict(zip(report["variables"], report["values"]))
    assert values["a"] == pytest.approx([0.5, 0.5, 0.1])
    # c: not tracked in the first bucket, logged without change in the second.
    assert values["c"] == [None, 0.0, 0.5]
    assert report["variables"] == [row["variable"] for row in tracker.verdicts()["rows"]]


def test_heatmap_of_downsampled_run_reports_points(provider):
    tracker = records.read_tracker(provider, CTX, "", "step500", logdirs.TAG)
    report = records.heatmap_report(tracker, buckets=100)
    assert (report["logged"], report["points"], report["downsampled"]) == (1000, 10, True)
    assert len(report["bucket_start"]) == 100
    assert all(len(row) == 100 for row in report["values"])
    # 10 kept records in 100 buckets: at most 10 cells per variable are set.
    assert all(sum(cell is not None for cell in row) <= 10 for row in report["values"])


def test_cache_reuses_until_a_new_step_arrives(tmp_path):
    run_dir = str(tmp_path / "run")
    records_so_far, _ = logdirs._three_step_records()
    logdirs.write_records(run_dir, records_so_far)
    provider, multiplexer = logdirs.load_provider(str(tmp_path))
    cache = records.RecordCache(provider)
    first = cache.tracker(CTX, "", "run", logdirs.TAG)
    assert cache.tracker(CTX, "", "run", logdirs.TAG) is first
    variables, digest = md.encode_variables([logdirs.entry("x")])
    rows = [{md.DELTA_L2: 0.0, md.VALUE_L2: 2.0, md.CHANGED_STEPS: 3, md.FIRST_UPDATE_STEP: 0,
             md.LAST_UPDATE_STEP: 2, md.LOGS_AT_LAST_UPDATE: 3}]
    logdirs.write_records(run_dir, [(logdirs.TAG, md.KIND_UPDATES, 3, logdirs.updates(4, digest, rows))])
    multiplexer.Reload()
    second = cache.tracker(CTX, "", "run", logdirs.TAG)
    assert second is not first
    assert second.newest_step == 3


def test_cache_is_bounded(provider):
    cache = records.RecordCache(provider, size=2)
    for run in ("hand", "malformed", "step500"):
        tag = logdirs.HAND_TAG if run == "hand" else logdirs.TAG
        cache.tracker(CTX, "", run, tag)
    assert [key[1] for key in cache._entries] == ["malformed", "step500"]


def test_cache_clear_forgets_every_tracker(provider):
    cache = records.RecordCache(provider)
    first = cache.tracker(CTX, "", "hand", logdirs.HAND_TAG)
    cache.clear()
    assert cache.tracker(CTX, "", "hand", logdirs.HAND_TAG) is not first


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


def test_verdicts_read_only_the_newest_records_and_the_history_on_demand(provider):
    counting = CountingProvider(provider)
    tracker = records.read_tracker(counting, CTX, "", "step500", logdirs.TAG)
    assert tracker.verdicts()["step"] == 999
    assert counting.reads == [(1, ["step500"], [logdirs.TAG, VTAG])]
    assert tracker.steps[-1] == 999 and len(tracker.steps) == 10
    assert counting.reads[1:] == [(records.DEFAULT_SAMPLES, ["step500"], [logdirs.TAG])]
    tracker.columns, tracker.present(0)
    assert len(counting.reads) == 2  # read once, then kept


def test_trackers_of_several_runs_are_read_in_one_call(provider):
    counting = CountingProvider(provider)
    cache = records.RecordCache(counting)
    trackers = cache.trackers(CTX, "", ["step500", "truncated", "hand"], logdirs.TAG)
    assert trackers["hand"] is None  # no such tag there
    assert trackers["step500"].newest_step == 999
    assert counting.reads == [(1, ["step500", "truncated"], [logdirs.TAG, VTAG])]
    assert cache.trackers(CTX, "", ["step500", "truncated"], logdirs.TAG) == {
        "step500": trackers["step500"], "truncated": trackers["truncated"],
    }
    assert len(counting.reads) == 1


def test_an_unreadable_newest_record_makes_the_tracker_read_every_kept_record(provider):
    counting = CountingProvider(provider)
    tracker = records.read_tracker(counting, CTX, "", "malformed", logdirs.TAG)
    assert tracker.newest_step == 2
    assert [read[0] for read in counting.reads] == [1, records.DEFAULT_SAMPLES, records.KEEP_ALL_SAMPLES]
    tracker.steps
    assert len(counting.reads) == 3  # the history came with it


def test_older_unreadable_records_are_explained_by_the_charts_only(tmp_path):
    # The verdicts come from the newest record, which is fine; the series and
    # heatmap read every kept record and say which they skipped.
    good, _ = logdirs._three_step_records()
    bad = (logdirs.TAG, md.KIND_UPDATES, 1, np.zeros((2, md.NUM_COLUMNS), dtype=np.float32))
    logdirs.write_records(str(tmp_path / "run"), good[:2] + [bad] + good[3:])
    provider, _ = logdirs.load_provider(str(tmp_path))
    tracker = records.read_tracker(provider, CTX, "", "run", logdirs.TAG)
    assert tracker.verdicts()["warnings"] == []
    (warning,) = records.heatmap_report(tracker, buckets=3)["warnings"]
    assert "skipped 1 of 3 updates records (steps 1)" in warning
    assert records.series_report(tracker, ["x"])["warnings"] == [warning]


def test_memo_computes_once_per_key_and_keeps_the_newest_keys(provider):
    tracker = records.read_tracker(provider, CTX, "", "hand", logdirs.HAND_TAG)
    calls = []
    for key in ["a", "a"] + ["k%d" % i for i in range(records.MEMO_SIZE)] + ["a"]:
        tracker.memo(key, lambda key=key: calls.append(key) or key.upper())
    assert calls == ["a"] + ["k%d" % i for i in range(records.MEMO_SIZE)] + ["a"]
    assert tracker.memo("a", lambda: "recomputed") == "A"


def test_truncated_event_file_reads_up_to_the_cut(provider):
    report = records.read_verdicts(provider, CTX, "", "truncated", logdirs.TAG)
    assert 0 < report["step"] < 999
    assert report["logged"] == report["step"] + 1
    assert {row["variable"] for row in report["rows"]} == {"w", "b", "frozen"}


def test_non_finite_values_become_none(provider):
    report = records.read_verdicts(provider, CTX, "", "nonfinite", logdirs.TAG)
    (row,) = report["rows"]
    assert row["status"] == analysis.NON_FINITE
    assert row["value_l2"] is None and row["latest_delta_l2"] is None
    series = records.series_report(records.read_tracker(provider, CTX, "", "nonfinite", logdirs.TAG), ["x"])
    assert series["series"]["x"]["value_l2"] == [None]
    assert series["series"]["x"]["gradient_state"] == ["non_finite"]



def test_real_tracker_with_a_variable_added_mid_run(tmp_path):
    import tensorflow as tf

    from tb_varupdate.summary import VariableUpdateTracker

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
    loaded = records.read_tracker(provider, CTX, "", "run", md.updates_tag("grow"))
    report = loaded.verdicts()
    assert report["warnings"] == []
    first, late = loaded.names()
    rows = {row["variable"]: row for row in report["rows"]}
    assert rows[late]["logged_steps"] == 6
    series = records.series_report(loaded, [first, late])["series"]
    assert series[first]["step"] == list(range(10))
    assert series[late]["step"] == [4, 5, 6, 7, 8, 9]
