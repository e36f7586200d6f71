"""Hostile records (issue #13) under both loaders: one bad run costs only itself, no 5xx ever."""

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from werkzeug import test as werkzeug_test

from tensorboard import program
from tensorboard.backend import application
from tensorboard.plugins import base_plugin
from tensorboard.plugins.core import core_plugin

from tb_varupdate import plugin
from tb_varupdate.format import metadata as md

import logdirs

PREFIX = "/data/plugin/varupdate/"
LOAD_TIMEOUT_S = 90


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    return logdirs.write_hostile_logdir(str(tmp_path_factory.mktemp("hostile")))


class WsgiClient:
    """GETs through werkzeug's test client over the Python loader (MultiplexerDataProvider)."""

    def __init__(self, logdir):
        provider, _ = logdirs.load_provider(logdir, samples=100)
        context = base_plugin.TBContext(data_provider=provider, logdir=logdir)
        app = application.TensorBoardWSGI([plugin.VarUpdatePlugin(context)], data_provider=provider)
        self._client = werkzeug_test.Client(app)

    def get(self, route, method="GET"):
        response = self._client.open(PREFIX + route, method=method)
        return response.status_code, response.mimetype, response.get_data()

    def close(self):
        pass


class RustServer:
    """A whole TensorBoard on 127.0.0.1 with the Rust loader (`--load_fast=true`)."""

    def __init__(self, logdir, runs=None):
        runs = len(logdirs.hostile_runs()) if runs is None else runs
        made = []

        def make_server(app, flags):
            made.append(program.WerkzeugServer(app, flags))
            return made[0]

        self._board = program.TensorBoard(
            plugins=[core_plugin.CorePluginLoader(), plugin.VarUpdateLoader()], server_class=make_server
        )
        self._board.configure(logdir=logdir, host="127.0.0.1", port=0, load_fast="true",
                              reload_interval=0, reload_task="blocking")
        self._server = self._board._make_server()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self._base = self._server.get_url()
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while True:
            code, _, body = self.get("runs")
            if code == 200 and len(json.loads(body)["runs"]) >= runs:
                break
            if time.monotonic() > deadline:
                raise AssertionError("TensorBoard did not load %s in %ds" % (logdir, LOAD_TIMEOUT_S))
            time.sleep(0.2)

    def get(self, route, method="GET"):
        request = urllib.request.Request(self._base + PREFIX.lstrip("/") + route, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.headers.get_content_type(), response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.headers.get_content_type(), err.read()

    def close(self):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        stdin = getattr(getattr(self._board, "_ingester", None), "_stdin_handle", None)
        if stdin is not None:
            stdin.close()


@pytest.fixture(scope="module", params=["python", "rust"])
def client(request, logdir):
    made = WsgiClient(logdir) if request.param == "python" else RustServer(logdir)
    yield made
    made.close()


def get_json(client, route):
    code, mimetype, body = client.get(route)
    assert mimetype == "application/json", (route, code, body[:200])
    return code, json.loads(body)


def query(route, **params):
    return route + "?" + urllib.parse.urlencode(params, doseq=True)


def test_runs_lists_every_run_and_the_unreadable_ones_with_their_reason(client):
    code, body = get_json(client, "runs")
    assert code == 200
    assert [run["run"] for run in body["runs"]] == sorted(logdirs.hostile_runs())
    reasons = {item["run"]: item["reason"] for item in body["unreadable"]}
    assert set(reasons) == set(logdirs.HOSTILE_UNREADABLE)
    for run, words in logdirs.HOSTILE_UNREADABLE.items():
        assert words in reasons[run]
    good = next(run for run in body["runs"] if run["run"] == "good")
    assert good["tags"][0]["variables"] == 1


@pytest.mark.parametrize("run", sorted(logdirs.hostile_runs()))
def test_no_route_answers_5xx_for_any_run(client, run):
    name = {"empty_name": "", "escape_name": logdirs.ESCAPE_NAME, "surrogate_name": logdirs.SURROGATE_NAME}.get(run, "x")
    if run == "surrogate_name":
        # A lone surrogate cannot travel in a URL (not UTF-8): ask for any other name.
        name = "x"
    routes = [
        query("variables", run=run, tag=logdirs.TAG),
        query("series", run=run, tag=logdirs.TAG, variable=name),
        query("heatmap", run=run, tag=logdirs.TAG),
        query("heatmap", run=run, tag=logdirs.TAG, buckets=1000),
        query("compare", tag=logdirs.TAG, run=[run, "good"]),
    ]
    for route in routes:
        code, _ = get_json(client, route)
        assert code in (200, 404), route


@pytest.mark.parametrize("run, name", [("empty_name", ""), ("escape_name", logdirs.ESCAPE_NAME), ("good", "x")])
def test_every_named_variable_has_a_series_and_a_heatmap_row(client, run, name):
    code, body = get_json(client, query("series", run=run, tag=logdirs.TAG, variable=name))
    assert code == 200 and body["series"][name]["step"] == [0, 1, 2]
    code, body = get_json(client, query("heatmap", run=run, tag=logdirs.TAG))
    assert code == 200 and body["variables"] == [name]


@pytest.mark.parametrize("run", ["extreme_steps", "time_ns_steps", "negative_steps"])
def test_heatmap_buckets_of_odd_steps_stay_inside_the_steps(client, run):
    steps = [step for tag, kind, step, _ in logdirs.hostile_runs()[run] if tag == logdirs.TAG]
    code, body = get_json(client, query("heatmap", run=run, tag=logdirs.TAG))
    assert code == 200
    starts, ends = body["bucket_start"], body["bucket_end"]
    assert (starts[0], ends[-1]) == (steps[0], steps[-1])
    assert all(start <= end for start, end in zip(starts, ends))
    code, body = get_json(client, query("variables", run=run, tag=logdirs.TAG))
    (row,) = body["rows"]
    if run == "negative_steps":
        assert (row["first_update_step"], row["last_update_step"]) == (-30, -10)


@pytest.mark.parametrize("route", ["static/", "static", "app.js", "nope", "static/app.jsx"])
def test_unknown_paths_answer_json_404(client, route):
    code, body = get_json(client, route)
    assert code == 404 and list(body) == ["error"]


@pytest.mark.parametrize("buckets", [" 5", "1_000", "\u0663", "\uff15", "+5", "5 ", "0x10"])
def test_buckets_take_ascii_digits_only(client, buckets):
    code, body = get_json(client, query("heatmap", run="good", tag=logdirs.TAG, buckets=buckets))
    assert code == 400 and "buckets" in body["error"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("route", ["runs", "variables?run=good&tag=varupdate/model", "static/vendor/LICENSE", "nope"])
def test_methods_other_than_get_and_head_answer_405(client, method, route):
    code, mimetype, body = client.get(route, method=method)
    assert (code, mimetype) == (405, "application/json")
    assert "GET and HEAD" in json.loads(body)["error"]
    code, _, _ = client.get(route.split("?")[0] if route == "nope" else route, method="HEAD")
    assert code in (200, 404)


def test_vocabulary_serves_the_one_source_of_truth(client):
    from tb_varupdate.verdicts import vocabulary

    code, body = get_json(client, "vocabulary")
    assert code == 200
    assert body == json.loads(json.dumps(vocabulary.vocabulary()))


def test_plugin_content_version_true_is_not_called_older():
    content = json.dumps({"version": True, "kind": md.KIND_UPDATES}).encode()
    with pytest.raises(md.FormatError, match="version True is not supported") as raised:
        md.parse_plugin_content(content)
    assert "older" not in str(raised.value) and "upgrade" in str(raised.value)


# Issue #21: integer fields no int64 holds, and names that are not keys.


@pytest.mark.parametrize("run", ["huge_joined", "huge_ints"])
def test_integer_fields_beyond_int64_answer_documents(client, run):
    for route in (query("series", run=run, tag=logdirs.TAG, variable="x"),
                  query("series", run=run, tag=logdirs.TAG, index=0),
                  query("heatmap", run=run, tag=logdirs.TAG), query("variables", run=run, tag=logdirs.TAG)):
        code, body = get_json(client, route)
        assert code == 200, (route, body)
    # Tracked from a record later than any kept one: no points, no cells.
    code, body = get_json(client, query("series", run=run, tag=logdirs.TAG, variable="x"))
    assert body["series"]["x"]["step"] == []
    code, body = get_json(client, query("heatmap", run=run, tag=logdirs.TAG))
    assert body["values"] == [[None] * len(body["bucket_start"])]


def test_two_variables_of_one_name_are_kept_apart(client):
    code, body = get_json(client, query("variables", run="same_name", tag=logdirs.TAG))
    assert code == 200
    by_index = {row["index"]: row for row in body["rows"]}
    assert (by_index[0]["status"], by_index[1]["status"]) == ("never_updated", "updating")
    code, heatmap = get_json(client, query("heatmap", run="same_name", tag=logdirs.TAG))
    assert heatmap["variables"] == ["x", "x"] and heatmap["indices"] == [0, 1]
    never, updating = heatmap["values"]
    assert set(never) == {0} and set(updating) == {0.5}
    code, series = get_json(client, query("series", run="same_name", tag=logdirs.TAG, index=[0, 1]))
    assert code == 200
    assert series["by_index"]["0"]["delta_l2"] == [0, 0, 0]
    assert series["by_index"]["1"]["delta_l2"] == [1, 1, 1]
    assert series["by_index"]["1"]["variable"] == "x"
    code, series = get_json(client, query("series", run="same_name", tag=logdirs.TAG, variable="x"))
    assert code == 200 and any("2 variables are named 'x'" in warning for warning in series["warnings"])


@pytest.mark.parametrize("index", ["2", "-1", "1e3", "\u0661", "9999999999"])
def test_a_series_index_outside_the_rows_is_a_4xx(client, index):
    code, body = get_json(client, query("series", run="same_name", tag=logdirs.TAG, index=index))
    assert code in (400, 404) and "index" in body["error"]


def test_compare_keeps_two_variables_of_one_name_apart(client):
    code, body = get_json(client, query("compare", tag=logdirs.TAG, run=["same_name", "good"]))
    assert code == 200
    rows = {(row["variable"], row["occurrence"]): row for row in body["rows"]}
    assert rows["x", 0]["statuses"] == {"same_name": "never_updated", "good": "updating"}
    assert rows["x", 0]["indices"] == {"same_name": 0, "good": 0}
    assert rows["x", 1]["statuses"] == {"same_name": "updating", "good": None}
    assert rows["x", 1]["indices"] == {"same_name": 1, "good": None}
