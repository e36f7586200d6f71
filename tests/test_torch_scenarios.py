"""Every PyTorch demo scenario, trained for real, gets the verdicts it is about."""

import sys
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `demo` lives at the top of the repository

from demo import torch_scenarios  # noqa: E402
from tb_varupdate import cli  # noqa: E402


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("torch_demo")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the stuck and attach warnings are part of the stories
        for scenario in torch_scenarios.SCENARIOS:
            scenario.write(str(logdir))
    return logdir


@pytest.mark.parametrize("scenario", torch_scenarios.SCENARIOS, ids=lambda s: s.name)
def test_scenario_verdicts(logdir, scenario):
    report = cli.check(str(logdir), run_pattern="^%s$" % scenario.run)
    rows = report["runs"][scenario.run]["varupdate/model"]["rows"]
    assert {row["variable"]: (row["status"], row["gradient"]) for row in rows} == scenario.expected
    assert {row["variable"] for row in rows if not row["trainable"]} == scenario.not_trainable
    assert scenario.healthy == (not any(row["problem"] for row in rows))


def test_demo_shape_matches_the_tensorflow_scenarios():
    names = [s.name for s in torch_scenarios.SCENARIOS]
    assert {"torch_layer_replaced", "torch_zero_grad_before_step", "torch_frozen_weight_decay",
            "torch_ddp_unused_parameter", "torch_fsdp2_unused_layer"} <= set(names)
    assert len(names) == len(set(names)) and all(s.description and s.write.__doc__ for s in torch_scenarios.SCENARIOS)
