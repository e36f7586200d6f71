"""`python -m demo` end to end: the whole demo in a subprocess, then `tb-varupdate check`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `demo` lives at the top of the repository

from demo import run_all  # noqa: E402  (no TensorFlow until main() runs)

# The demo writes 31 tiny runs (6 PyTorch, 2 through the Lightning and Hugging Face trainers) in ~60 s here; the limit is for a loaded machine.
DEMO_TIMEOUT_S = 300
TF_NOISE = ("oneDNN", "absl::InitializeLog", "cpu_feature_guard", "This TensorFlow binary")
SECOND_RUN = ["seed1_rebinding", "keras_frozen_and_unused"]


def _demo(logdir, *args):
    # Without the test session's TF_CPP_MIN_LOG_LEVEL: the demo must quiet TensorFlow itself.
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, "-m", "demo", "--logdir", str(logdir)] + list(args),
        cwd=REPO, env=env, capture_output=True, text=True, timeout=DEMO_TIMEOUT_S,
    )


def _check_json(logdir):
    script = Path(sys.executable).parent / "tb-varupdate"
    proc = subprocess.run([str(script), "check", str(logdir), "--json"], capture_output=True, text=True, timeout=120)
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def _event_files(logdir):
    """{scenario directory: [event file paths]}."""
    found = {}
    for path in Path(logdir).rglob("events.out.tfevents.*"):
        found.setdefault(path.relative_to(logdir).parts[0], []).append(str(path))
    return found


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The whole demo, once: (logdir, completed process, check report, exit code)."""
    scenarios = run_all.load_scenarios()
    logdir = tmp_path_factory.mktemp("demo")
    proc = _demo(logdir)
    code, report, _ = _check_json(logdir)
    return logdir, proc, report, code, scenarios


def test_demo_writes_every_scenario_and_says_how_to_look(demo):
    logdir, proc, _, _, scenarios = demo
    assert proc.returncode == 0, proc.stdout + proc.stderr
    count = len(scenarios)
    lines = proc.stdout.splitlines()
    progress = [line for line in lines if line.startswith("[")]
    assert [line.split(" ... ")[0] for line in progress] == [
        "[%d/%d] %s" % (i, count, s.name) for i, s in enumerate(scenarios, 1)
    ]
    assert all(" ... done (" in line and line.endswith(" s)") for line in progress)
    assert "  tensorboard --logdir %s" % logdir in lines
    assert "  then open http://localhost:6006/#varupdate" in lines
    # The rebinding scenario's tracker warning is shown, not lost.
    assert "warned: gradient pair #0 holds a tf.Tensor" in proc.stdout


def test_demo_keeps_tensorflow_quiet(demo):
    _, proc, _, _, _ = demo
    for noise in TF_NOISE:
        assert noise not in proc.stdout + proc.stderr


def test_check_fails_on_the_demo_because_it_has_broken_runs(demo):
    _, _, report, code, scenarios = demo
    assert code == 1
    assert sorted(report["runs"]) == sorted(s.run for s in scenarios)
    failing = {run for run, tags in report["runs"].items() if any(r["problem"] for r in tags["varupdate/model"]["rows"])}
    assert failing == {s.run for s in scenarios if not s.healthy}


def test_each_demo_run_gets_its_verdicts(demo):
    _, _, report, _, scenarios = demo
    got = {
        s.name: {row["variable"]: (row["status"], row["gradient"]) for row in report["runs"][s.run]["varupdate/model"]["rows"]}
        for s in scenarios
    }
    assert got == {s.name: s.expected for s in scenarios}


def test_running_the_demo_again_replaces_runs(demo):
    logdir, _, before_report, _, scenarios = demo
    before = _event_files(logdir)
    assert sorted(before) == sorted(s.name for s in scenarios)
    assert all(len(files) == 1 for files in before.values())
    proc = _demo(logdir, "--only", "^(%s)$" % "|".join(SECOND_RUN))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[2/2] keras_frozen_and_unused ... done" in proc.stdout
    after = _event_files(logdir)
    assert {name: len(files) for name, files in after.items()} == {name: 1 for name in before}
    # The two runs were rewritten (new files), the others left alone.
    changed = sorted(name for name in before if before[name] != after[name])
    assert changed == sorted(SECOND_RUN)
    _, report, _ = _check_json(logdir)
    assert report["runs"]["seed1_rebinding"] == before_report["runs"]["seed1_rebinding"]


@pytest.mark.parametrize("args, message", [
    (["--only", "("], "--only is not a valid regex"),
    (["--only", "no_such_scenario"], "no scenario matches --only 'no_such_scenario'"),
])
def test_bad_only_is_a_usage_error(tmp_path, capsys, args, message):
    assert run_all.main(["--logdir", str(tmp_path)] + args) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
