"""A bounded HTTP fuzz of every route under both loaders: no answer is ever a 5xx.

Hypothesis builds requests from the names the logdir really holds (runs,
tags, variables) mixed with arbitrary text, repeated and missing parameters,
odd `buckets` values, odd paths and methods, and sends them through werkzeug
(Python loader) and a real TensorBoard on 127.0.0.1 (Rust loader). Every
answer must be JSON (or a served file) with a status below 500.
"""

import json
import os
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tb_varupdate.format import metadata as md
from tb_varupdate.format import variables as vr

import logdirs
from test_hostile import RustServer, WsgiClient

# ~150 requests per loader keep the whole module near 30 s on a busy 2-core machine.
EXAMPLES = 150

ROUTES = ["runs", "variables", "series", "heatmap", "compare", "vocabulary", "index.js", "static/vendor/LICENSE",
          "static/", "static/..%2fplugin.py", "app.js", "", "nope"]
RUNS = sorted(logdirs.hostile_runs()) + ["hand", "malformed", "badjson", "mismatch", "future", "nonfinite"]
TAGS = [logdirs.TAG, logdirs.HAND_TAG, logdirs.TAG + md.VARIABLES_TAG_SUFFIX, "varupdate/nope"]
NAMES = ["x", "a", "c", "", logdirs.ESCAPE_NAME, "zz"]
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
BUCKETS = st.one_of(st.integers(-5, 2000).map(str), st.sampled_from(["", " 5", "1_000", "\u0663", "1e3", "99999999999"]),
                    TEXT)


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("fuzz"))
    logdirs.write_hostile_logdir(root)
    for run, records in [("hand", logdirs.hand_records()), ("malformed", logdirs.malformed_records()),
                         ("badjson", logdirs.bad_json_records()), ("mismatch", logdirs.mismatch_records()),
                         ("future", logdirs.future_version_records()), ("nonfinite", logdirs.non_finite_records())]:
        logdirs.write_records(os.path.join(root, run), records)
    return root


@pytest.fixture(scope="module", params=["python", "rust"])
def client(request, logdir):
    made = WsgiClient(logdir) if request.param == "python" else RustServer(logdir, len(RUNS) - 1)
    yield made
    made.close()


def _params(draw_values):
    return st.lists(st.tuples(st.sampled_from(["run", "tag", "variable", "buckets", "other"]), draw_values),
                    max_size=6)


REQUESTS = st.tuples(
    st.sampled_from(ROUTES),
    _params(st.one_of(st.sampled_from(RUNS), st.sampled_from(TAGS), st.sampled_from(NAMES), BUCKETS, TEXT)),
    st.sampled_from(["GET"] * 8 + ["HEAD", "POST", "PUT", "DELETE"]),
)


def test_no_request_gets_a_5xx(client):
    seen = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(REQUESTS)
    def one(request):
        route, params, method = request
        url = route + ("?" + urllib.parse.urlencode(params) if params else "")
        code, mimetype, body = client.get(url, method=method)
        seen.append(code)
        assert code < 500, (method, url, code, body[:300])
        if mimetype == "application/json" and method != "HEAD":
            json.loads(body)

    one()
    # The fuzz reached past the argument checks: some answers were documents.
    assert seen.count(200) > 10 and any(400 <= code < 500 for code in seen)


# Issue #21: any integer a variables entry can hold, through the routes (Python loader).
INTEGERS = st.one_of(st.integers(-(2**70), 2**70), st.sampled_from([2**63, 2**63 - 1, 2**64, -(2**63) - 1, 2**31]))


@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(joined=INTEGERS, dims=st.lists(st.one_of(INTEGERS, st.none()), max_size=3), writer_id=INTEGERS,
       hash_matches=st.booleans(), logged=st.integers(1, 2**31 - 1))
def test_no_integer_in_a_variables_entry_gets_a_5xx(tmp_path_factory, joined, dims, writer_id, hash_matches, logged):
    root = tmp_path_factory.mktemp("ints")
    entries = [logdirs.entry("x"), dict(logdirs.entry("x"), joined=joined, shape=dims)]
    digest = vr.names_hash(entries) if hash_matches else 7
    names = json.dumps({"names_hash": digest, "variables": entries, "writer_id": writer_id}).encode("utf-8")
    rows = [{md.DELTA_L2: 1.0, md.VALUE_L2: 2.0, md.CHANGED_STEPS: 1}] * 2
    logdirs.write_records_tb(root / "run", [
        (logdirs.TAG + md.VARIABLES_TAG_SUFFIX, md.KIND_VARIABLES, 0, names),
        (logdirs.TAG, md.KIND_UPDATES, 0, logdirs.updates(logged, digest, rows)),
        (logdirs.TAG, md.KIND_UPDATES, 1, logdirs.updates(logged, digest, rows)),
    ])
    client = WsgiClient(str(root))
    tag = urllib.parse.quote(logdirs.TAG)
    for route in ("runs", "variables?run=run&tag=" + tag, "series?run=run&tag=%s&index=0&index=1" % tag,
                  "series?run=run&tag=%s&variable=x" % tag, "heatmap?run=run&tag=" + tag,
                  "heatmap?run=run&tag=%s&buckets=1000" % tag, "compare?tag=%s&run=run&run=run" % tag):
        code, mimetype, body = client.get(route)
        assert code < 500 and mimetype == "application/json", (route, code, body[:300])
        json.loads(body)
