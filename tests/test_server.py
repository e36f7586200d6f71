"""Whole TensorBoard in-process, under both loaders, with the plugin's loader."""

import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from tensorboard import program
from tensorboard.plugins.core import core_plugin

from tb_varupdate import plugin
from tb_varupdate.format import metadata as md
from tb_varupdate.reader import history as history_lib

import logdirs

# Long enough for the Rust data server to start and load the logdir on a
# busy 2-core CI machine; a healthy start takes about a second.
LOAD_TIMEOUT_S = 90


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    return logdirs.write_standard_logdir(str(tmp_path_factory.mktemp("server")))


def fetch(url):
    """(status, parsed JSON or bytes, content type) for a GET of `url`."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            status, body, content_type = response.status, response.read(), response.headers.get_content_type()
    except urllib.error.HTTPError as err:
        status, body, content_type = err.code, err.read(), err.headers.get_content_type()
    if content_type == "application/json":
        body = json.loads(body)
    return status, body, content_type


def _wait_until_loaded(base):
    # The Rust loader serves while it is still reading; wait for the last step.
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    while True:
        status, body, _ = fetch(base + "data/plugin/varupdate/runs")
        if status == 200:
            last = {
                (run["run"], tag["tag"]): tag["last_step"] for run in body["runs"] for tag in run["tags"]
            }
            if last.get((logdirs.STEP500_RUN, logdirs.TAG)) == 999 and ("hand", logdirs.HAND_TAG) in last:
                return
        if time.monotonic() > deadline:
            raise AssertionError("TensorBoard did not load the logdir in %ds: %r" % (LOAD_TIMEOUT_S, body))
        time.sleep(0.2)


SERVERS = [
    pytest.param(("false", None), id="python-default"),
    pytest.param(("true", None), id="rust-default"),
    pytest.param(("false", 5), id="python-user5"),
    pytest.param(("true", 5), id="rust-user5"),
    # 0 means "keep all": the plugin must not pass downsample=0 on.
    pytest.param(("true", 0), id="rust-user0"),
    # Controls: the plugin class without its loader gets TensorBoard's own
    # defaults, which shows that the loader's fix_flags is what raises them.
    pytest.param(("false", "bare"), id="python-bare"),
    pytest.param(("true", "bare"), id="rust-bare"),
]

# Records TensorBoard keeps per tag of a third-party plugin by default.
TENSORBOARD_DEFAULT_SAMPLES = {"false": 10, "true": 100}


@pytest.fixture(scope="module", params=SERVERS)
def server(request, logdir):
    """(base URL, expected kept records of step500, load_fast) of a running TensorBoard."""
    load_fast, user_samples = request.param
    made = []

    def make_server(app, flags):
        made.append(program.WerkzeugServer(app, flags))
        return made[0]

    ours = plugin.VarUpdatePlugin if user_samples == "bare" else plugin.VarUpdateLoader()
    board = program.TensorBoard(plugins=[core_plugin.CorePluginLoader(), ours], server_class=make_server)
    options = dict(logdir=logdir, host="127.0.0.1", port=0, load_fast=load_fast,
                   reload_interval=0, reload_task="blocking")
    if isinstance(user_samples, int):
        options["samples_per_plugin"] = {md.PLUGIN_NAME: user_samples}
    board.configure(**options)
    if user_samples is None:
        expected_points = logdirs.STEP500_STEPS
    elif user_samples == "bare":
        expected_points = TENSORBOARD_DEFAULT_SAMPLES[load_fast]
    elif user_samples == 0:
        expected_points = logdirs.STEP500_STEPS
    else:
        expected_points = user_samples
    thread = None
    try:
        server_ = board._make_server()
        thread = threading.Thread(target=server_.serve_forever, daemon=True)
        thread.start()
        base = server_.get_url()
        ingester = type(board._ingester).__name__
        assert ingester == ("SubprocessServerDataIngester" if load_fast == "true" else "LocalDataIngester")
        _wait_until_loaded(base)
        yield base, expected_points, load_fast
    finally:
        if made:
            made[0].shutdown()
            made[0].server_close()
        if thread is not None:
            thread.join(timeout=10)
        # The Rust data server exits when its stdin closes.
        stdin = getattr(getattr(board, "_ingester", None), "_stdin_handle", None)
        if stdin is not None:
            stdin.close()


def test_default_samples_cover_the_step500_run():
    # The "default" servers expect every record kept: that needs this.
    assert history_lib.DEFAULT_SAMPLES >= logdirs.STEP500_STEPS


def test_plugins_listing_shows_varupdate(server):
    base, _, _ = server
    status, body, _ = fetch(base + "data/plugins_listing")
    assert status == 200
    entry = body[md.PLUGIN_NAME]
    assert entry["enabled"] is True
    assert entry["tab_name"] == "Variable Updates"
    assert entry["loading_mechanism"] == {"type": "IFRAME", "module_path": "/data/plugin/varupdate/index.js"}


def test_step500_verdict_and_kept_records(server):
    base, expected_points, _ = server
    status, body, _ = fetch(base + "data/plugin/varupdate/variables?run=step500&tag=varupdate/model")
    assert status == 200
    w = next(row for row in body["rows"] if row["variable"] == "w")
    assert (w["first_update_step"], w["last_update_step"], w["status"]) == (500, 500, "stalled")
    assert body["warnings"] == []
    status, body, _ = fetch(base + "data/plugin/varupdate/series?run=step500&tag=varupdate/model&variable=w")
    assert status == 200
    # Default: the loader raised TensorBoard's 10 (Python) / 100 (Rust) so all
    # 1,000 records are kept; a user's --samples_per_plugin=varupdate=5 wins;
    # without the loader, TensorBoard's defaults apply.
    assert body["points"] == expected_points
    assert body["series"]["w"]["step"][-1] == 999
    assert body["downsampled"] == (expected_points < 1000)


@pytest.mark.parametrize(
    "route",
    [
        "runs",
        "variables?run=hand&tag=varupdate/hand",
        "series?run=hand&tag=varupdate/hand&variable=a&variable=c",
        "heatmap?run=hand&tag=varupdate/hand&buckets=3",
        "compare?tag=varupdate/model&run=step500&run=truncated",
    ],
)
def test_every_json_route_answers(server, route):
    base, _, _ = server
    status, body, content_type = fetch(base + "data/plugin/varupdate/" + route)
    assert (status, content_type) == (200, "application/json")
    assert "warnings" in body


def test_static_route_answers(server):
    base, _, _ = server
    status, body, content_type = fetch(base + "data/plugin/varupdate/static/vendor/uPlot.esm.js")
    assert (status, content_type) == (200, "text/javascript")
    assert body.startswith(b"/**")
    status, _, _ = fetch(base + "data/plugin/varupdate/static/%2e%2e/plugin.py")
    assert status == 404


@pytest.mark.parametrize(
    "route, code",
    [
        ("variables?run=step500", 400),
        ("heatmap?run=step500&tag=varupdate/model&buckets=x", 400),
        ("series?run=step500&tag=varupdate/model", 400),
        ("variables?run=nope&tag=varupdate/model", 404),
        ("series?run=step500&tag=varupdate/model&variable=nope", 404),
        ("compare?tag=varupdate/model&run=nope", 404),
    ],
)
def test_bad_queries(server, route, code):
    base, _, _ = server
    status, body, _ = fetch(base + "data/plugin/varupdate/" + route)
    assert status == code
    assert set(body) == {"error"}


def test_runs_warns_about_other_format_version(server):
    base, _, _ = server
    status, body, _ = fetch(base + "data/plugin/varupdate/runs")
    assert status == 200
    assert "future" not in [run["run"] for run in body["runs"]]
    assert any(w.startswith("future varupdate/model:") and "version 99" in w for w in body["warnings"])


@pytest.mark.parametrize("run", ["future", "malformed", "badjson", "mismatch"])
def test_unreadable_records_warn_without_500(server, run):
    base, _, _ = server
    status, body, _ = fetch(base + "data/plugin/varupdate/variables?run=%s&tag=varupdate/model" % run)
    assert status == 200
    assert body["warnings"]


def test_truncated_event_file_answers(server):
    base, _, _ = server
    status, body, _ = fetch(base + "data/plugin/varupdate/variables?run=truncated&tag=varupdate/model")
    assert status == 200
    # Read up to the cut: a consistent verdict as of the last whole record.
    assert 0 < body["step"] < 999
    assert body["logged"] == body["step"] + 1
    status, _, _ = fetch(base + "data/plugin/varupdate/heatmap?run=truncated&tag=varupdate/model")
    assert status == 200
