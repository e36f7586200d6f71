"""The built wheel ships the backend and the frontend, and TensorBoard finds it.

The wheel is built from a copy of the source tree (so other work in the
checkout is not disturbed) and installed into a fresh venv that borrows
TensorBoard and its dependencies from this venv's site-packages (PyPI is slow
or out of reach in CI); `tb_varupdate` itself comes only from the wheel.
"""

import ast
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile

import pytest

import local_http
import logdirs

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
# TensorBoard imports every installed plugin and reads the logdir before it
# answers; on a loaded 2-core machine that can take tens of seconds.
START_TIMEOUT_S = 120
# The fresh venv's processes: without PYTHONPATH, which would put a source
# tree ahead of the wheel (a checkout run with PYTHONPATH=. for its tests).
WHEEL_ENV = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}


def setup_keywords():
    """package_data and entry_points as written in setup.py."""
    with open(os.path.join(ROOT, "setup.py"), encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    (call,) = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
               and getattr(node.func, "attr", None) == "setup"]
    keywords = {kw.arg: kw.value for kw in call.keywords}
    return ast.literal_eval(keywords["package_data"]), ast.literal_eval(keywords["entry_points"])


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory):
    target = tmp_path_factory.mktemp("wheel") / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules")
    for name in ("tb_varupdate", "frontend"):
        shutil.copytree(os.path.join(ROOT, name), target / name, ignore=ignore)
    for name in ("setup.py", "README.md"):
        shutil.copy(os.path.join(ROOT, name), target / name)
    return target


@pytest.fixture(scope="module")
def wheel(source_copy):
    out = source_copy.parent / "dist"
    # --no-isolation: build with this venv's setuptools instead of fetching one.
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(source_copy)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (built,) = list(out.glob("*.whl"))
    return built


def expected_files(source_copy):
    expected = set()
    for folder, _, files in os.walk(source_copy / "tb_varupdate"):
        for name in files:
            if name.endswith(".py"):
                expected.add(os.path.relpath(os.path.join(folder, name), source_copy).replace(os.sep, "/"))
    # Every file the dashboard serves, found on disk rather than from
    # package_data's globs, so a folder the globs miss fails here.
    frontend = source_copy / "frontend"
    for folder, folders, files in os.walk(frontend):
        folders[:] = [f for f in folders if f not in ("tests", "__pycache__")]
        for name in files:
            relative = os.path.relpath(os.path.join(folder, name), frontend).replace(os.sep, "/")
            expected.add("tb_varupdate/frontend/" + relative)
    return expected


def test_wheel_contains_sources_and_frontend(wheel, source_copy):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = expected_files(source_copy)
    for required in ("tb_varupdate/plugin.py", "tb_varupdate/reader/service.py", "tb_varupdate/format/metadata.py",
                     "tb_varupdate/verdicts/analysis.py", "tb_varupdate/writers/common.py",
                     "tb_varupdate/writers/tf/tracker.py", "tb_varupdate/writers/torch/record.py",
                     "tb_varupdate/frontend/static/vendor/uPlot.esm.js",
                     "tb_varupdate/frontend/static/panes/overview.js"):
        assert required in expected
    assert expected <= names, sorted(expected - names)


def test_wheel_entry_points(wheel):
    _, entry_points = setup_keywords()
    (info,) = [n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(info).decode("utf-8")
    assert "[tensorboard_plugins]\nvarupdate = tb_varupdate.plugin:VarUpdateLoader" in text
    for group, lines in entry_points.items():
        assert "[%s]" % group in text
        for line in lines:
            assert line in text


@pytest.fixture(scope="module")
def fresh_venv(wheel, tmp_path_factory):
    base = tmp_path_factory.mktemp("venv")
    env = base / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, timeout=300)
    python = env / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    # Borrow this venv's packages except tb_varupdate (its editable install
    # would shadow the wheel): link them into one folder named by a .pth.
    borrowed = base / "borrowed"
    borrowed.mkdir()
    ours = [path for path in sys.path if path.endswith("site-packages") and os.path.isdir(path)]
    for name in os.listdir(ours[0]):
        lowered = name.lower().replace("-", "_")
        if "tb_varupdate" in lowered or lowered.startswith("__editable__") or name.endswith(".pth"):
            continue
        os.symlink(os.path.join(ours[0], name), borrowed / name)
    with open(os.path.join(site, "borrowed.pth"), "w", encoding="utf-8") as handle:
        handle.write(str(borrowed) + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True, timeout=300, env=WHEEL_ENV,
    )
    return python


