"""`import tb_varupdate`, the verdicts and the CLI work without TensorFlow."""

import subprocess
import sys

BLOCK_TF = "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None; "


def _run(code):
    return subprocess.run([sys.executable, "-c", BLOCK_TF + code], capture_output=True, text=True, timeout=120)


def test_core_modules_import_without_tensorflow():
    result = _run("import tb_varupdate, tb_varupdate.analysis, tb_varupdate.metadata, tb_varupdate.cli; print('ok')")
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_writer_needs_tensorflow_and_says_so():
    result = _run("import tb_varupdate; tb_varupdate.VariableUpdateTracker")
    assert result.returncode != 0 and "tensorflow" in result.stderr
