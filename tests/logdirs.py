"""Logdirs of real event files, written by TensorFlow, for the backend tests.

Plain functions (not fixtures) so each test module can write what it needs
once, in a module-scoped fixture. Two sources of records:

* `write_step500_run`: the real `VariableUpdateTracker` over plain variables,
  one of which changes only at step 500 of 1,000;
* `write_records`: hand-made records built with `writers.reference.updates_record` /
  `encode_variables` and written with `tf.summary.write`, for exact values and
  for malformed records the tracker would never write.
"""

import json
import os

import numpy as np

from tb_varupdate.format import metadata as md

from tb_varupdate.format import variables as vr
from tb_varupdate.writers import reference

STEP500_RUN = "step500"
STEP500_STEPS = 1000
TAG = md.updates_tag("model")
HAND_TAG = md.updates_tag("hand")


def _tf():
    # Imported on use: test modules that only need pure helpers stay light.
    import tensorflow as tf

    return tf


def write_step500_run(logdir, run=STEP500_RUN, steps=STEP500_STEPS):
    """A real tracker run: `w` changes only at step 500, `b` every step.

    `frozen` is not trainable and never changes. Returns the run's directory.
    """
    tf = _tf()
    from tb_varupdate.writers.tf.tracker import VariableUpdateTracker

    w = tf.Variable([1.0, 2.0], name="w")
    b = tf.Variable(0.5, name="b")
    frozen = tf.Variable(3.0, trainable=False, name="frozen")
    # on_stuck="ignore": `w` is stuck until step 500 on purpose.
    tracker = VariableUpdateTracker([w, b, frozen], name="model", on_stuck="ignore")
    run_dir = os.path.join(logdir, run)
    writer = tf.summary.create_file_writer(run_dir)
    with writer.as_default():
        for step in range(steps):
            if step == 500:
                w.assign_add([0.1, 0.1])
            b.assign_add(0.01)
            tracker.log(step)
    writer.close()
    return run_dir


def entry(name, joined=0, trainable=True, shape=(2,)):
    """A variables-record entry as `encode_variables` expects."""
    return {"name": name, "shape": list(shape), "dtype": "float32", "trainable": trainable, "joined": joined}


def updates(logged, digest, rows, every_n=1, **header):
    """An updates tensor from a list of per-variable column dicts.

    Args:
      rows: list of {column index: value}; float columns take floats, the
        others ints; unset columns are 0 (FIRST/LAST_UPDATE_STEP and
        FIRST_NON_FINITE_STEP default to -1, ROWS_CHANGED to -1).
      header: optional header fields of `writers.reference.updates_record`
        (writer_id, step_regressions, logs_at_last_finite_grads).
    """
    ints = np.zeros((len(rows), md.NUM_COLUMNS), dtype=np.int64)
    floats = np.zeros((len(rows), md.NUM_COLUMNS), dtype=np.float64)
    for index, columns in enumerate(rows):
        for column in (md.FIRST_UPDATE_STEP, md.LAST_UPDATE_STEP, md.FIRST_NON_FINITE_STEP, md.ROWS_CHANGED):
            ints[index, column] = -1
        ints[index, md.TRAINABLE] = 1
        for column, value in columns.items():
            if column in md.FLOAT_COLUMNS:
                floats[index, column] = value
            else:
                ints[index, column] = value
    header.update({"logged": logged, "names_hash": digest, "every_n": every_n})
    return reference.updates_record(header, ints, floats)


def write_records(run_dir, records):
    """Writes (tag, kind, step, value) records with tf.summary.write.

    `kind` is KIND_UPDATES or KIND_VARIABLES, or raw plugin content bytes
    (to write a record of another format version).
    """
    tf = _tf()
    from tensorboard.compat.proto import summary_pb2

    writer = tf.summary.create_file_writer(run_dir)
    with writer.as_default():
        for tag, kind, step, value in records:
            if isinstance(kind, bytes):
                meta = summary_pb2.SummaryMetadata(
                    plugin_data=summary_pb2.SummaryMetadata.PluginData(
                        plugin_name=md.PLUGIN_NAME, content=kind
                    ),
                    data_class=summary_pb2.DATA_CLASS_TENSOR,
                )
            else:
                meta = md.create_summary_metadata(kind)
            tf.summary.write(tag, tf.constant(value), step=step, metadata=meta)
    writer.close()


