"""The benchmark harness runs, and the storage target holds (bytes, not time, so it is stable)."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_quick_storage_section_writes_a_report_and_meets_its_target():
    proc = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--only", "storage"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = proc.stdout
    assert report.startswith("# Benchmarks\n")
    assert "Measured by `python benchmarks/run.py --quick --only storage`" in report
    target = [line for line in report.splitlines() if line.startswith("| tracker bytes / variable / logged step")]
    assert len(target) == 1 and "| met |" in target[0], target
    # A quick run only prints: the kept results and BENCHMARKS.md are full runs.
    assert not (REPO / "BENCHMARKS.md").exists() or "--quick" not in (REPO / "BENCHMARKS.md").read_text()
    assert "--quick" not in "".join(p.read_text() for p in (REPO / "benchmarks" / "results").glob("*.json"))


def _quick_section(name, logdirs):
    env = dict(os.environ, VARUPDATE_BENCH_DIR=str(logdirs))
    proc = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--only", name],
        cwd=REPO, capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _target_lines(report, prefix):
    return [line for line in report.splitlines() if line.startswith("| " + prefix)]


def test_quick_backend_section_times_every_route_under_both_loaders(tmp_path):
    # Times, not bytes: on a busy test machine a target may be missed, so
    # only that every cell was measured is checked.
    report = _quick_section("backend", tmp_path)
    targets = _target_lines(report, "backend ")
    assert len(targets) == 2 * 2 * 3 * 2  # logdirs x loaders x routes x cold/warm
    assert all(" ms |" in line or " s |" in line for line in targets)
    for route in ("variables", "heatmap"):
        for loader in ("Python", "Rust"):
            assert "`%s` route, %s loader:" % (route, loader) in report
    assert "n/a" not in report
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "one_run_300x600", "runs_4x50x300", "scaling_10-100-300_x_100-300"]


def test_unknown_section_is_a_usage_error():
    proc = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--only", "training,gpu"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "unknown section(s) gpu; choose from training, callback, torch_training, storage, backend, dashboard" in proc.stderr
