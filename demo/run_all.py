"""Writes every demo scenario under one logdir: `python -m demo --logdir DIR`.

Each scenario's run directory is deleted and written afresh, so running the
demo twice leaves one event file per run, not two (TensorBoard would show
both, one after the other).
"""

import argparse
import os
import re
import shutil
import sys
import time
import warnings

from demo import catalogue

DEFAULT_LOGDIR = "demo_logs"
TENSORBOARD_PORT = 6006
# Long tracker warnings are cut here; the full text is in `tb-varupdate check`.
WARNING_WIDTH = 130


def _trainer_scenarios():
    """The Lightning and Hugging Face Trainer runs, or none where those libraries are not installed."""
    try:
        from demo import trainer_scenarios
    except ImportError:
        return []
    return trainer_scenarios.SCENARIOS


def load_scenarios(verbose=False):
    """Every demo scenario, TensorFlow's, PyTorch's, then the PyTorch trainers', importing TensorFlow quietly unless `verbose`."""
    if verbose:
        from demo import scenarios, torch_scenarios
        return scenarios.SCENARIOS + torch_scenarios.SCENARIOS + _trainer_scenarios()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with catalogue.quiet_stderr():
        from demo import scenarios, torch_scenarios
        trainers = _trainer_scenarios()
    import tensorflow as tf

    # Python-side TF warnings, e.g. "the dtype of the source tensor must be
    # floating" from the int_trainable scenario, which is on purpose.
    tf.get_logger().setLevel("ERROR")
    return scenarios.SCENARIOS + torch_scenarios.SCENARIOS + trainers


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description="Train tiny models that show each way a variable can fail to update, "
        "and write one TensorBoard run per scenario.",
    )
    parser.add_argument("--logdir", default=DEFAULT_LOGDIR, help="where to write the runs (default: %(default)s)")
    parser.add_argument("--only", metavar="REGEX", help="only the scenarios whose name matches this regex")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--verbose", action="store_true", help="keep TensorFlow's own logging")
    return parser


def _tracker_messages(caught):
    """First lines of tb_varupdate's warnings, once each, in order."""
    seen = []
    for warning in caught:
        text = str(warning.message)
        if not text.startswith("tb_varupdate:"):
            continue
        lines = text[len("tb_varupdate: "):].splitlines()
        line = lines[0]
        if line.endswith("stuck:"):
            # The stuck report lists "  <variable>: <status> <diagnosis>" below.
            line += " " + ", ".join(item.strip().split(": ", 1)[0] for item in lines[1:])
        if len(line) > WARNING_WIDTH:
            line = line[: WARNING_WIDTH - 3] + "..."
        if line not in seen:
            seen.append(line)
    return seen


def run(logdir, scenarios, out=sys.stdout):
    """Writes `scenarios` under `logdir`; returns the names of those that failed."""
    os.makedirs(logdir, exist_ok=True)
    failed = []
    for number, scenario in enumerate(scenarios, 1):
        print("[%d/%d] %s ... " % (number, len(scenarios), scenario.name), end="", file=out, flush=True)
        shutil.rmtree(os.path.join(logdir, scenario.name), ignore_errors=True)
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                scenario.write(logdir)
            except Exception as err:  # pylint: disable=broad-except
                # One broken scenario should not hide the others' runs.
                print("FAILED: %s: %s" % (type(err).__name__, err), file=out)
                failed.append(scenario.name)
                continue
        print("done (%.1f s)" % (time.perf_counter() - start), file=out)
        print("      %s" % scenario.description, file=out)
        for line in _tracker_messages(caught):
            print("      warned: %s" % line, file=out)
    return failed


def main(argv=None):
    """Runs the demo; returns 0, or 1 when a scenario failed, 2 on bad arguments."""
    args = _parser().parse_args(argv)
    try:
        pattern = re.compile(args.only or "")
    except re.error as err:
        print("python -m demo: error: --only is not a valid regex: %s. Received: %r" % (err, args.only),
              file=sys.stderr)
        return 2
    scenarios = load_scenarios(args.verbose)
    selected = [s for s in scenarios if pattern.search(s.name)]
    if args.list:
        for scenario in selected:
            print("%-30s %s" % (scenario.run, scenario.description))
        return 0
    if not selected:
        names = ", ".join(s.name for s in scenarios)
        print("python -m demo: error: no scenario matches --only %r. Scenarios: %s" % (args.only, names),
              file=sys.stderr)
        return 2
    start = time.perf_counter()
    failed = run(args.logdir, selected)
    print("\n%d runs written to %s in %.1f s." % (len(selected) - len(failed), args.logdir, time.perf_counter() - start))
    if failed:
        print("Failed: %s" % ", ".join(failed))
    print("See them in TensorBoard:\n  tensorboard --logdir %s\n  then open http://localhost:%d/#varupdate"
          % (args.logdir, TENSORBOARD_PORT))
    print("Or in a terminal:\n  tb-varupdate check %s" % args.logdir)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
