"""README.md's Lightning and Hugging Face Trainer blocks run as written and write records.

tests/test_readme.py and tests/test_torch_docs.py run the other blocks. The
models come from small configs with random weights; nothing is downloaded.
"""

import os
import re
import warnings
from pathlib import Path

import pytest

from tb_varupdate import cli

DOC = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = [block for block in re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
          if "tb_varupdate.lightning" in block or "tb_varupdate.transformers" in block]
# Each block's library and the logdir it writes under.
CASES = [("lightning.pytorch", "lightning_logs"), ("transformers", "out/runs"), ("peft", "lora/runs")]


def test_every_block_is_checked():
    assert len(BLOCKS) == len(CASES)


@pytest.mark.parametrize("index", range(len(CASES)), ids=[logdir for _, logdir in CASES])
def test_block_runs_as_written_and_writes_records(tmp_path, monkeypatch, index):
    library, logdir = CASES[index]
    pytest.importorskip(library)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the trainers' hints about a tiny setup
        exec(compile(BLOCKS[index], "%s block %d" % (DOC.name, index + 1), "exec"), {"__name__": "__doc_block__"})
    (run,) = cli.check(logdir)["runs"].values()
    rows = run["varupdate/model"]["rows"]
    assert rows and all(row["logged_steps"] > 0 for row in rows)
    trainable = [row for row in rows if row["trainable"]]
    assert trainable and not any(row["problem"] for row in trainable), [r["diagnosis"] for r in trainable if r["problem"]]
    if library == "peft":
        assert {row["variable"] for row in trainable if ".lora_" in row["variable"]}
        assert not any(row["changed_steps"] for row in rows if not row["trainable"])
    assert os.path.isdir(logdir)
