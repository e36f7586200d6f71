"""`tb-varupdate check`: exit codes, table and JSON over real event files."""

import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

import tb_varupdate
from tb_varupdate import cli
from tb_varupdate.format import metadata as md
from tb_varupdate.format import variables as vr


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


# Hand-made records: the CLI as a CI gate (issue #13 items 7-10, issue #10).

import logdirs  # noqa: E402


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return logdirs.write_hostile_logdir(str(tmp_path_factory.mktemp("hostile")))


def _write(path, records):
    logdirs.write_records(str(path), records)
    return path


def test_unreadable_tags_are_printed_with_their_reason_and_exit_four(hostile, capsys):
    # same_name holds a variable that never updates on purpose (a problem: exit 1).
    assert cli.main(["check", hostile, "--run", "^(?!same_name$)"]) == cli.EXIT_PARTLY_UNREADABLE
    out = capsys.readouterr().out
    for run, words in logdirs.HOSTILE_UNREADABLE.items():
        (line,) = [line for line in out.splitlines() if line.startswith("UNREADABLE  %s " % run)]
        assert words in line
    assert "ok   updating" in out  # the good runs beside them still get verdicts


def test_names_are_printed_escaped(hostile, capsys):
    assert cli.main(["check", hostile, "--run", "^(empty|escape|surrogate)_name$"]) == cli.EXIT_HEALTHY
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b[2J\\x1b]0;title\\x07w" in out
    assert "\\ud800w" in out
    assert ' ""  first=0' in out  # the variable called ""


def test_lone_surrogate_name_prints_in_a_subprocess(hostile):
    # The crash was an UnicodeEncodeError on a real stdout (capsys does not encode).
    result = subprocess.run([sys.executable, "-m", "tb_varupdate.cli", "check", hostile, "--run", "surrogate"],
                            capture_output=True, timeout=120)
    assert result.returncode == cli.EXIT_HEALTHY, result.stderr
    assert b"\\ud800w" in result.stdout


@pytest.mark.parametrize(
    "runs, code, message",
    [
        ({"future": logdirs.future_version_records()}, cli.EXIT_UNREADABLE, "version 99 is not supported"),
        ({"future": logdirs.future_version_records(), "good": logdirs.hostile_runs()["good"]},
         cli.EXIT_PARTLY_UNREADABLE, "version 99 is not supported"),
        ({"float32": logdirs.hostile_runs()["float32_only"]}, cli.EXIT_UNREADABLE, "skipped 3 of 3 updates records"),
    ],
)
def test_nothing_readable_and_some_unreadable_are_distinct_exit_codes(tmp_path, capsys, runs, code, message):
    for run, records in runs.items():
        _write(tmp_path / run, records)
    assert cli.main(["check", str(tmp_path)]) == code
    out = capsys.readouterr().out
    assert message in out and "UNREADABLE" in out


def test_json_lists_unreadable_tags_and_warnings(tmp_path, capsys):
    _write(tmp_path / "future", logdirs.future_version_records())
    _write(tmp_path / "good", logdirs.hostile_runs()["good"])
    assert cli.main(["check", str(tmp_path), "--json"]) == cli.EXIT_PARTLY_UNREADABLE
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    (item,) = report["unreadable"]
    assert (item["run"], item["tag"]) == ("future", logdirs.TAG) and "version 99" in item["reason"]
    assert "version 99" in captured.err


def test_a_non_utf8_directory_name_does_not_crash(tmp_path):
    root = os.fsencode(str(tmp_path))
    _write(tmp_path / "good", logdirs.hostile_runs()["good"])
    os.makedirs(os.path.join(root, b"bad\xff\xfename"))
    os.makedirs(os.path.join(root, b"good", b"deeper\xff"))
    result = subprocess.run([sys.executable, "-m", "tb_varupdate.cli", "check", str(tmp_path)],
                            capture_output=True, timeout=120)
    assert result.returncode == cli.EXIT_HEALTHY, result.stderr
    assert b"ok   updating" in result.stdout
    assert b"skipped directory" in result.stdout and b"bad\\udcff\\udcfename" in result.stdout


def test_check_does_not_import_tensorflow_even_when_installed(hostile):
    code = (
        "import sys; from tb_varupdate import cli\n"
        "rc = cli.main(['check', sys.argv[1], '--run', '^good$'])\n"
        "print('TF' if 'tensorflow' in sys.modules else 'noTF', file=sys.stderr); sys.exit(rc)"
    )
    result = subprocess.run([sys.executable, "-c", code, hostile], capture_output=True, text=True, timeout=120)
    assert result.returncode == cli.EXIT_HEALTHY, result.stderr
    assert result.stderr.strip() == "noTF"  # and no TensorFlow log lines before it


def test_allow_accepts_a_problem_row(tmp_path, capsys):
    entries = [logdirs.entry("critic/out/bias")]
    names, digest = vr.encode_variables(entries)
    # Logged 30 times, never changed, zero gradient: a problem unless accepted.
    rows = [{md.GRAD_ZERO_STEPS: 30, md.VALUE_L2: 0.0}]
    _write(tmp_path / "run", [(logdirs.TAG + md.VARIABLES_TAG_SUFFIX, md.KIND_VARIABLES, 0, names),
                              (logdirs.TAG, md.KIND_UPDATES, 29, logdirs.updates(30, digest, rows))])
    assert cli.main(["check", str(tmp_path)]) == cli.EXIT_PROBLEMS
    assert "FAIL never_updated" in capsys.readouterr().out
    assert cli.main(["check", str(tmp_path), "--allow", "nothing", "--allow", "out/bias$"]) == cli.EXIT_HEALTHY
    out = capsys.readouterr().out
    assert "ALLOW never_updated" in out and "accepted by --allow" in out
    assert cli.main(["check", str(tmp_path), "--allow", "("]) == cli.EXIT_USAGE
    assert "--allow is not a valid regular expression" in capsys.readouterr().err


@pytest.mark.parametrize(
    "writer_ids, regressions, expected",
    [
        ((7,), 4, ["4 of 3 records had a step that was not greater", "step=optimizer.iterations"]),
        ((7, 8), 0, ["2 trackers wrote to this tag", "started over in an existing tag",
                     "verdict covers the newest writer", "use another tracker name or logdir"]),
    ],
)
def test_header_warnings_are_printed(tmp_path, capsys, writer_ids, regressions, expected):
    _write(tmp_path / "run", logdirs.restarted_steps_records(writer_ids, regressions))
    cli.main(["check", str(tmp_path)])
    out = capsys.readouterr().out
    for words in expected:
        assert words in out


def test_no_records_message_covers_the_keras_callback_and_custom_loops(tmp_path, capsys):
    _write(tmp_path / "run", [])  # an event file without varupdate records
    assert cli.main(["check", str(tmp_path)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    for words in ("LOGDIR/train", "update_freq", "callbacks=", "writer.as_default()", "tracker.log(step)"):
        assert words in err


def test_check_error_derives_from_the_one_error_base():
    from tb_varupdate.errors import VarUpdateError

    assert issubclass(cli.CheckError, VarUpdateError)
