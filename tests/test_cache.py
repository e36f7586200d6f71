"""Tests of tb_varupdate.reader.cache: tags kept between requests, read together, memoised."""

import pytest

from tensorboard import context

from tb_varupdate.format import metadata as md
from tb_varupdate.format import variables as vr
from tb_varupdate.reader import cache as cache_lib
from tb_varupdate.reader import service

import logdirs
from test_reading import CountingProvider

CTX = context.RequestContext()
VTAG = logdirs.TAG + md.VARIABLES_TAG_SUFFIX


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    return logdirs.write_standard_logdir(str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def provider(logdir):
    return logdirs.load_provider(logdir, samples=10)[0]


def test_cache_reuses_until_a_new_step_arrives(tmp_path):
    run_dir = str(tmp_path / "run")
    records_so_far, _ = logdirs._three_step_records()
    logdirs.write_records(run_dir, records_so_far)
    provider, multiplexer = logdirs.load_provider(str(tmp_path))
    cache = cache_lib.RecordCache(provider)
    first = cache.records(CTX, "", "run", logdirs.TAG)
    assert cache.records(CTX, "", "run", logdirs.TAG) is first
    variables, digest = vr.encode_variables([logdirs.entry("x")])
    rows = [{md.DELTA_L2: 0.0, md.VALUE_L2: 2.0, md.CHANGED_STEPS: 3, md.FIRST_UPDATE_STEP: 0,
             md.LAST_UPDATE_STEP: 2, md.LOGS_AT_LAST_UPDATE: 3}]
    logdirs.write_records(run_dir, [(logdirs.TAG, md.KIND_UPDATES, 3, logdirs.updates(4, digest, rows))])
    multiplexer.Reload()
    second = cache.records(CTX, "", "run", logdirs.TAG)
    assert second is not first
    assert second.newest_step == 3


def test_cache_is_bounded(provider):
    cache = cache_lib.RecordCache(provider, size=2)
    for run in ("hand", "malformed", "step500"):
        tag = logdirs.HAND_TAG if run == "hand" else logdirs.TAG
        cache.records(CTX, "", run, tag)
    assert [key[1] for key in cache._entries] == ["malformed", "step500"]


def test_cache_clear_forgets_every_tracker(provider):
    cache = cache_lib.RecordCache(provider)
    first = cache.records(CTX, "", "hand", logdirs.HAND_TAG)
    cache.clear()
    assert cache.records(CTX, "", "hand", logdirs.HAND_TAG) is not first


def test_trackers_of_several_runs_are_read_in_one_call(provider):
    counting = CountingProvider(provider)
    cache = cache_lib.RecordCache(counting)
    trackers = cache.records_of(CTX, "", ["step500", "truncated", "hand"], logdirs.TAG)
    assert trackers["hand"] is None  # no such tag there
    assert trackers["step500"].newest_step == 999
    assert counting.reads == [(1, ["step500", "truncated"], [logdirs.TAG, VTAG])]
    assert cache.records_of(CTX, "", ["step500", "truncated"], logdirs.TAG) == {
        "step500": trackers["step500"], "truncated": trackers["truncated"],
    }
    assert len(counting.reads) == 1


def test_memo_computes_once_per_key_and_keeps_the_newest_keys(provider):
    cache = cache_lib.RecordCache(provider)
    entry = cache.entry(cache.source(CTX, ""), "hand", logdirs.HAND_TAG)
    calls = []
    for key in ["a", "a"] + ["k%d" % i for i in range(cache_lib.MEMO_SIZE)] + ["a"]:
        entry.memoized(key, lambda key=key: calls.append(key) or key.upper())
    assert calls == ["a"] + ["k%d" % i for i in range(cache_lib.MEMO_SIZE)] + ["a"]
    assert entry.memoized("a", lambda: "recomputed") == "A"


def test_the_dashboards_documents_stay_however_many_bucket_counts_are_asked(provider):
    # Issue #13 item 17: a client cycling through bucket counts must not make
    # the default heatmap (and the variables route) recompute for everyone.
    cache = cache_lib.RecordCache(provider)
    calls = []

    def heatmap(buckets):
        return service.heatmap(cache, CTX, "", "hand", logdirs.HAND_TAG, buckets,
                               encode=lambda document: calls.append(buckets) or document)

    heatmap(100)
    for buckets in range(1, 3 * cache_lib.MEMO_SIZE):
        heatmap(buckets)
    heatmap(100)
    assert calls.count(100) == 1
