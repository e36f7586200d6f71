"""Storage: bytes on disk per variable per logged step, tracker vs histograms.

Each way of logging writes its own event file for the same variables and
steps; the size of that file (headers, metadata and the variables list
included) is divided by variables x steps.
"""

import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import tb_varupdate  # noqa: E402

ELEMENTS = 1024  # per variable; the tracker's record does not depend on it


def _logdir_bytes(logdir):
    return sum(
        os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(logdir) for name in names
    )


def bytes_per_variable_step(way, variable_count, steps):
    variables = [tf.Variable(tf.random.normal([ELEMENTS]), name="v%d" % i) for i in range(variable_count)]
    grads = [tf.random.normal([ELEMENTS]) for _ in variables]
    tracker = tb_varupdate.VariableUpdateTracker(variables, on_stuck="ignore") if way == "tracker" else None

    @tf.function
    def step_fn(step):
        for variable, grad in zip(variables, grads):
            variable.assign_sub(0.01 * grad)
        if tracker is not None:
            tracker.log(step, gradients=zip(grads, variables))
        else:
            for index, (variable, grad) in enumerate(zip(variables, grads)):
                tf.summary.histogram("v%d" % index, variable, step=step)
                tf.summary.histogram("v%d/gradient" % index, grad, step=step)

    with tempfile.TemporaryDirectory() as logdir:
        writer = tf.summary.create_file_writer(logdir)
        with writer.as_default():
            for step in range(steps):
                step_fn(tf.constant(step, tf.int64))
        writer.close()
        return _logdir_bytes(logdir) / (variable_count * steps)


def run(quick):
    # Quick runs measure the target's own size (300 variables) over fewer steps:
    # the variables record, written once, is spread over 100 records.
    steps, counts = (100, (8, 300)) if quick else (200, (8, 300))
    rows, measured = [], {}
    for count in counts:
        for way in ("tracker", "histograms (weights + gradients)"):
            common.progress("storage: %s, %d variables" % (way, count))
            value = bytes_per_variable_step("tracker" if way == "tracker" else "histograms", count, steps)
            measured[(way, count)] = value
            rows.append((way, count, steps, "%.1f B" % value))
    tracker_most = measured[("tracker", counts[-1])]
    hist_most = measured[("histograms (weights + gradients)", counts[-1])]
    body = "%s\n\n%s\n\nThe tracker writes 60 bytes per variable per record (15 int32 columns, format 3) plus one event header per step for all variables (see docs/FORMAT.md); a histogram costs its buckets, tag and metadata per variable, twice (weights and gradients): %.0fx more here." % (
        __doc__.split("\n\n", 1)[1].strip(),
        common.table(("way", "variables", "steps", "bytes / variable / step"), rows),
        hist_most / tracker_most,
    )
    targets = [common.Target(
        "tracker bytes / variable / logged step (%d variables)" % counts[-1], "%.1f B" % tracker_most, "<= 64 B",
        tracker_most <= 64,
    )]
    return common.Section("Storage", body, targets)


if __name__ == "__main__":
    sys.exit(common.main_for(run))
