"""The benchmark harness runs, and the storage target holds (bytes, not time, so it is stable)."""

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


def test_unknown_section_is_a_usage_error():
    proc = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--only", "training,gpu"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "unknown section(s) gpu; choose from training, storage, backend, dashboard" in proc.stderr
