"""`python benchmarks/compare.py REV [--only SECTION,...] [--rounds N] [--quick]`: sections at REV and here, side by side.

A change is "not slower" only against a baseline measured on the same machine
in the same hour: this runs each section at REV ("base") and in this checkout
("head") in turns, in fresh processes, the order swapped every round so that
load drifting over the run falls on both alike. REV is `git archive`d into a
temporary folder and imports its own `tb_varupdate`; each side writes its
synthetic logdirs into its own cache folder, since the record format may
differ between them.

Every time in the sections' tables is matched between the sides by section,
heading, table, row and column; the report gives each side's median over the
rounds and head / base. It is kept in benchmarks/results/compare-<sections>.json,
which BENCHMARKS.md shows after the sections, and printed; `--quick` runs the
sections' small sizes and only prints.
"""

import argparse
import datetime
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import common  # noqa: E402
import run as run_lib  # noqa: E402

DEFAULT_SECTIONS = ("backend", "dashboard")
# Cells below this are within a timer's and a scheduler's noise on a busy
# 2-core machine: their ratios are shown but not counted as slower.
NOISE_FLOOR_S = 0.005
SLOWER = 1.2  # head / base above this, on a cell above the floor, is reported as slower

_TIME = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?) (ms|s)\s*$")


def parse_time(text):
    """Seconds from a table's "12.3 ms" / "1.2 s", else None."""
    match = _TIME.match(text)
    if not match:
        return None
    return float(match.group(1)) * (1e-3 if match.group(2) == "ms" else 1.0)


def _cell_times(cell):
    """The times in a cell: "3.3 ms / 1.4 ms" holds two, "667.6 ms (520.8 ms - 955.8 ms)" one (its median)."""
    parts = re.sub(r"\([^)]*\)", "", cell).split(" / ")
    times = [parse_time(part) for part in parts]
    return times if times and all(t is not None for t in times) else None


def table_times(body):
    """{(heading, caption, row key, column, part): seconds} of a section's markdown body.

    A table's caption is the line above it up to its first "(", so one that
    quotes a size or a duration in brackets still matches; the row key is
    the row's cells before its first time; a column is named by its header.
    A cell holding two times ("3.3 ms / 1.4 ms", the backend's scaling
    tables) gives parts "cold" and "warm".
    """
    found = {}
    heading, caption, header = "", "", None
    for line in body.splitlines():
        if not line.startswith("|"):
            header = None
            if line.startswith("#"):
                heading, caption = line.lstrip("# ").strip(), ""
            elif line.strip():
                caption = line.split("(", 1)[0].strip().rstrip(":")
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            continue
        if set("".join(cells)) <= set("-: "):
            continue
        row = []
        for column, cell in enumerate(cells):
            times = _cell_times(cell)
            if times is None:
                if len(row) == column:  # still before the first time
                    row.append(cell)
                continue
            parts = [""] if len(times) == 1 else ["cold", "warm"][:len(times)]
            name = header[column] if column < len(header) else str(column)
            for part, seconds in zip(parts, times):
                found[heading, caption, " | ".join(row), name, part] = seconds
    return found


def _export(rev, into):
    """REV's tree in `into`, importing its own `tb_varupdate` and frontend from there."""
    archive = subprocess.run(["git", "-C", ROOT, "archive", "--format=tar", rev], stdout=subprocess.PIPE, check=True)
    subprocess.run(["tar", "-x", "-C", into], input=archive.stdout, check=True)
    # setup.py maps the package tb_varupdate.frontend to the top-level frontend/;
    # an editable install resolves that name to this checkout's folder whatever
    # the cwd, so the other tree would serve this checkout's dashboard. A link
    # where a plain import looks first gives it its own.
    inner = os.path.join(into, "tb_varupdate", "frontend")
    if os.path.exists(os.path.join(into, "frontend", "__init__.py")) and not os.path.exists(inner):
        os.symlink(os.path.join(into, "frontend"), inner)


def _check_imports(root, env):
    """Raises unless a process started in `root` imports the plugin and its frontend from `root`."""
    code = "import tb_varupdate.plugin as p, tb_varupdate.frontend as f; print(p.__file__); print(f.__file__)"
    files = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                           check=True).stdout.split()
    real = os.path.realpath(root) + os.sep
    strays = [path for path in files if not os.path.realpath(path).startswith(real)]
    if strays:
        raise SystemExit("compare: a process in %s imports %s from outside it; the comparison "
                         "would measure the wrong code" % (root, ", ".join(strays)))


def _side_env(cache):
    env = dict(os.environ)
    env["VARUPDATE_BENCH_DIR"] = cache
    env.pop("PYTHONPATH", None)  # each side imports tb_varupdate from its own folder (the cwd)
    return env


