"""`tb-varupdate check LOGDIR`: the dashboard's verdicts in a terminal or CI job.

Reads event files with TensorBoard's own loader (no TensorFlow needed) and the
same `records.read_verdicts` the backend's `variables` route serves.

Exit codes: 0 healthy, 1 a trainable variable never updated, stalled or went
non-finite, 2 usage error or nothing readable.
"""

import argparse
import json
import os
import re
import sys

from tb_varupdate import analysis
from tb_varupdate import metadata as md

EXIT_HEALTHY, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2

# Samples of each tag kept in memory while reading. Verdicts need only the
# newest record; a few older variables records let a restarted run be matched.
_SAMPLES_PER_TAG = 10


class CheckError(Exception):
    """A logdir that cannot be checked; the message says why and what to do."""


def load_provider(logdir):
    """A TensorBoard data provider over `logdir`, loaded with the Python loader.

    Raises:
      CheckError: `logdir` does not exist or holds no event files.
    """
    # Imported here so `--help` answers without loading TensorBoard's readers.
    from tensorboard.backend.event_processing import data_provider
    from tensorboard.backend.event_processing import plugin_event_multiplexer

    if not os.path.isdir(logdir):
        raise CheckError("logdir %r does not exist or is not a directory." % logdir)
    multiplexer = plugin_event_multiplexer.EventMultiplexer(
        tensor_size_guidance={md.PLUGIN_NAME: _SAMPLES_PER_TAG}
    )
    multiplexer.AddRunsFromDirectory(logdir)
    multiplexer.Reload()
    if not multiplexer.Runs():
        raise CheckError(
            "no TensorBoard event files under %r. Point LOGDIR at the directory you "
            "passed to tf.summary.create_file_writer (or its parent)." % logdir
        )
    return data_provider.MultiplexerDataProvider(multiplexer, logdir)


def check(logdir, run_pattern=None):
    """Verdicts for every run and tracker under `logdir`.

    Args:
      logdir: directory of event files, as given to `tensorboard --logdir`.
      run_pattern: optional regex; only runs it matches (re.search) are read.

    Returns:
      {"runs": {run: {tag: variables-route response}}}.

    Raises:
      CheckError: unreadable logdir, a bad regex, or no varupdate records.
    """
    from tensorboard import context as tb_context

    from tb_varupdate import records

    try:
        pattern = re.compile(run_pattern) if run_pattern else None
    except re.error as err:
        raise CheckError("--run is not a valid regular expression: %s. Received: %r" % (err, run_pattern)) from err
    provider = load_provider(logdir)
    ctx = tb_context.RequestContext()
    tags_by_run = records.list_update_tags(provider, ctx, experiment_id="")
    result = {}
    for run in sorted(tags_by_run):
        if pattern and not pattern.search(run):
            continue
        result[run] = {
            tag: records.read_verdicts(provider, ctx, "", run, tag) for tag in tags_by_run[run]
        }
    if not result:
        hint = (
            " matching --run %r" % run_pattern if run_pattern else
            "; call tracker.log(step) inside writer.as_default() in your training loop"
        )
        raise CheckError("no varupdate records under %r%s." % (logdir, hint))
    return {"runs": result}


def _format_step(value):
    return "-" if value is None else str(value)


def format_report(report):
    """A plain-text table per run and tracker, problems first."""
    lines = []
    for run, tags in report["runs"].items():
        for tag, data in tags.items():
            summary = data["summary"]
            lines.append(
                "%s  %s  (step %s, %d variables, %d trainable: %d problems, %d warnings)"
                % (run or ".", tag, data["step"], summary["variables"], summary["trainable"],
                   summary["problems"], summary["warnings"])
            )
            for warning in data.get("warnings", []):
                lines.append("  warning: %s" % warning)
            for row in data["rows"]:
                mark = {2: "FAIL", 1: "WARN"}.get(row["severity"], "ok")
                lines.append(
                    "  %-4s %-13s grad=%-12s %s%s  first=%s last=%s"
                    % (mark, row["status"], row["gradient"], row["variable"],
                       "" if row["trainable"] else " (not trainable)",
                       _format_step(row["first_update_step"]), _format_step(row["last_update_step"]))
                )
                if row["severity"]:
                    lines.append("       %s" % row["diagnosis"])
            lines.append("")
    return "\n".join(lines)


def exit_code(report):
    """EXIT_PROBLEMS when any row of any run is a problem, else EXIT_HEALTHY."""
    for tags in report["runs"].values():
        for data in tags.values():
            if not analysis.is_healthy(data["rows"]):
                return EXIT_PROBLEMS
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
    )
    check_parser.add_argument("logdir", help="directory of event files (as for tensorboard --logdir)")
    check_parser.add_argument("--run", metavar="REGEX", help="only runs whose name matches this regex")
    check_parser.add_argument("--json", action="store_true", help='print {"runs": {RUN: {TAG: {...rows...}}}}')
    return parser


def main(argv=None):
    """Runs the CLI; returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return EXIT_HEALTHY if exit_.code == 0 else EXIT_USAGE
    try:
        report = check(args.logdir, args.run)
    except CheckError as err:
        print("tb-varupdate: error: %s" % err, file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        json.dump(report, sys.stdout, indent=1, allow_nan=False)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_report(report))
    return exit_code(report)


if __name__ == "__main__":
    sys.exit(main())
