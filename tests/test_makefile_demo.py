"""`make demo` serves on localhost unless asked otherwise (issue #13 item 19)."""

import os
import shutil
import subprocess

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)


def _demo_commands(*args):
    # -n prints the recipe without running it (nothing is installed or served).
    result = subprocess.run(["make", "-n", "-B", "demo", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if "bin/tensorboard " in line]
    return line


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_demo_binds_localhost_by_default():
    line = _demo_commands()
    assert "--host localhost" in line and "--bind_all" not in line


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_demo_serves_remotely_only_when_asked():
    assert "--bind_all" in _demo_commands("BIND=--bind_all")
