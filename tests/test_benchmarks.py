"""The benchmark harness runs, and the storage target holds (bytes, not time, so it is stable)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_compare_matches_every_time_of_the_tables_between_two_runs():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import compare  # pylint: disable=import-outside-toplevel

    def body(cold, note):
        return "\n".join([
            "### Routes", "", "Medians of 5 requests (%s):" % note, "",
            "| logdir | route | cold | warm | answer |", "|---|---|---|---|---|",
            "| (a) | variables | %s | 3.0 ms | 155 kB |" % cold, "",
            "`heatmap` route:", "", "| variables \\ steps | 100 |", "|---|---|", "| 10 | 1.5 s / 2.0 ms |",
        ])

    base, head = compare.table_times(body("200.0 ms", "written in 3 s")), compare.table_times(body("300.0 ms", "reused"))
    assert set(base) == set(head) == {
        ("Routes", "Medians of 5 requests", "(a) | variables", "cold", ""),
        ("Routes", "Medians of 5 requests", "(a) | variables", "warm", ""),
        ("Routes", "`heatmap` route", "10", "100", "cold"),
        ("Routes", "`heatmap` route", "10", "100", "warm"),
    }
    assert head[("Routes", "`heatmap` route", "10", "100", "cold")] == 1.5
    measured = {("base", "backend"): [body("200.0 ms", "a")], ("head", "backend"): [body("300.0 ms", "b")]}
    ratios = {key[2:4]: ratio for _, key, _, _, ratio in compare.compare(measured, ["backend"])}
    assert ratios[("(a) | variables", "cold")] == pytest.approx(1.5) and ratios[("(a) | variables", "warm")] == 1.0


def test_quick_compare_runs_a_section_at_another_commit_and_here(tmp_path):
    env = dict(os.environ, VARUPDATE_BENCH_DIR=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "benchmarks/compare.py", "HEAD", "--quick", "--only", "backend", "--rounds", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=900, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(base) against this checkout (head), 1 round in turns" in proc.stdout
    matched = int(proc.stdout.split(" times matched")[0].rsplit(" ", 1)[1])
    assert matched >= 2 * 2 * 3 * 2  # at least every route, loader, logdir, cold and warm
    assert "| Routes / Medians of" in proc.stdout
    assert "--quick" not in "".join(p.read_text() for p in (REPO / "benchmarks" / "results").glob("compare-*.json"))


def test_unknown_section_is_a_usage_error():
    proc = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--only", "training,gpu"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "unknown section(s) gpu; choose from training, callback, torch_training, gpu_training, torch_fsdp, trainers, storage, backend, dashboard" in proc.stderr


def test_a_section_this_machine_cannot_measure_keeps_the_stored_measurement(tmp_path):
    # Re-running every section on a CPU machine must not replace the GPU figures with "not measured".
    import torch  # pylint: disable=import-outside-toplevel

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device: the section would be measured")
    stored_path = REPO / "benchmarks" / "results" / "gpu_training.json"
    stored = stored_path.read_bytes()
    assert b"NVIDIA" in stored  # measured on a GPU, as committed
    try:
        proc = subprocess.run(
            [sys.executable, "benchmarks/run.py", "--only", "gpu_training", "--output", str(tmp_path / "B.md")],
            cwd=REPO, capture_output=True, text=True, timeout=600,
        )
        assert stored_path.read_bytes() == stored
    finally:
        stored_path.write_bytes(stored)  # whatever happened, the checkout keeps its measurement
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "gpu_training: not measurable here; kept the measurement of" in proc.stderr
    report = (tmp_path / "B.md").read_text()
    assert "## Training overhead, PyTorch on a GPU" in report and "**Not measured**" not in report
    assert "| tracker every step / no logging (GPT-2, NVIDIA H200) |" in report
