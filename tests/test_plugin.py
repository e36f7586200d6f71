"""WSGI tests of the varupdate plugin over real event files."""

import argparse
import gzip
import json
import os
import re
import subprocess
import sys

import pytest
from werkzeug import test as werkzeug_test

from tensorboard.backend import application
from tensorboard.plugins import base_plugin

from tb_varupdate import plugin
from tb_varupdate.format import metadata as md
from tb_varupdate.reader import history as history_lib

import logdirs

PREFIX = "/data/plugin/varupdate/"


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    return logdirs.write_standard_logdir(str(tmp_path_factory.mktemp("plugin")))


def make_client(logdir, samples=10, hint=None):
    provider, _ = logdirs.load_provider(logdir, samples=samples)
    context = base_plugin.TBContext(
        data_provider=provider, logdir=logdir, sampling_hints={md.PLUGIN_NAME: hint} if hint is not None else {}
    )
    app = application.TensorBoardWSGI([plugin.VarUpdatePlugin(context)], data_provider=provider)
    return werkzeug_test.Client(app)


@pytest.fixture(scope="module")
def client(logdir):
    # 10 samples per tag: what `tensorboard` keeps without our loader.
    return make_client(logdir, samples=10)


def get(client, route):
    response = client.get(PREFIX + route)
    body = response.get_data()
    if response.mimetype == "application/json":
        return response.status_code, json.loads(body)
    return response.status_code, body


def test_plugin_metadata():
    assert plugin.VarUpdatePlugin.plugin_name == "varupdate"
    meta = plugin.VarUpdatePlugin(base_plugin.TBContext()).frontend_metadata()
    assert (meta.es_module_path, meta.tab_name, meta.disable_reload) == ("/index.js", "Variable Updates", False)


def test_runs_route(client):
    code, body = get(client, "runs")
    assert code == 200
    assert [run["run"] for run in body["runs"]] == [
        "badjson", "hand", "malformed", "mismatch", "nonfinite", "step500", "truncated",
    ]
    step500 = next(run for run in body["runs"] if run["run"] == "step500")
    assert step500["tags"] == [
        {"tag": "varupdate/model", "last_step": 999, "logged": 1000, "variables": 3, "trainable": 2,
         "problems": 1, "warnings": 0,
         "by_status": {"non_finite": 0, "replicas_diverged": 0, "never_updated": 0, "stalled": 1, "tiny_updates": 0,
                       "updating": 1}},
    ]
    assert any("version 99" in warning for warning in body["warnings"])


def test_variables_route_step500_under_ten_samples(client):
    code, body = get(client, "variables?run=step500&tag=varupdate/model")
    assert code == 200
    by_name = {row["variable"]: row for row in body["rows"]}
    assert (by_name["w"]["first_update_step"], by_name["w"]["last_update_step"]) == (500, 500)
    assert body["rows"][0]["variable"] == "w"  # the problem comes first
    assert (body["step"], body["logged"], body["warnings"]) == (999, 1000, [])


def test_series_route_reports_downsampling(client):
    code, body = get(client, "series?run=step500&tag=varupdate/model&variable=w&variable=b")
    assert code == 200
    assert (body["logged"], body["points"], body["downsampled"]) == (1000, 10, True)
    assert body["samples_hint"] == "--samples_per_plugin=varupdate=0"
    assert list(body["series"]) == ["w", "b"]
    assert set(body["series"]["w"]) == {
        "step", "delta_l2", "value_l2", "relative_update", "gradient_l2", "gradient_state",
    }
    assert len(body["series"]["w"]["step"]) == 10


def test_heatmap_route(client):
    code, body = get(client, "heatmap?run=hand&tag=varupdate/hand&buckets=3")
    assert code == 200
    assert dict(zip(body["variables"], body["values"]))["c"] == [None, 0.0, 0.5]


@pytest.mark.parametrize("route", ["variables?run=hand&tag=varupdate/hand", "heatmap?run=hand&tag=varupdate/hand&buckets=3"])
def test_cached_answers_are_gzipped_once_and_unzipped_for_plain_clients(client, route):
    zipped = client.get(PREFIX + route, headers={"Accept-Encoding": "gzip"})
    plain = client.get(PREFIX + route)
    assert zipped.headers["Content-Encoding"] == "gzip" and "Content-Encoding" not in plain.headers
    assert zipped.mimetype == plain.mimetype == "application/json"
    assert gzip.decompress(zipped.get_data()) == plain.get_data()
    assert json.loads(plain.get_data())["run"] == "hand"


