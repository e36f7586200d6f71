"""The demo's Lightning and Hugging Face Trainer runs, trained for real, get the verdicts they are about."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `demo` lives at the top of the repository

pytest.importorskip("lightning")
pytest.importorskip("peft")
from demo import trainer_scenarios  # noqa: E402
import readback  # noqa: E402
from tb_varupdate import cli  # noqa: E402


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    return readback.write_scenarios(tmp_path_factory.mktemp("trainer_demo"), trainer_scenarios.SCENARIOS)


@pytest.mark.parametrize("scenario", trainer_scenarios.SCENARIOS, ids=lambda s: s.name)
def test_scenario_verdicts(logdir, scenario):
    readback.assert_scenario(logdir, scenario)
    assert len(list((logdir / scenario.run).glob("events.out.tfevents.*"))) == 1  # as test_demo expects


def test_the_lora_run_says_the_adapter_stayed_at_its_zero_init(logdir):
    rows = cli.check(str(logdir), run_pattern="^hf_lora_target_misses$")["runs"]["hf_lora_target_misses"]
    (lora_b,) = [row for row in rows["varupdate/model"]["rows"] if ".pooler.dense.lora_B." in row["variable"]]
    assert "still at its zero init" in lora_b["diagnosis"]
