"""Reading what a tracker wrote back through TensorBoard's own loader (tests only)."""

from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from tb_varupdate import cli
from tb_varupdate.format import metadata as md


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


def write_scenarios(logdir, scenarios):
    """Trains every demo scenario of `scenarios` into `logdir` (their warnings are part of the stories)."""
    import warnings  # pylint: disable=import-outside-toplevel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for scenario in scenarios:
            scenario.write(str(logdir))
    return logdir


def assert_scenario(logdir, scenario):
    """A demo scenario's run reads back with the verdicts, trainable flags and health it is about."""
    report = cli.check(str(logdir), run_pattern="^%s$" % scenario.run)
    rows = report["runs"][scenario.run]["varupdate/model"]["rows"]
    assert {row["variable"]: (row["status"], row["gradient"]) for row in rows} == scenario.expected
    assert {row["variable"] for row in rows if not row["trainable"]} == scenario.not_trainable
    assert scenario.healthy == (not any(row["problem"] for row in rows))


def entries(run_dir, name="model"):
    """The entries of the newest variables record of a run directory."""
    from tb_varupdate.format import variables as vr  # pylint: disable=import-outside-toplevel

    accumulator = event_accumulator.EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    accumulator.Reload()
    event = accumulator.Tensors(md.variables_tag(name))[-1]
    return vr.parse_variables(tensor_util.make_ndarray(event.tensor_proto))[0]