def test_clear_cache_makes_the_next_request_read_again(logdir):
    provider, _ = logdirs.load_provider(logdir)
    loaded = plugin.VarUpdatePlugin(base_plugin.TBContext(data_provider=provider, logdir=logdir))
    app = werkzeug_test.Client(application.TensorBoardWSGI([loaded], data_provider=provider))
    reads = []
    read_tensors = provider.read_tensors
    provider.read_tensors = lambda *args, **kwargs: reads.append(1) or read_tensors(*args, **kwargs)
    for _ in range(2):
        assert get(app, "variables?run=hand&tag=varupdate/hand")[0] == 200
    assert len(reads) == 1
    loaded.clear_cache()
    assert get(app, "variables?run=hand&tag=varupdate/hand")[0] == 200
    assert len(reads) == 2


def test_compare_with_one_unknown_run_answers_404(client):
    code, body = get(client, "compare?tag=varupdate/model&run=step500&run=nope")
    assert (code, body) == (404, {"error": "Not found: no run 'nope' in this logdir"})


def test_compare_route(client):
    code, body = get(client, "compare?tag=varupdate/model&run=step500&run=truncated")
    assert code == 200
    assert body["runs"] == ["step500", "truncated"]
    badges = body["rows"][0].pop("badges")
    assert body["rows"][0] == {
        "variable": "w", "occurrence": 0, "indices": {"step500": 0, "truncated": 0}, "trainable": True,
        "statuses": {"step500": "stalled", "truncated": "updating"},
        "gradients": {"step500": "not_logged", "truncated": "not_logged"},
        "disagree": True,
    }
    # Each run's badge is that run's own variables row's.
    for run in ("step500", "truncated"):
        _, variables = get(client, "variables?tag=varupdate/model&run=" + run)
        row = next(r for r in variables["rows"] if r["variable"] == "w")
        assert badges[run] == {key: row[key] for key in ("status", "label", "quiet", "severity", "allowed")}
    assert badges["step500"]["severity"] == 2 and badges["step500"]["label"] == "stalled"
    assert [row["disagree"] for row in body["rows"]] == [True, False, False]


def test_compare_with_a_run_lacking_the_tag(client):
    code, body = get(client, "compare?tag=varupdate/hand&run=hand&run=step500")
    assert code == 200
    assert all(row["statuses"]["step500"] is None for row in body["rows"])
    assert body["warnings"] == ["step500: has no tag 'varupdate/hand'"]


@pytest.mark.parametrize(
    "route, match",
    [
        ("variables?tag=varupdate/model", "'run' is required"),
        ("variables?run=step500", "'tag' is required"),
        ("variables?run=&tag=varupdate/model", "'run' is required"),
        ("series?run=step500&tag=varupdate/model", "'variable' or 'index' is required"),
        ("heatmap?run=step500&tag=varupdate/model&buckets=abc", "buckets=%27abc%27|buckets='abc'"),
        ("heatmap?run=step500&tag=varupdate/model&buckets=0", "buckets=0"),
        ("heatmap?run=step500&tag=varupdate/model&buckets=1001", "buckets=1001"),
        ("compare?tag=varupdate/model", "'run' is required"),
        ("compare?run=step500", "'tag' is required"),
    ],
)
def test_bad_queries_answer_400_with_json_error(client, route, match):
    code, body = get(client, route)
    assert code == 400
    assert list(body) == ["error"]
    assert re.search(match, body["error"])


@pytest.mark.parametrize(
    "route, match",
    [
        ("variables?run=nope&tag=varupdate/model", "no run 'nope'"),
        ("variables?run=step500&tag=varupdate/nope", "no varupdate tag"),
        ("variables?run=step500&tag=varupdate/model/variables", "holds variable names"),
        ("series?run=step500&tag=varupdate/model&variable=nope", "no variable 'nope'"),
        ("heatmap?run=nope&tag=varupdate/model", "no run 'nope'"),
        ("compare?tag=varupdate/model&run=step500&run=nope", "no run 'nope'"),
        ("compare?tag=varupdate/nope&run=step500", "none of the runs"),
    ],
)
def test_unknown_names_answer_404_with_json_error(client, route, match):
    code, body = get(client, route)
    assert code == 404
    assert match in body["error"]


@pytest.mark.parametrize("run", ["malformed", "badjson", "mismatch", "future", "nonfinite", "truncated"])
@pytest.mark.parametrize("route", ["variables", "series", "heatmap"])
def test_bad_records_never_cause_500(client, run, route):
    query = "%s?run=%s&tag=varupdate/model" % (route, run)
    if route == "series":
        # A variable that exists where names are readable; 404 otherwise.
        query += "&variable=x"
    code, body = get(client, query)
    assert code in (200, 404), body
    if code == 200 and run in ("malformed", "badjson", "mismatch", "future"):
        assert body["warnings"]


def test_non_finite_numbers_are_sent_as_null(client):
    response = client.get(PREFIX + "series?run=nonfinite&tag=varupdate/model&variable=x")
    text = response.get_data(as_text=True)
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["series"]["x"]["value_l2"] == [None]