# The "hand" tracker: `a` from the start, `c` appended at logged=3 (step 3).
HAND_ENTRIES_1 = [entry("a")]
HAND_ENTRIES_2 = [entry("a"), entry("c", joined=3)]
# (step, {a columns}, {c columns} or None); steps 0..5, logged = step + 1.
HAND_ROWS = [
    (0, {md.DELTA_L2: 0.0, md.VALUE_L2: 2.0, md.GRAD_L2: md.GRAD_NOT_GIVEN}, None),
    (1, {md.DELTA_L2: 1.0, md.VALUE_L2: 2.0, md.GRAD_L2: 1.5}, None),
    (2, {md.DELTA_L2: 0.0, md.VALUE_L2: 2.0, md.GRAD_L2: 0.0}, None),
    (3, {md.DELTA_L2: 2.0, md.VALUE_L2: 4.0, md.GRAD_L2: md.GRAD_NONE}, {md.DELTA_L2: 0.0, md.VALUE_L2: 0.0}),
    (4, {md.DELTA_L2: 0.0, md.VALUE_L2: 4.0, md.GRAD_L2: float("inf")}, {md.DELTA_L2: 1.0, md.VALUE_L2: 0.0}),
    (5, {md.DELTA_L2: 0.4, md.VALUE_L2: 4.0, md.GRAD_L2: 0.3}, {md.DELTA_L2: 1.0, md.VALUE_L2: 2.0}),
]


def hand_records():
    """The "hand" tracker's records, with cumulative counters that fit."""
    variables_1, digest_1 = vr.encode_variables(HAND_ENTRIES_1)
    variables_2, digest_2 = vr.encode_variables(HAND_ENTRIES_2)
    out = [
        (HAND_TAG + md.VARIABLES_TAG_SUFFIX, md.KIND_VARIABLES, 0, variables_1),
        (HAND_TAG + md.VARIABLES_TAG_SUFFIX, md.KIND_VARIABLES, 3, variables_2),
    ]
    changed = {"a": [], "c": []}
    for step, a_cols, c_cols in HAND_ROWS:
        rows = []
        for name, cols in (("a", a_cols), ("c", c_cols)):
            if cols is None:
                continue
            if cols[md.DELTA_L2] > 0:
                changed[name].append(step)
            counters = dict(cols)
            counters[md.CHANGED_STEPS] = len(changed[name])
            if changed[name]:
                counters[md.FIRST_UPDATE_STEP] = changed[name][0]
                counters[md.LAST_UPDATE_STEP] = changed[name][-1]
                counters[md.LOGS_AT_LAST_UPDATE] = changed[name][-1] + 1
            counters[md.MAX_RELATIVE_UPDATE] = 0.5 if changed[name] else 0.0
            rows.append(counters)
        digest = digest_2 if c_cols is not None else digest_1
        out.append((HAND_TAG, md.KIND_UPDATES, step, updates(step + 1, digest, rows)))
    return out


def _three_step_records(tag=TAG, names=("x",)):
    entries = [entry(name) for name in names]
    variables, digest = vr.encode_variables(entries)
    out = [(tag + md.VARIABLES_TAG_SUFFIX, md.KIND_VARIABLES, 0, variables)]
    for step in range(3):
        rows = [
            {md.DELTA_L2: 1.0, md.VALUE_L2: 2.0, md.CHANGED_STEPS: step + 1,
             md.FIRST_UPDATE_STEP: 0, md.LAST_UPDATE_STEP: step, md.LOGS_AT_LAST_UPDATE: step + 1,
             md.MAX_RELATIVE_UPDATE: 0.5}
            for _ in names
        ]
        out.append((tag, md.KIND_UPDATES, step, updates(step + 1, digest, rows)))
    return out, digest


def malformed_records():
    """Three good records, then a float32 one (step 3) and a wrong shape (step 4)."""
    out, _ = _three_step_records()
    out.append((TAG, md.KIND_UPDATES, 3, np.zeros((2, md.NUM_COLUMNS), dtype=np.float32)))
    out.append((TAG, md.KIND_UPDATES, 4, np.zeros((2, 7), dtype=np.int32)))
    return out


def bad_json_records():
    """Good updates records whose only variables record is not JSON."""
    out, _ = _three_step_records()
    out[0] = (TAG + md.VARIABLES_TAG_SUFFIX, md.KIND_VARIABLES, 0, b"{not json")
    return out


def mismatch_records():
    """Updates records whose names_hash matches no variables record."""
    out, digest = _three_step_records()
    rows = [{md.DELTA_L2: 1.0, md.VALUE_L2: 2.0}]
    out.append((TAG, md.KIND_UPDATES, 3, updates(4, digest ^ 1, rows)))
    return out


def future_version_records():
    """A tag whose plugin content says format version 99."""
    content = json.dumps({"version": 99, "kind": md.KIND_UPDATES}).encode("utf-8")
    return [(TAG, content, step, np.zeros((2, md.NUM_COLUMNS + 3), dtype=np.int32)) for step in range(2)]


