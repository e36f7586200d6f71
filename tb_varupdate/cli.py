"""`tb-varupdate check LOGDIR`: the dashboard's verdicts in a terminal or CI job.

Reads event files with TensorBoard's own loader and its TensorFlow stub (no
TensorFlow import, even where it is installed) through the same
`service.check` the backend's `runs` route serves.

Exit codes (README "In CI"):

* 0 `EXIT_HEALTHY`: every run directory, event file, tag and kept record was
  read in full and no trainable variable is a problem (rows accepted with
  `--allow` count as healthy);
* 1 `EXIT_PROBLEMS`: a variable's replicas diverged across ranks, or a trainable variable never updated, stalled or went
  non-finite (whatever else was found);
* 2 `EXIT_USAGE`: bad arguments, no logdir or event files, or no varupdate
  records at all;
* 3 `EXIT_UNREADABLE`: something could not be read and nothing that was read
  gave verdicts (another format version, malformed records, an unreadable
  directory or event file);
* 4 `EXIT_PARTLY_UNREADABLE`: the tags that gave verdicts are healthy, but a
  run directory, event file, tag or kept record could not be read in full.

The gate's rule: whatever could not be read in full is printed as
`UNREADABLE` with its reason and makes the exit code non-zero; only the cut
tail of the newest event file of a directory (a record still being written)
is not. Symlinked directories are read as TensorBoard reads them (followed,
named by the link's path). A reader that closes the pipe (`| head`) ends the
output quietly; the exit code is still the verdict's.
"""

import argparse
import copy
import json
import os
import re
import sys
import types

from tb_varupdate.errors import VarUpdateError
from tb_varupdate.verdicts import analysis

EXIT_HEALTHY, EXIT_PROBLEMS, EXIT_USAGE, EXIT_UNREADABLE, EXIT_PARTLY_UNREADABLE = 0, 1, 2, 3, 4

# Samples of each tag kept in memory while reading. Verdicts need only the
# newest record; a few older variables records let a restarted run be matched.
_SAMPLES_PER_TAG = 10

NO_RECORDS_HINT = (
    "With the Keras callback: point LOGDIR at the callback's log_dir (records land in "
    "LOGDIR/train), pass the callback in fit(callbacks=[...]) and let fit run at least "
    "update_freq batches. In a custom loop: call tracker.log(step) after each update, "
    "inside `with writer.as_default():`."
)


class CheckError(VarUpdateError):
    """A logdir that cannot be checked; the message says why and what to do."""


def _use_tensorboard_stub():
    """Makes TensorBoard read with its own TensorFlow stub, unless TF is already loaded.

    `tensorboard.compat.tf` picks the stub when a module named
    `tensorboard.compat.notf` can be imported (what TensorBoard's no-TF
    build ships); importing TensorFlow would cost seconds and log lines.
    """
    if "tensorflow" not in sys.modules and "tensorboard.compat.notf" not in sys.modules:
        sys.modules["tensorboard.compat.notf"] = types.ModuleType("tensorboard.compat.notf")


def load_provider(logdir):
    """A TensorBoard data provider over `logdir`, loaded with the Python loader.

    Raises:
      CheckError: `logdir` does not exist or holds no event files.
    """
    return _load(logdir)[0]


def _load(logdir):
    """(provider, survey) over `logdir`; see `load_provider`.

    Only the run directories whose event files `eventfiles.survey` read in
    full are handed to TensorBoard's loader: it would stop silently at a
    damaged record, fail on an unreadable file with a log line only, run out
    of memory on a huge length field and block on a FIFO. The others are in
    the survey's `unreadable`.
    """
    # Imported here so `--help` answers without loading TensorBoard's readers.
    from tensorboard.backend.event_processing import data_provider
    from tensorboard.backend.event_processing import plugin_event_multiplexer

    from tb_varupdate.format import metadata as md
    from tb_varupdate.reader import eventfiles

    if not os.path.isdir(logdir):
        raise CheckError("logdir %r does not exist or is not a directory." % logdir)
    try:
        found = eventfiles.survey(logdir)
    except OSError as err:
        raise CheckError("logdir %r cannot be read: %s" % (logdir, err.strerror or err)) from err
    multiplexer = plugin_event_multiplexer.EventMultiplexer(
        tensor_size_guidance={md.PLUGIN_NAME: _SAMPLES_PER_TAG}
    )
    for name, path in found.runs:
        multiplexer.AddRun(path, name)
    multiplexer.Reload()
    if not multiplexer.Runs() and not found.unreadable:
        warnings = found.warnings
        raise CheckError(
            "no TensorBoard event files under %r. Point LOGDIR at the directory you "
            "passed to tf.summary.create_file_writer (or its parent).%s"
            % (logdir, " " + " ".join(warnings) if warnings else "")
        )
    return data_provider.MultiplexerDataProvider(multiplexer, logdir), found


