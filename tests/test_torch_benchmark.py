"""benchmarks/torch_training.py on a tiny model: every variant runs and the targets are built."""

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

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


def test_run_py_lists_the_fsdp_section():
    import run
    import torch_fsdp

    assert "torch_fsdp" in run.SECTIONS and torch_fsdp.VARIANTS == ("no logging", "tracker every step")
