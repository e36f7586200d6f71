"""`tb-varupdate check`: exit codes, table and JSON over real event files."""

import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

import tb_varupdate
from tb_varupdate import cli


def _write_run(run_dir, rebind):
    """The article's loop, with the rebinding bug or with assign_sub."""
    w = tf.Variable(0.0, name="w")
    tracker = tb_varupdate.VariableUpdateTracker([w], on_stuck="ignore")
    name = w
    writer = tf.summary.create_file_writer(str(run_dir))
    with writer.as_default():
        for step in range(10):
            with tf.GradientTape() as tape:
                loss = name
            grad = tape.gradient(loss, name)
            if rebind:
                name = name - 0.1 * grad
            else:
                w.assign_sub(0.1 * grad)
            # After the update, as documented; after rebinding, `name` is a tensor.
            tracker.log(step, gradients=[(grad, name)])
    writer.close()


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs")
    _write_run(root / "rebinding", rebind=True)
    _write_run(root / "assign_sub", rebind=False)
    return root


def test_rebinding_run_fails_and_names_variable_and_fix(logdir, capsys):
    assert cli.main(["check", str(logdir)]) == cli.EXIT_PROBLEMS
    out = capsys.readouterr().out
    assert "FAIL never_updated" in out and " w" in out and "v.assign_sub(lr * g)" in out


def test_healthy_run_exits_zero(logdir, capsys):
    assert cli.main(["check", str(logdir), "--run", "^assign_sub$"]) == cli.EXIT_HEALTHY
    assert "ok   updating" in capsys.readouterr().out


def test_json_lists_every_run_tag_and_row(logdir, capsys):
    assert cli.main(["check", str(logdir), "--json"]) == cli.EXIT_PROBLEMS
    report = json.loads(capsys.readouterr().out)
    assert sorted(report["runs"]) == ["assign_sub", "rebinding"]
    (row,) = report["runs"]["rebinding"]["varupdate/model"]["rows"]
    assert (row["variable"], row["status"], row["gradient"], row["trainable"]) == ("w", "never_updated", "not_logged", True)
    (row,) = report["runs"]["assign_sub"]["varupdate/model"]["rows"]
    assert (row["status"], row["first_update_step"], row["last_update_step"]) == ("updating", 0, 9)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["check", "/nonexistent/logs"], "does not exist"),
        (["check", "{empty}"], "no TensorBoard event files"),
        (["check", "{logdir}", "--run", "("], "not a valid regular expression"),
        (["check", "{logdir}", "--run", "^nothing$"], "no varupdate records"),
        (["explode"], "invalid choice"),
    ],
)
def test_usage_errors_exit_two_with_a_clear_message(argv, message, logdir, tmp_path, capsys):
    argv = [a.format(empty=tmp_path, logdir=logdir) for a in argv]
    assert cli.main(argv) == cli.EXIT_USAGE
    assert message in capsys.readouterr().err


def test_console_script_runs_without_tensorflow(logdir):
    # Block TensorFlow: the CLI must read event files with TensorBoard alone.
    code = "import sys; sys.modules['tensorflow'] = None; from tb_varupdate import cli; sys.exit(cli.main(sys.argv[1:]))"
    result = subprocess.run([sys.executable, "-c", code, "check", str(logdir)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "never_updated" in result.stdout
    script = os.path.join(os.path.dirname(sys.executable), "tb-varupdate")
    result = subprocess.run([script, "check", str(logdir), "--run", "assign_sub"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
