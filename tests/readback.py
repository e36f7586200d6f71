"""Reading what a tracker wrote back through TensorBoard's own loader (tests only)."""

from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from tb_varupdate import cli
from tb_varupdate import metadata as md


def verdicts(logdir, run=".", tag="varupdate/model"):
    """{variable: row} of one run, read as `tb-varupdate check` reads it."""
    report = cli.check(str(logdir))
    return {row["variable"]: row for row in report["runs"][run][tag]["rows"]}


def records(run_dir, name="model"):
    """Every updates record of a run directory, oldest first: [(step, Updates)]."""
    accumulator = event_accumulator.EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    accumulator.Reload()
    return [
        (event.step, md.parse_updates(tensor_util.make_ndarray(event.tensor_proto)))
        for event in accumulator.Tensors(md.updates_tag(name))
    ]


def entries(run_dir, name="model"):
    """The entries of the newest variables record of a run directory."""
    from tb_varupdate import variables_record as vr  # pylint: disable=import-outside-toplevel

    accumulator = event_accumulator.EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    accumulator.Reload()
    event = accumulator.Tensors(md.variables_tag(name))[-1]
    return vr.parse_variables(tensor_util.make_ndarray(event.tensor_proto))[0]