def test_installed_package_comes_from_the_wheel(fresh_venv, tmp_path):
    result = subprocess.run(
        [str(fresh_venv), "-c", "import tb_varupdate.plugin as p; print(p.__file__)"],
        capture_output=True, text=True, cwd=str(tmp_path), timeout=120, env=WHEEL_ENV,
    )
    assert result.returncode == 0, result.stderr
    assert str(fresh_venv.parent.parent) in result.stdout
    assert ROOT not in result.stdout


# The import paths the README shows, each with the name it imports.
PUBLIC_PATHS = (
    ("tb_varupdate", "VariableUpdateTracker"),
    ("tb_varupdate.keras", "VariableUpdateCallback"),
    ("tb_varupdate.torch", "ParameterUpdateTracker"),
    ("tb_varupdate.lightning", "VariableUpdateCallback"),
    ("tb_varupdate.transformers", "VariableUpdateCallback"),
    ("tb_varupdate.cli", "main"),
    ("tb_varupdate.plugin", "VarUpdateLoader"),
)


def test_the_readmes_import_paths_work_from_the_wheel(fresh_venv, tmp_path):
    code = "\n".join(
        ["import importlib, os"]
        + ["obj = getattr(importlib.import_module(%r), %r)" % pair for pair in PUBLIC_PATHS]
        + ["import tb_varupdate; print(os.path.dirname(tb_varupdate.__file__))"]
    )
    result = subprocess.run([str(fresh_venv), "-c", code], capture_output=True, text=True, cwd=str(tmp_path),
                            timeout=300, env=WHEEL_ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1].startswith(str(fresh_venv.parent.parent))
    script = subprocess.run([str(fresh_venv.parent / "tb-varupdate"), "--help"], capture_output=True, text=True,
                            cwd=str(tmp_path), timeout=120, env=WHEEL_ENV)
    assert script.returncode == 0 and "check" in script.stdout, script.stderr[-3000:]


def test_tensorboard_from_the_wheel_serves_the_plugin(fresh_venv, source_copy, tmp_path):
    logdir = tmp_path / "logs"
    logdirs.write_records(str(logdir / "hand"), logdirs.hand_records())
    port = local_http.free_port()
    log = open(tmp_path / "tensorboard.log", "w+", encoding="utf-8")
    process = subprocess.Popen(
        [str(fresh_venv), "-m", "tensorboard.main", "--logdir", str(logdir), "--port", str(port),
         "--host", "127.0.0.1", "--load_fast=false"],
        stdout=log, stderr=subprocess.STDOUT, cwd=str(tmp_path), env=WHEEL_ENV,
    )
    base = "http://127.0.0.1:%d/" % port
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        listing = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                status, body, _ = local_http.get(base + "data/plugins_listing")
                if status == 200 and "varupdate" in json.loads(body):
                    listing = json.loads(body)
                    break
            except OSError:  # connection refused while it starts (URLError is one)
                pass
            time.sleep(0.5)
        log.seek(0)
        assert listing is not None, "TensorBoard did not list varupdate:\n" + log.read()[-3000:]
        assert listing["varupdate"]["tab_name"] == "Variable Updates"
        status, body, _ = local_http.get(base + "data/plugin/varupdate/runs")
        assert status == 200
        assert [run["run"] for run in json.loads(body)["runs"]] == ["hand"]
        status, _, content_type = local_http.get(base + "data/plugin/varupdate/index.js")
        if (source_copy / "frontend" / "index.js").exists():
            assert (status, content_type) == (200, "text/javascript")
        else:
            assert status == 404
    finally:
        local_http.stop(process)
        log.close()