def _compile(pattern, flag):
    try:
        return re.compile(pattern)
    except re.error as err:
        raise CheckError("%s is not a valid regular expression: %s. Received: %r" % (flag, err, pattern)) from err


def check(logdir, run_pattern=None, allow=()):
    """Verdicts for every run and tracker under `logdir`.

    Args:
      logdir: directory of event files, as given to `tensorboard --logdir`.
      run_pattern: optional regex; only runs it matches (re.search) are read.
      allow: regexes (`--allow`); problem rows whose variable matches one are
        accepted (`analysis.apply_allow`).

    Returns:
      {"runs": {run: {tag: variables-route document}},
       "unreadable": [{"run", "tag", "reason"}], "warnings": [...]}. An
      unreadable directory or event file has `"tag": None` and its `"path"`;
      a tag whose verdicts come from older records (newer or other kept
      records could not be parsed) is both in "runs" and in "unreadable".

    Raises:
      CheckError: unreadable logdir, a bad regex, or no varupdate records.
    """
    from tensorboard import context as tb_context

    from tb_varupdate.reader import cache as cache_lib
    from tb_varupdate.reader import service

    pattern = _compile(run_pattern, "--run") if run_pattern else None
    allowed = [_compile(item, "--allow") for item in allow or ()]
    provider, survey = _load(logdir)
    load_warnings = list(survey.warnings)
    cache = cache_lib.RecordCache(provider, thorough=True)
    found = service.check(cache, tb_context.RequestContext(), "", pattern.search if pattern else None)
    result = {}
    for (run, tag), (_, verdicts) in sorted(found.tags.items()):
        verdicts = copy.deepcopy(verdicts)
        analysis.apply_allow(verdicts["rows"], allowed)
        result.setdefault(run, {})[tag] = verdicts
    # Tags with verdicts from what was read while some kept records were not:
    # the gate must not call that healthy.
    unreadable = found.unreadable + found.incomplete
    # Directories and event files that were not read at all: whatever runs
    # they hold may have problems nobody saw (--run filters them by run name).
    for run, path, reason in survey.unreadable:
        if pattern is None or pattern.search(run):
            unreadable.append({"run": run, "tag": None, "path": path, "reason": "%s: %s" % (path, reason)})
    if not result and not unreadable:
        where = " matching --run %r" % run_pattern if run_pattern else ""
        raise CheckError("no varupdate records under %r%s. %s" % (logdir, where, NO_RECORDS_HINT))
    unreadable.sort(key=lambda item: (item["run"], item["tag"] or "", item.get("path", "")))
    warnings = load_warnings + list(found.scan.warnings)
    for tags in result.values():
        for data in tags.values():
            warnings.extend(data["warnings"])
    return {"runs": result, "unreadable": unreadable, "warnings": warnings, "load_warnings": load_warnings}


def printable(text):
    """`text` with control, format and surrogate characters escaped (`\\x1b`, `\\u202e`); "" as `""`.

    Names come from the records: a name holding a terminal escape must not
    clear the screen or retitle the window, and a lone surrogate must not
    make printing fail.
    """
    text = str(text)
    if text.isprintable():
        return text or '""'  # a variable may be called "": show that it is
    out = []
    for char in text:
        if char.isprintable():
            out.append(char)
        else:
            code = ord(char)
            out.append("\\x%02x" % code if code < 0x100 else "\\u%04x" % code if code < 0x10000 else "\\U%08x" % code)
    return "".join(out)


def _format_step(value):
    return "-" if value is None else str(value)


