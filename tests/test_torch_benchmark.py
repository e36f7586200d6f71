"""benchmarks/torch_training.py on a tiny model: every variant runs and the targets are built."""

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

import gpu_training  # noqa: E402
import torch_training  # noqa: E402


def test_every_variant_is_timed_and_targets_say_what_they_measured():
    times = torch_training.step_times(torch_training.many_small(layers=3, width=8), rounds=2, steps_per_round=1)
    assert set(times) == set(torch_training.VARIANTS) and all(t > 0 for t in times.values())
    targets = torch_training._targets("tiny", times, with_ratio=True)
    assert [t.goal for t in targets] == ["<= 1.05x", ">= 20x"]
    assert all(t.met or t.note or "histograms" in t.name for t in targets)


def test_run_py_lists_the_section():
    import run

    assert "torch_training" in run.SECTIONS


def test_the_gpu_section_runs_its_variants_on_the_cpu_and_builds_targets():
    # The GPU figures are measured on a GPU only; here the same code runs on tiny CPU models.
    measured = gpu_training.measure("cpu", quick=True, keys=("300 tensors",))
    assert list(measured) == ["300 tensors"]
    for _, (times, log_seconds) in measured.values():
        assert set(times) == set(gpu_training.VARIANTS) and all(t > 0 for t in times.values())
        assert set(log_seconds) == set(gpu_training.TRACKERS) and all(t > 0 for t in log_seconds.values())
    section = gpu_training.section(measured, "cpu")
    assert "| tracker every step, read_every=1 | " in section.body
    assert [t.goal for t in section.targets if "300 tensors" in t.name] == ["<= 1.15x", "<= 1.01x"]


@pytest.mark.skipif(gpu_training.torch.cuda.is_available(), reason="measures for real where CUDA is present")
def test_without_cuda_the_gpu_section_says_not_measured():
    section = gpu_training.run(quick=True)
    assert section.body.startswith("**Not measured**") and not section.targets


def test_trainers_section_times_both_callbacks_in_their_trainers():
    import subprocess

    import pytest

    pytest.importorskip("lightning")
    pytest.importorskip("transformers")
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "trainers.py"), "--quick"], capture_output=True, text=True,
                          timeout=600, cwd=BENCHMARKS.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "## Training overhead, PyTorch trainers" in proc.stdout
    for trainer in ("Lightning", "transformers"):
        (block,) = [part for part in proc.stdout.split("\n\n**") if part.startswith(trainer)]
        assert "| VariableUpdateCallback | " in block and "| no callback | " in block
    import run

    assert "trainers" in run.SECTIONS


def test_run_py_lists_the_fsdp_section():
    import run
    import torch_fsdp

    assert "torch_fsdp" in run.SECTIONS and torch_fsdp.VARIANTS == ("no logging", "tracker every step")