def test_plugin_uses_sampling_hint(logdir):
    # With a hint of 3, only 3 of the 10 kept records are asked for.
    client = make_client(logdir, samples=10, hint=3)
    code, body = get(client, "series?run=step500&tag=varupdate/model&variable=b")
    assert code == 200 and body["points"] == 3
    assert body["series"]["b"]["step"][-1] == 999


def test_hint_zero_keeps_all(logdir):
    client = make_client(logdir, samples=0, hint=0)
    code, body = get(client, "series?run=step500&tag=varupdate/model&variable=b")
    assert (code, body["points"], body["downsampled"]) == (200, 1000, False)


# Static files.


@pytest.mark.parametrize(
    "route, content_type",
    [
        ("static/vendor/uPlot.esm.js", "text/javascript"),
        ("static/vendor/uPlot.min.css", "text/css"),
        ("static/vendor/LICENSE", "text/plain"),
    ],
)
def test_static_files_with_explicit_types(client, route, content_type):
    response = client.get(PREFIX + route)
    assert response.status_code == 200
    assert response.mimetype == content_type
    with open(os.path.join(plugin.FRONTEND_DIR, route), "rb") as handle:
        assert response.get_data() == handle.read()


def test_index_js_is_served(client):
    response = client.get(PREFIX + "index.js")
    assert (response.status_code, response.mimetype) == (200, "text/javascript")
    with open(os.path.join(plugin.FRONTEND_DIR, "index.js"), "rb") as handle:
        assert response.get_data() == handle.read()


@pytest.mark.parametrize(
    "route",
    [
        "static/../plugin.py",
        "static/%2e%2e/plugin.py",
        "static/%2E%2E/%2E%2E/setup.py",
        "static/vendor/../../plugin.py",
        "static/vendor%2f..%2f..%2fplugin.py",
        "static/..%5cplugin.py",
        "static/vendor\\LICENSE",
        "static//etc/passwd",
        "static/%252e%252e/plugin.py",
        "static/__init__.py",
        "static/",
        "static/nope.js",
        "static/vendor",
    ],
)
def test_static_rejects_escapes_and_unknown_files(client, route):
    response = client.get(PREFIX + route)
    assert response.status_code == 404


@pytest.mark.parametrize(
    "relative",
    [
        "../plugin.py", "..", "vendor/../../plugin.py", "vendor/../LICENSE", "..\\plugin.py",
        "%2e%2e/plugin.py", "/etc/passwd", "C:/Windows/win.ini", "vendor//LICENSE", ".hidden",
        "__init__.py", "", "vendor",
    ],
)
def test_safe_static_path_rejects(relative):
    # The path as the handler sees it, after one round of URL decoding.
    assert plugin.safe_static_path(relative) is None


def test_safe_static_path_accepts_a_vendored_file():
    assert plugin.safe_static_path("static/vendor/LICENSE") == os.path.join(
        os.path.realpath(plugin.FRONTEND_DIR), "static", "vendor", "LICENSE"
    )


# Loader and import hygiene.


def _parsed_flags(argv):
    from tensorboard.plugins.core import core_plugin

    parser = argparse.ArgumentParser()
    core_plugin.CorePluginLoader().define_flags(parser)
    return parser.parse_args(argv)


def test_loader_raises_default_samples():
    flags = _parsed_flags(["--logdir", "x"])
    plugin.VarUpdateLoader().fix_flags(flags)
    assert flags.samples_per_plugin[md.PLUGIN_NAME] == history_lib.DEFAULT_SAMPLES


@pytest.mark.parametrize("value", ["varupdate=0", "varupdate=5", "scalars=7,varupdate=5"])
def test_loader_keeps_user_samples(value):
    flags = _parsed_flags(["--logdir", "x", "--samples_per_plugin", value])
    plugin.VarUpdateLoader().fix_flags(flags)
    assert flags.samples_per_plugin[md.PLUGIN_NAME] == int(value.rsplit("=", 1)[1])


def test_loader_loads_the_plugin():
    loaded = plugin.VarUpdateLoader().load(base_plugin.TBContext())
    assert isinstance(loaded, plugin.VarUpdatePlugin)


def test_entry_point_names_the_loader():
    from importlib import metadata as importlib_metadata

    points = importlib_metadata.entry_points(group="tensorboard_plugins")
    (point,) = [p for p in points if p.name == md.PLUGIN_NAME]
    assert point.load() is plugin.VarUpdateLoader


def test_backend_imports_without_tensorflow():
    # TensorBoard imports the entry point at start-up: it must not need TF.
    code = (
        "import sys; sys.modules['tensorflow'] = None\n"
        "import tb_varupdate.plugin, tb_varupdate.reader.service\n"
        "assert 'tensorflow' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