def format_report(report):
    """A plain-text table per run and tracker, problems first; names escaped."""
    lines = []
    for run, tags in report["runs"].items():
        for tag, data in tags.items():
            summary = data["summary"]
            lines.append(
                "%s  %s  (step %s, %d variables, %d trainable: %d problems, %d warnings)"
                % (printable(run or "."), printable(tag), data["step"], summary["variables"],
                   summary["trainable"], summary["problems"], summary["warnings"])
            )
            for warning in data.get("warnings", []):
                lines.append("  warning: %s" % printable(warning))
            for row in data["rows"]:
                mark = "ALLOW" if row.get("allowed") else {2: "FAIL", 1: "WARN"}.get(row["severity"], "ok")
                lines.append(
                    "  %-4s %-13s grad=%-12s %s%s  first=%s last=%s"
                    % (mark, row["status"], row["gradient"], printable(row["variable"]),
                       "" if row["trainable"] else " (not trainable)",
                       _format_step(row["first_update_step"]), _format_step(row["last_update_step"]))
                )
                if row.get("allowed"):
                    lines.append("       accepted by --allow: %s" % printable(row["diagnosis"]))
                elif row["severity"]:
                    lines.append("       %s" % printable(row["diagnosis"]))
            lines.append("")
    for warning in report.get("load_warnings", []):
        lines.append("warning: %s" % printable(warning))
    for item in report.get("unreadable", []):
        lines.append("UNREADABLE  %s  %s: %s" % (printable(item["run"] or "."), printable(item["tag"] or "-"),
                                                 printable(item["reason"])))
    if report.get("unreadable"):
        lines.append("")
    return "\n".join(lines)


def exit_code(report):
    """The documented exit code of a report (see the module docstring)."""
    for tags in report["runs"].values():
        for data in tags.values():
            if not analysis.is_healthy(data["rows"]):
                return EXIT_PROBLEMS
    if report.get("unreadable"):
        # A tag read in part (its verdicts come from older records) still
        # counts as read; one that gave no verdicts does not.
        bad = {(item["run"], item["tag"]) for item in report["unreadable"]}
        readable = [(run, tag) for run, tags in report["runs"].items() for tag, data in tags.items()
                    if (run, tag) not in bad or data["rows"]]
        return EXIT_PARTLY_UNREADABLE if readable else EXIT_UNREADABLE
    return EXIT_HEALTHY


def _parser():
    parser = argparse.ArgumentParser(
        prog="tb-varupdate",
        description="Find variables that never update during training, from TensorBoard event files.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check_parser = commands.add_parser(
        "check",
        help="print every variable's verdict; exit 1 if a trainable one never updated, stalled or went non-finite",
        description="Exit codes: 0 everything read in full and healthy, 1 problems found, 2 usage error or "
                    "no varupdate records, 3 something unreadable and nothing readable, 4 healthy but a run "
                    "directory, event file, tag or record could not be read in full (each is printed as "
                    "UNREADABLE with its reason; only a record still being written at the end of the newest "
                    "event file is let pass). Symlinked directories are followed, as TensorBoard does.",
    )
    check_parser.add_argument("logdir", help="directory of event files (as for tensorboard --logdir)")
    check_parser.add_argument("--run", metavar="REGEX", help="only runs whose name matches this regex")
    check_parser.add_argument(
        "--allow", metavar="REGEX", action="append", default=[],
        help="accept problems of variables whose name matches this regex (repeatable); "
             "they are shown as ALLOW and do not fail the check",
    )
    check_parser.add_argument("--json", action="store_true", help='print {"runs": {RUN: {TAG: {...rows...}}}, ...}')
    return parser


def main(argv=None):
    """Runs the CLI; returns the exit code.

    Reads with TensorBoard's TensorFlow stub unless TensorFlow is already
    imported (set here, not in `check`: a program that calls `check` keeps
    whatever TensorBoard already chose).
    """
    _use_tensorboard_stub()
    for stream in (sys.stdout, sys.stderr):
        # A terminal or CI log that is not UTF-8 still gets every line.
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return EXIT_HEALTHY if exit_.code == 0 else EXIT_USAGE
    try:
        report = check(args.logdir, args.run, args.allow)
    except CheckError as err:
        print("tb-varupdate: error: %s" % printable(err), file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.json:
            json.dump(report, sys.stdout, indent=1, allow_nan=False)
            sys.stdout.write("\n")
            sys.stdout.flush()
            for warning in report["warnings"]:
                print("tb-varupdate: warning: %s" % printable(warning), file=sys.stderr)
        else:
            sys.stdout.write(format_report(report))
            sys.stdout.flush()
    except BrokenPipeError:
        _quiet_closed_stdout()
    return exit_code(report)


def _quiet_closed_stdout():
    """Points stdout at /dev/null after its reader went away (`check | head`).

    Python flushes stdout again at exit; into a closed pipe that prints a
    second traceback, so the descriptor is replaced, not just the object.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        # A stdout without a descriptor (captured in a test): nothing to flush later.
        pass


if __name__ == "__main__":
    sys.exit(main())
