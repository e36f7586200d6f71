"""Helpers the benchmark sections share: timing, tables and targets.

Every section module (`training.py`, `storage.py`, `backend.py`,
`dashboard.py`, `scaling.py`) exposes `run(quick) -> Section` and can also run
alone (`python benchmarks/<section>.py [--quick]`). `run.py` runs them in
order and writes BENCHMARKS.md.
"""

import dataclasses
import statistics
import sys
import time


@dataclasses.dataclass
class Target:
    """One target of the issue and whether the measurement meets it."""

    name: str  # what is compared, e.g. "tracker every step / no logging (MLP)"
    measured: str  # the measured value as shown, e.g. "1.03x"
    goal: str  # e.g. "<= 1.05x"
    met: bool
    note: str = ""  # for a miss: why, with the profile that shows it


@dataclasses.dataclass
class Section:
    """A part of BENCHMARKS.md: a title, markdown body and the targets it checks."""

    title: str
    body: str
    targets: list = dataclasses.field(default_factory=list)
    # False when this machine cannot measure the section (a GPU section without a GPU):
    # run.py then keeps the measurement stored before rather than replace it with nothing.
    measured: bool = True


def median_seconds(fn, repeats, warmup=1):
    """Median wall time of `fn()` over `repeats` calls, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def table(header, rows):
    """A markdown table; cells are converted with str()."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def ms(seconds):
    return "%.1f ms" % (seconds * 1e3) if seconds < 10 else "%.1f s" % seconds


def progress(message):
    """Progress goes to stderr so a section's stdout stays its table."""
    print(message, file=sys.stderr, flush=True)


def targets_table(targets):
    rows = [
        (t.name, t.measured, t.goal, "met" if t.met else "**missed**", t.note)
        for t in targets
    ]
    return table(("target", "measured", "goal", "", "note"), rows)


def main_for(run):
    """`python benchmarks/<section>.py [--quick]`: runs one section, prints it."""
    quick = "--quick" in sys.argv[1:]
    section = run(quick)
    print("## %s\n\n%s\n" % (section.title, section.body))
    if section.targets:
        print(targets_table(section.targets))
    return 0 if all(t.met for t in section.targets) else 1
