"""Every PyTorch demo scenario, trained for real, gets the verdicts it is about."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `demo` lives at the top of the repository

from demo import torch_scenarios  # noqa: E402
import readback  # noqa: E402
from tb_varupdate import cli  # noqa: E402


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    return readback.write_scenarios(tmp_path_factory.mktemp("torch_demo"), torch_scenarios.SCENARIOS)


@pytest.mark.parametrize("scenario", torch_scenarios.SCENARIOS, ids=lambda s: s.name)
def test_scenario_verdicts(logdir, scenario):
    readback.assert_scenario(logdir, scenario)


def test_demo_shape_matches_the_tensorflow_scenarios():
    names = [s.name for s in torch_scenarios.SCENARIOS]
    assert {"torch_layer_replaced", "torch_zero_grad_before_step", "torch_frozen_weight_decay",
            "torch_ddp_unused_parameter", "torch_fsdp2_unused_layer"} <= set(names)
    assert len(names) == len(set(names)) and all(s.description and s.write.__doc__ for s in torch_scenarios.SCENARIOS)
