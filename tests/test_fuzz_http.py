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

from tb_varupdate import metadata as md

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
