"""`tb-varupdate check` as a CI gate (issue #21): whatever it could not read fails it.

Every logdir here is real event files (tf.summary.write through
`logdirs.write_records`), damaged or arranged the way a user's disk can be:
a symlinked run, a directory whose name is not UTF-8, a directory or file the
reading user may not open, a byte flipped inside a record, a length field of
2**62, a FIFO named like an event file, a reader that closes the pipe. Each
CLI run that could block runs in a subprocess with a timeout.
"""

import json
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

import pytest

from tb_varupdate import cli
from tb_varupdate.format import crc32c
from tb_varupdate.format import metadata as md
from tb_varupdate.format import variables as vr
from tb_varupdate.reader import eventfiles

import logdirs

TIMEOUT_S = 120
# A user without root's right to read anything: permission bits apply to it.
NOBODY = 65534


def _never_updated_records(names=("stuck/kernel",), logged=30):
    """A tracker whose variables were logged `logged` times and never changed."""
    entries = [logdirs.entry(name) for name in names]
    data, digest = vr.encode_variables(entries)
    rows = [{md.GRAD_PRESENT_STEPS: logged, md.VALUE_L2: 1.0} for _ in names]
    return [(logdirs.TAG + md.VARIABLES_TAG_SUFFIX, md.KIND_VARIABLES, 0, data),
            (logdirs.TAG, md.KIND_UPDATES, logged - 1, logdirs.updates(logged, digest, rows))]


def _good(path):
    logdirs.write_records(str(path), logdirs.hostile_runs()["good"])
    return str(path)


def _event_file(run_dir):
    (name,) = [name for name in os.listdir(run_dir) if "tfevents" in name]
    return os.path.join(run_dir, name)


def _records(path):
    """[(offset, length)] of every record of an event file."""
    with open(path, "rb") as handle:
        data = handle.read()
    out, offset = [], 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset:offset + 8])
        out.append((offset, length))
        offset += 12 + length + 4
    return out


def _many_steps_run(run_dir, steps=11):
    """One updating variable logged at steps 0..steps-1 (one record each)."""
    records = logdirs._one_variable_run(steps=tuple(range(steps)))
    logdirs.write_records(str(run_dir), records)
    return str(run_dir)


def _run_cli(args, timeout=TIMEOUT_S):
    return subprocess.run([sys.executable, "-m", "tb_varupdate.cli", *args], capture_output=True,
                          timeout=timeout, text=True, errors="backslashreplace")


def test_a_run_reached_through_a_symlink_is_read_as_tensorboard_reads_it(tmp_path):
    elsewhere = tmp_path / "elsewhere" / "run_7"
    logdirs.write_records(str(elsewhere), _never_updated_records())
    logdir = tmp_path / "logs"
    logdir.mkdir()
    os.symlink(str(elsewhere), str(logdir / "latest"))
    os.symlink(str(logdir), str(logdir / "loop"))  # a link back up is not walked forever
    os.symlink(str(tmp_path / "deleted"), str(logdir / "previous"))  # a stale link: nothing to read
    result = _run_cli(["check", str(logdir)])
    assert result.returncode == cli.EXIT_PROBLEMS, result.stdout + result.stderr
    assert result.stdout.startswith("latest  varupdate/model")
    assert "FAIL never_updated" in result.stdout and "stuck/kernel" in result.stdout


def test_a_run_in_a_directory_whose_name_is_not_utf8_fails_the_gate(tmp_path):
    _good(tmp_path / "good")
    # Written under a UTF-8 name (TensorFlow cannot open the other), then renamed.
    logdirs.write_records(str(tmp_path / "stuck"), _never_updated_records())
    os.rename(os.path.join(os.fsencode(str(tmp_path)), b"stuck"), os.path.join(os.fsencode(str(tmp_path)), b"run\xff\xfe"))
    result = _run_cli(["check", str(tmp_path)])
    assert result.returncode == cli.EXIT_PARTLY_UNREADABLE, result.stdout + result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("UNREADABLE")]
    assert "run\\udcff\\udcfe" in line and "not UTF-8" in line