def compare(measured, sections):
    """Rows (section, where, base s, head s, ratio) for every time both sides measured."""
    rows = []
    for name in sections:
        base = [table_times(body) for body in measured["base", name]]
        head = [table_times(body) for body in measured["head", name]]
        for key in base[0]:
            if all(key in side for side in base + head):
                base_s = statistics.median(side[key] for side in base)
                head_s = statistics.median(side[key] for side in head)
                rows.append((name, key, base_s, head_s, head_s / base_s if base_s else math.inf))
    return rows


def _where(key):
    return " / ".join(part for part in key if part)


def report(label, rows, rounds, sections):
    counted = [r for r in rows if max(r[2], r[3]) >= NOISE_FLOOR_S]
    slower = [r for r in counted if r[4] > SLOWER]
    geomean = math.exp(statistics.fmean(math.log(r[4]) for r in counted)) if counted else float("nan")
    lines = [
        "`%s` (base) against this checkout (head), %d round%s in turns, median per side. "
        "%d times matched; over those of at least %s, head / base has a geometric mean of %.2fx, "
        "and %d are above %.1fx%s."
        % (label, rounds, "" if rounds == 1 else "s", len(rows), common.ms(NOISE_FLOOR_S), geomean, len(slower), SLOWER,
           (": " + "; ".join("%s %s %.2fx" % (r[0], _where(r[1]), r[4]) for r in slower)) if slower else ""),
        "",
    ]
    for name in sections:
        mine = [r for r in rows if r[0] == name]
        lines += ["%s:" % name, "", common.table(
            ("where", "base", "head", "head / base"),
            [(_where(r[1]), common.ms(r[2]), common.ms(r[3]), "%.2fx" % r[4]) for r in mine]), ""]
    title = "%s against %s" % (", ".join(sections).capitalize(), label)
    return common.Section(title=title, body="\n".join(lines).rstrip()), geomean, slower


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the baseline commit, e.g. HEAD~1")
    parser.add_argument("--only", default=",".join(DEFAULT_SECTIONS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="small sizes, print only")
    parser.add_argument("--note", default="", help="a paragraph for the report (what differs besides the code)")
    args = parser.parse_args(argv)
    sections = [n for n in args.only.split(",") if n]
    unknown = sorted(set(sections) - set(run_lib.SECTIONS))
    if unknown or args.rounds < 1:
        parser.error("sections from %s, rounds >= 1" % ", ".join(run_lib.SECTIONS))
    described = subprocess.run(["git", "-C", ROOT, "log", "-1", "--format=%h %s", args.rev],
                               capture_output=True, text=True, check=True).stdout.strip()
    label = described.split(" ", 1)[0]
    head = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty=, with uncommitted changes"],
                          capture_output=True, text=True, check=True).stdout.strip()
    cache = os.environ.get("VARUPDATE_BENCH_DIR") or os.path.join(tempfile.gettempdir(), "tb-varupdate-bench")
    started = time.time()
    measured = {}
    with tempfile.TemporaryDirectory(prefix="varupdate-base-") as base_root:
        _export(args.rev, base_root)
        sides = {"base": (base_root, os.path.join(cache, "base-" + label)), "head": (ROOT, cache)}
        for root, side_cache in sides.values():
            _check_imports(root, _side_env(side_cache))
        for round_ in range(args.rounds):
            order = ("base", "head") if round_ % 2 == 0 else ("head", "base")
            for name in sections:
                for side in order:
                    root, side_cache = sides[side]
                    common.progress("== round %d, %s, %s" % (round_ + 1, name, side))
                    section = run_lib.run_section(name, args.quick, root=root, env=_side_env(side_cache))
                    measured.setdefault((side, name), []).append(section["body"])
    rows = compare(measured, sections)
    section, geomean, slower = report(label, rows, args.rounds, sections)
    body = section.body + "\n\nBase: %s. Head: %s." % (described, head) + ("\n\n" + args.note if args.note else "")
    result = dict(
        title=section.title, body=body, targets=[],
        seconds=time.time() - started, machine=run_lib.machine(), versions=run_lib.versions(),
        command="python benchmarks/compare.py %s --only %s --rounds %d%s%s" % (
            args.rev, ",".join(sections), args.rounds, " --quick" if args.quick else "",
            " --note ..." if args.note else ""),
        when=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        geomean=geomean, slower=len(slower),
    )
    if not args.quick:
        with open(os.path.join(run_lib.RESULTS, "compare-%s.json" % "-".join(sections)), "w") as out:
            json.dump(result, out, indent=1)
    print("## %s\n\n%s" % (result["title"], result["body"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
