"""The verdict vocabulary: one source (vocabulary.py), and the dashboard's copy kept equal to it."""

import json
import pathlib
import shutil
import subprocess

import pytest

from tb_varupdate.verdicts import analysis
from tb_varupdate.verdicts import vocabulary

ROOT = pathlib.Path(__file__).resolve().parent.parent
FALLBACK_JS = ROOT / "frontend" / "static" / "vocabulary.js"


def test_analysis_serves_the_vocabulary_module():
    assert analysis.vocabulary() == vocabulary.vocabulary()
    assert analysis.STATUSES == vocabulary.STATUSES


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node")
def test_dashboard_fallback_vocabulary_equals_analysis():
    # The dashboard asks the backend's `vocabulary` route first; its built-in
    # copy is what it draws with when the route is missing, so it must not drift.
    script = "import(%s).then((m) => console.log(JSON.stringify(m.FALLBACK)))" % json.dumps(FALLBACK_JS.as_uri())
    out = subprocess.run(["node", "-e", script], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(out.stdout) == analysis.vocabulary()
