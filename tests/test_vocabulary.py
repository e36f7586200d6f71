"""The verdict vocabulary: one owner (verdicts/vocabulary.py); the node tests' fixture is written from it."""

import json
import pathlib

from tb_varupdate.verdicts import vocabulary

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "frontend" / "tests" / "vocabulary.json"
STATIC = ROOT / "frontend" / "static"


def test_node_fixture_equals_the_python_vocabulary():
    # The dashboard draws its words from the `vocabulary` route; the node tests
    # from this file instead. Regenerate it after changing vocabulary.py:
    # python -c "import json; from tb_varupdate.verdicts import vocabulary; print(json.dumps(vocabulary.vocabulary(), indent=2))" > frontend/tests/vocabulary.json
    assert json.loads(FIXTURE.read_text(encoding="utf-8")) == vocabulary.vocabulary()


def test_the_dashboard_restates_no_status_word():
    # Only the route gives the words: no module of the dashboard spells a
    # status's label or phrase (a copy would drift from vocabulary.py).
    sources = "\n".join(path.read_text(encoding="utf-8") for path in sorted(STATIC.rglob("*.js"))
                        if "vendor" not in path.parts)
    words = [status["phrase"] for status in vocabulary.vocabulary()["statuses"]]
    assert [word for word in words if json.dumps(word) in sources] == []
