"""The demo's Lightning and Hugging Face Trainer runs, trained for real, get the verdicts they are about."""

import sys
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `demo` lives at the top of the repository

pytest.importorskip("lightning")
pytest.importorskip("peft")
from demo import trainer_scenarios  # noqa: E402
from tb_varupdate import cli  # noqa: E402


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("trainer_demo")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the stuck warnings are part of the stories
        for scenario in trainer_scenarios.SCENARIOS:
            scenario.write(str(logdir))
    return logdir


@pytest.mark.parametrize("scenario", trainer_scenarios.SCENARIOS, ids=lambda s: s.name)
def test_scenario_verdicts(logdir, scenario):
    report = cli.check(str(logdir), run_pattern="^%s$" % scenario.run)
    rows = report["runs"][scenario.run]["varupdate/model"]["rows"]
    assert {row["variable"]: (row["status"], row["gradient"]) for row in rows} == scenario.expected
    assert {row["variable"] for row in rows if not row["trainable"]} == scenario.not_trainable
    assert scenario.healthy == (not any(row["problem"] for row in rows))
    assert len(list((logdir / scenario.run).glob("events.out.tfevents.*"))) == 1  # as test_demo expects


def test_the_lora_run_says_the_adapter_stayed_at_its_zero_init(logdir):
    rows = cli.check(str(logdir), run_pattern="^hf_lora_target_misses$")["runs"]["hf_lora_target_misses"]
    (lora_b,) = [row for row in rows["varupdate/model"]["rows"] if ".pooler.dense.lora_B." in row["variable"]]
    assert "still at its zero init" in lora_b["diagnosis"]