def _check_as(user, logdir, warm_logdir):
    """(exit code, stdout) of `cli.main(["check", logdir])` run by uid `user`.

    As root, a forked child reads a logdir first (every module the check
    imports is then loaded: the interpreter may live where `user` cannot
    read), then drops to `user` and checks `logdir`.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 99
        try:
            os.close(read_end)
            cli.check(warm_logdir)
            os.setgroups([])
            os.setgid(user)
            os.setuid(user)
            report = cli.check(logdir)
            text = cli.format_report(report)
            code = cli.exit_code(report)
        except BaseException as err:  # reported to the parent, which fails the test
            text = "child failed: %r" % (err,)
        with os.fdopen(write_end, "w", errors="backslashreplace") as out:
            out.write(text)
        os._exit(code)
    os.close(write_end)
    chunks = []
    deadline = time.monotonic() + TIMEOUT_S
    with os.fdopen(read_end, "r", errors="backslashreplace") as handle:
        while True:
            ready, _, _ = select.select([handle], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError("the check did not finish in %ds" % TIMEOUT_S)
            chunk = handle.read()
            if not chunk:
                break
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), "".join(chunks)


@pytest.fixture
def shared_dir():
    """A directory every user can read (pytest's own tmp_path is root's alone)."""
    path = tempfile.mkdtemp(prefix="tbvu-gate-")
    os.chmod(path, 0o755)
    yield path
    for root, dirs, _ in os.walk(path):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("what", ["directory", "file", "link"])
def test_a_run_the_user_may_not_read_fails_the_gate(shared_dir, what):
    logdir = os.path.join(shared_dir, "logs")
    _good(os.path.join(logdir, "good"))
    hidden = os.path.join(logdir, "hidden")
    if what == "link":
        # `hidden` links to a run inside a directory the user may not search.
        private = os.path.join(shared_dir, "private")
        logdirs.write_records(os.path.join(private, "run"), _never_updated_records())
        os.symlink(os.path.join(private, "run"), hidden)
        os.chmod(private, 0)
    else:
        logdirs.write_records(hidden, _never_updated_records())
        os.chmod(hidden if what == "directory" else _event_file(hidden), 0)
    warm = os.path.join(shared_dir, "warm")
    _good(os.path.join(warm, "good"))
    if os.geteuid() == 0:
        code, out = _check_as(NOBODY, logdir, warm)
    else:
        report = cli.check(logdir)
        code, out = cli.exit_code(report), cli.format_report(report)
    assert code == cli.EXIT_PARTLY_UNREADABLE, out
    (line,) = [line for line in out.splitlines() if line.startswith("UNREADABLE")]
    assert line.startswith("UNREADABLE  hidden  -: ") and "Permission denied" in line
    assert "ok   updating" in out  # the readable run keeps its verdicts


def test_a_byte_flipped_inside_a_record_fails_the_gate(tmp_path):
    run_dir = _many_steps_run(tmp_path / "run")
    path = _event_file(run_dir)
    records = _records(path)
    offset, length = records[len(records) // 2]
    with open(path, "r+b") as handle:
        handle.seek(offset + 12 + length // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0x20]))
    result = _run_cli(["check", str(tmp_path)])
    assert result.returncode == cli.EXIT_UNREADABLE, result.stdout + result.stderr
    assert "is damaged: the record at byte %d fails its checksum" % offset in result.stdout
    assert "as of step" not in result.stdout  # no verdict from the records before the damage


def test_a_length_field_of_2_62_is_named_without_allocating_it(tmp_path):
    run_dir = _many_steps_run(tmp_path / "run")
    _good(tmp_path / "good")
    path = _event_file(run_dir)
    offset, _ = _records(path)[3]
    header = struct.pack("<Q", 2**62)
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(header + struct.pack("<I", crc32c.masked_crc32c(header)))
    result = _run_cli(["check", str(tmp_path)])
    assert result.returncode == cli.EXIT_PARTLY_UNREADABLE, result.stdout + result.stderr
    assert "says it holds %d bytes" % 2**62 in result.stdout
    assert "MemoryError" not in result.stderr


def test_a_cut_tail_of_the_newest_file_is_a_record_still_being_written(tmp_path):
    run_dir = _many_steps_run(tmp_path / "run")
    path = _event_file(run_dir)
    with open(path, "ab") as handle:
        handle.write(struct.pack("<Q", 100)[:5])  # half a length field
    assert eventfiles.check_event_file(path, newest=True) is None
    assert "cut short" in eventfiles.check_event_file(path, newest=False)
    result = _run_cli(["check", str(tmp_path)])
    assert result.returncode == cli.EXIT_HEALTHY, result.stdout + result.stderr


def test_a_fifo_named_like_an_event_file_is_named_not_waited_on(tmp_path):
    _good(tmp_path / "good")
    run_dir = tmp_path / "piped"
    run_dir.mkdir()
    os.mkfifo(str(run_dir / "events.out.tfevents.1.host"))
    result = _run_cli(["check", str(tmp_path)])
    assert result.returncode == cli.EXIT_PARTLY_UNREADABLE, result.stdout + result.stderr
    assert "not a regular file" in result.stdout


def test_the_newest_updates_record_unreadable_fails_the_gate(tmp_path, capsys):
    logdirs.write_records(str(tmp_path / "run"), logdirs.malformed_records())
    assert cli.main(["check", str(tmp_path)]) == cli.EXIT_PARTLY_UNREADABLE
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if line.startswith("UNREADABLE")]
    assert "the newest updates record (step 4) is unreadable" in line
    assert "ok   updating" in out  # the verdicts of the newest readable record are still shown


def test_a_closed_pipe_ends_quietly(tmp_path):
    names = ["layer%03d/kernel" % index for index in range(400)]
    logdirs.write_records(str(tmp_path / "run"), _never_updated_records(names))
    process = subprocess.Popen([sys.executable, "-m", "tb_varupdate.cli", "check", str(tmp_path), "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        head = process.stdout.read(100)
        process.stdout.close()
        _, err = process.communicate(timeout=TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert head.startswith(b"{")
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err
    assert process.returncode == cli.EXIT_PROBLEMS


def test_help_states_the_gate_rule():
    result = _run_cli(["check", "--help"])
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "could not be read in full" in text and "Symlinked directories are followed" in text


def test_a_dangling_link_named_like_an_event_file_fails_the_gate(tmp_path):
    _good(tmp_path / "good")
    os.symlink(str(tmp_path / "gone"), str(tmp_path / "good" / "events.out.tfevents.2.host"))
    result = _run_cli(["check", str(tmp_path)])
    assert result.returncode == cli.EXIT_UNREADABLE, result.stdout + result.stderr
    assert "cannot be opened (No such file or directory)" in result.stdout


def test_an_older_malformed_updates_record_fails_the_gate(tmp_path, capsys):
    records, digest = logdirs._three_step_records()
    # Step 1's record is float32 (a record no writer of this format writes);
    # steps 0 and 2 are fine, and the newest alone would give the verdict.
    records = [item if item[2] != 1 or item[1] != md.KIND_UPDATES else
               (item[0], item[1], 1, item[3].astype("float32")) for item in records]
    logdirs.write_records(str(tmp_path / "run"), records)
    assert cli.main(["check", str(tmp_path)]) == cli.EXIT_PARTLY_UNREADABLE
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if line.startswith("UNREADABLE")]
    assert "skipped 1 of 3 updates records (steps 1)" in line
    assert "ok   updating" in out