def non_finite_records():
    """One variable whose value went Inf: exercises NaN/Inf -> null."""
    entries = [entry("x")]
    variables, digest = vr.encode_variables(entries)
    rows = [{md.DELTA_L2: float("nan"), md.VALUE_L2: float("inf"), md.GRAD_L2: float("nan"),
             md.CHANGED_STEPS: 1, md.FIRST_UPDATE_STEP: 0, md.LAST_UPDATE_STEP: 0,
             md.LOGS_AT_LAST_UPDATE: 1, md.FIRST_NON_FINITE_STEP: 0,
             md.MAX_RELATIVE_UPDATE: float("nan")}]
    return [
        (TAG + md.VARIABLES_TAG_SUFFIX, md.KIND_VARIABLES, 0, variables),
        (TAG, md.KIND_UPDATES, 0, updates(1, digest, rows)),
    ]


def write_truncated_copy(source_run_dir, run_dir, keep_fraction=0.6):
    """Copies a run's event file, cut mid-record, plus a file of garbage."""
    os.makedirs(run_dir)
    (name,) = [n for n in os.listdir(source_run_dir) if "tfevents" in n]
    with open(os.path.join(source_run_dir, name), "rb") as handle:
        data = handle.read()
    with open(os.path.join(run_dir, name), "wb") as handle:
        handle.write(data[: int(len(data) * keep_fraction)])
    with open(os.path.join(run_dir, name + ".garbage.tfevents.0"), "wb") as handle:
        handle.write(b"\x00\x01 this is not a TFRecord file" * 40)
    return run_dir


def write_standard_logdir(logdir):
    """Every scenario the plugin and server tests use, under `logdir`."""
    step500_dir = write_step500_run(logdir)
    write_records(os.path.join(logdir, "hand"), hand_records())
    write_records(os.path.join(logdir, "malformed"), malformed_records())
    write_records(os.path.join(logdir, "badjson"), bad_json_records())
    write_records(os.path.join(logdir, "mismatch"), mismatch_records())
    write_records(os.path.join(logdir, "future"), future_version_records())
    write_records(os.path.join(logdir, "nonfinite"), non_finite_records())
    write_truncated_copy(step500_dir, os.path.join(logdir, "truncated"))
    return logdir


def load_provider(logdir, samples=10):
    """A MultiplexerDataProvider over `logdir` keeping `samples` per tag.

    10 is what `tensorboard` (Python loader) keeps for a third-party plugin
    without our loader's raised default.
    """
    from tensorboard.backend.event_processing import data_provider
    from tensorboard.backend.event_processing import plugin_event_multiplexer

    multiplexer = plugin_event_multiplexer.EventMultiplexer(
        tensor_size_guidance={md.PLUGIN_NAME: samples}
    )
    multiplexer.AddRunsFromDirectory(logdir)
    multiplexer.Reload()
    return data_provider.MultiplexerDataProvider(multiplexer, logdir), multiplexer


# Hostile records (issue #13): each run is malformed or odd in one way, beside a good one.
ESCAPE_NAME = "\x1b[2J\x1b]0;title\x07w"
SURROGATE_NAME = "\ud800w"


def _one_variable_run(name="x", steps=(0, 1, 2), variables=None, first_update=None):
    """A tag whose one variable changes at every record; `variables` replaces its variables record."""
    entries = [entry(name)]
    try:
        names, digest = vr.encode_variables(entries)
    except UnicodeEncodeError:
        # A lone surrogate: no writer hashes it, but a record can still hold it.
        digest = 12345
        names = json.dumps({"names_hash": digest, "variables": entries}).encode("utf-8")
    out = [(TAG + md.VARIABLES_TAG_SUFFIX, md.KIND_VARIABLES, steps[0], names if variables is None else variables)]
    for index, step in enumerate(steps):
        first = steps[0] if first_update is None else first_update
        rows = [{md.DELTA_L2: 1.0, md.VALUE_L2: 2.0, md.CHANGED_STEPS: index + 1,
                 md.FIRST_UPDATE_STEP: max(min(first, 2**31 - 1), -(2**31)),
                 md.LAST_UPDATE_STEP: max(min(step, 2**31 - 1), -(2**31)),
                 md.LOGS_AT_LAST_UPDATE: index + 1, md.MAX_RELATIVE_UPDATE: 0.5}]
        out.append((TAG, md.KIND_UPDATES, step, updates(index + 1, digest, rows)))
    return out


def _huge_ints_variables(**changes):
    """The variables record of one variable "x" with integer fields no int64 holds."""
    extra = changes.pop("document", {})
    document = {"names_hash": vr.names_hash([entry("x")]), "variables": [dict(entry("x"), **changes)]}
    document.update(extra)
    return json.dumps(document).encode("utf-8")


