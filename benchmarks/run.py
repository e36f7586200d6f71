"""`python benchmarks/run.py [--quick] [--only SECTION,...]`: runs the benchmarks, writes BENCHMARKS.md.

Sections run one after another in fresh processes, so none inherits another's
threads, caches or memory. Each section's result is kept in
benchmarks/results/SECTION.json, and BENCHMARKS.md is rebuilt from all of
them, so `--only` re-measures some sections and keeps the others. `--quick`
shrinks every size for a smoke run and prints instead of writing anything.
"""

import argparse
import datetime
import glob
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SECTIONS = ("training", "callback", "torch_training", "gpu_training", "torch_fsdp", "trainers", "storage", "backend",
            "dashboard")
RESULTS = os.path.join(HERE, "results")


def versions():
    """The versions the measurements ran with, as a sentence part (of those installed: a GPU machine has no TF)."""
    code = (
        "import importlib, json\n"
        "found = {}\n"
        "for name in ('tensorflow', 'tensorboard', 'keras', 'torch', 'numpy'):\n"
        "    try:\n"
        "        found[name] = importlib.import_module(name).__version__\n"
        "    except ImportError:\n"
        "        pass\n"
        "print(json.dumps(found))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return ", ".join("%s %s" % item for item in json.loads(out.stdout.strip().splitlines()[-1]).items())


def machine():
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return "%s, %d cores, %.0f GiB, %s, Python %s" % (
        model, os.cpu_count(), memory, platform.platform(), platform.python_version())


def run_section(name, quick, root=ROOT, env=None):
    """Runs <root>/benchmarks/<name>.py in a fresh process; returns its JSON section.

    The process starts in `root`, so it imports that tree's `tb_varupdate`
    (compare.py runs another commit's tree this way).
    """
    code = (
        "import sys, json, dataclasses; sys.path.insert(0, %r); import %s as m;"
        "s = m.run(%r); print('@@SECTION@@' + json.dumps(dataclasses.asdict(s)))"
    ) % (os.path.join(root, "benchmarks"), name, quick)
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, stdout=subprocess.PIPE, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit("benchmark section %r failed (exit %d)" % (name, proc.returncode))
    line = [l for l in proc.stdout.splitlines() if l.startswith("@@SECTION@@")][-1]
    return json.loads(line[len("@@SECTION@@"):])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, print only")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections: %s" % ",".join(SECTIONS))
    parser.add_argument("--output", default=os.path.join(ROOT, "BENCHMARKS.md"))
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        parser.error("unknown section(s) %s; choose from %s" % (", ".join(unknown), ", ".join(SECTIONS)))

    sys.path.insert(0, HERE)
    import common  # pylint: disable=import-outside-toplevel

    command = "python benchmarks/run.py" + (" --quick" if args.quick else "") + (
        " --only " + args.only if names != list(SECTIONS) else "")
    machine_text, versions_text = machine(), versions()
    measured = {}
    for name in names:
        common.progress("== %s" % name)
        started = time.time()
        section = run_section(name, args.quick)
        section.update(
            seconds=time.time() - started, command=command, machine=machine_text, versions=versions_text,
            when=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        )
        stored = _stored(name)
        if not section.get("measured", True) and stored is not None and stored.get("measured", True):
            # A CPU machine re-running every section must not erase what a GPU measured.
            common.progress("%s: not measurable here; kept the measurement of %s (%s)" % (
                name, stored["when"], stored["machine"]))
            measured[name] = stored
            continue
        measured[name] = section
        if not args.quick:
            os.makedirs(RESULTS, exist_ok=True)
            with open(os.path.join(RESULTS, name + ".json"), "w") as out:
                json.dump(section, out, indent=1)
    # compare-*.json (benchmarks/compare.py: this code against an earlier commit) come last.
    compared = sorted(os.path.basename(p)[:-len(".json")] for p in glob.glob(os.path.join(RESULTS, "compare-*.json")))
    sections = [measured.get(name) or _stored(name) for name in SECTIONS + tuple(compared)]
    sections = [section for section in sections if section is not None]
    text = _report(common, sections)
    print(text)
    if not args.quick:
        with open(args.output, "w") as out:
            out.write(text)
        common.progress("wrote %s" % args.output)
    return 0


def _stored(name):
    path = os.path.join(RESULTS, name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as data:
        return json.load(data)


def _report(common, sections):
    targets = [common.Target(**t) for s in sections for t in s["targets"]]
    lines = [
        "# Benchmarks",
        "",
        "Rebuilt by `python benchmarks/run.py` (also `make bench`) from "
        "benchmarks/results/*.json; each section says the command, machine and "
        "versions that measured it. Times are medians over repeats; ratios compare "
        "runs taken side by side in one process.",
        "",
        "## Targets",
        "",
        common.targets_table(targets),
        "",
    ]
    for section in sections:
        lines += [
            "## %s" % section["title"], "",
            "Measured by `%s` on %s in %.0f s; %s; %s." % (
                section["command"], section["when"], section["seconds"], section["machine"], section["versions"]),
            "", section["body"], "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
