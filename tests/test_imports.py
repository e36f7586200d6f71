"""`import tb_varupdate`, the verdicts and the CLI work without TensorFlow."""

import os
import subprocess
import sys

import pytest

BLOCK_TF = "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None; "


def _run(code):
    return subprocess.run([sys.executable, "-c", BLOCK_TF + code], capture_output=True, text=True, timeout=120)


def test_core_modules_import_without_tensorflow():
    result = _run("import tb_varupdate, tb_varupdate.verdicts.analysis, tb_varupdate.format.metadata, tb_varupdate.cli; print('ok')")
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_writer_needs_tensorflow_and_says_so():
    result = _run("import tb_varupdate; tb_varupdate.VariableUpdateTracker")
    assert result.returncode != 0 and "tensorflow" in result.stderr


# The trainer integrations: each library is imported by its own module only.
TRAINER_LIBRARIES = {"lightning": "lightning.py", "pytorch_lightning": "lightning.py",
                     "transformers": "transformers.py", "peft": "transformers.py", "accelerate": "transformers.py"}


def _imported_roots(path):
    """Top-level names a module imports: `import`/`from` lines anywhere, and importlib.import_module("...")."""
    import ast

    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.split(".")[0] in TRAINER_LIBRARIES:
            roots.add(node.value.split(".")[0])  # a module name given to importlib
    return roots


def test_only_the_integration_modules_name_their_trainer_library():
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "tb_varupdate"
    for path in sorted(package.glob("*.py")):
        for library in _imported_roots(path) & set(TRAINER_LIBRARIES):
            assert path.name == TRAINER_LIBRARIES[library], "%s imports %s" % (path.name, library)


def test_the_torch_writer_and_the_cli_load_no_trainer_library():
    result = _run("import tb_varupdate.torch, tb_varupdate.cli, tb_varupdate.plugin; "
                  "print(sorted(m for m in %r if m in sys.modules))" % sorted(TRAINER_LIBRARIES))
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr


def test_tb_varupdate_transformers_imports_the_real_library_not_itself():
    result = subprocess.run([sys.executable, "-c", "import tb_varupdate.writers.torch.transformers as t; "
                             "print(t._transformers.__name__, hasattr(t._transformers, 'Trainer'))"],
                            capture_output=True, text=True, timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    if "needs the Hugging Face" in result.stderr:
        pytest.skip("transformers is not installed")
    assert result.returncode == 0 and result.stdout.split() == ["transformers", "True"], result.stderr