def same_name_records(name="x"):
    """Two variables called `name` in one record: row 0 never changes, row 1 changes every record."""
    entries = [entry(name), entry(name)]
    names, digest = vr.encode_variables(entries)
    out = [(TAG + md.VARIABLES_TAG_SUFFIX, md.KIND_VARIABLES, 0, names)]
    for step in range(3):
        rows = [
            {md.DELTA_L2: 0.0, md.VALUE_L2: 2.0},
            {md.DELTA_L2: 1.0, md.VALUE_L2: 2.0, md.CHANGED_STEPS: step + 1, md.FIRST_UPDATE_STEP: 0,
             md.LAST_UPDATE_STEP: step, md.LOGS_AT_LAST_UPDATE: step + 1, md.MAX_RELATIVE_UPDATE: 0.5},
        ]
        out.append((TAG, md.KIND_UPDATES, step, updates(step + 1, digest, rows)))
    return out


def hostile_runs():
    """{run: records} of every hostile case; "good" is a healthy run beside them."""
    list_name = json.dumps({"names_hash": vr.names_hash([entry("x")]),
                            "variables": [dict(entry("x"), name=["a", "b"])]}).encode("utf-8")
    float32_only = _one_variable_run()[:1] + [
        (TAG, md.KIND_UPDATES, step, np.zeros((2, md.NUM_COLUMNS), dtype=np.float32)) for step in range(3)
    ]
    return {
        "good": _one_variable_run(),
        "scalar_variables": _one_variable_run(variables=np.int64(2**50)),
        "list_name": _one_variable_run(variables=list_name),
        "float32_only": float32_only,
        "extreme_steps": _one_variable_run(steps=(-(2**63), 0, 2**63 - 1)),
        "time_ns_steps": _one_variable_run(steps=(0, 1, 2, 1_764_000_000_000_000_000)),
        "negative_steps": _one_variable_run(steps=(-30, -20, -10)),
        "empty_name": _one_variable_run(name=""),
        "escape_name": _one_variable_run(name=ESCAPE_NAME),
        "surrogate_name": _one_variable_run(name=SURROGATE_NAME),
        "huge_joined": _one_variable_run(variables=_huge_ints_variables(joined=2**63)),
        "huge_ints": _one_variable_run(variables=_huge_ints_variables(
            joined=2**64 + 1, shape=[2**63, 2**70], document={"writer_id": 2**64})),
        "same_name": same_name_records(),
    }


# Runs of hostile_runs() whose tag cannot give verdicts, and the words of the reason.
HOSTILE_UNREADABLE = {
    "scalar_variables": "variables record must be a scalar string",
    "list_name": "a name is not a string",
    "float32_only": "skipped 3 of 3 updates records",
}


def write_hostile_logdir(logdir):
    """Every hostile run of `hostile_runs` under `logdir`."""
    for run, records in hostile_runs().items():
        write_records(os.path.join(logdir, run), records)
    return logdir


def restarted_steps_records(writer_ids=(7,), step_regressions=4):
    """A tag whose steps restarted (header step_regressions), written by `writer_ids` in turn.

    Each writer writes its own variables record (with its writer_id), as a
    second tracker starting over in an existing tag does.
    """
    entries = [entry("x")]
    out = []
    logged = 0
    for number, writer_id in enumerate(writer_ids):
        names, digest = vr.encode_variables(entries, writer_id=writer_id)
        out.append((TAG + md.VARIABLES_TAG_SUFFIX, md.KIND_VARIABLES, number * 10, names))
        for index in range(3):
            logged = index + 1
            rows = [{md.DELTA_L2: 1.0, md.VALUE_L2: 2.0, md.CHANGED_STEPS: logged, md.FIRST_UPDATE_STEP: 0,
                     md.LAST_UPDATE_STEP: index, md.LOGS_AT_LAST_UPDATE: logged}]
            out.append((TAG, md.KIND_UPDATES, number * 10 + index,
                        updates(logged, digest, rows, writer_id=writer_id, step_regressions=step_regressions)))
    return out


def write_records_tb(run_dir, records):
    """`write_records` with TensorBoard's own event file writer: no TensorFlow, a few ms a run.

    For property tests that write a fresh run per example.
    """
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.summary.writer import event_file_writer
    from tensorboard.util import tensor_util

    writer = event_file_writer.EventFileWriter(str(run_dir))
    for tag, kind, step, value in records:
        array = np.array(value, dtype=object) if isinstance(value, bytes) else np.asarray(value)
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(
            tag=tag, metadata=md.create_summary_metadata(kind), tensor=tensor_util.make_tensor_proto(array))])
        writer.add_event(event_pb2.Event(wall_time=1.0 + step, step=step, summary=summary))
    writer.close()
    return str(run_dir)
