"""A real full disk for the writers' tests (tests only).

`run_on_full_disk` runs a training function with its log directory on a
disk that fills up after a few records: a 1 MiB tmpfs filled to one page
(needs root, as CI runs), else, in a subprocess, the same function under
RLIMIT_FSIZE, where an event file cannot grow past one page (EFBIG instead
of ENOSPC: the same failed write, from the same place).
"""

import json
import os
import shutil
import subprocess
import sys

# Bytes left for the event file: a few records fit, the rest do not.
FREE = 4096

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TESTS = os.path.join(_ROOT, "tests")

# The rlimit is set after the imports, so only the training's own writes meet it.
_CHILD = """
import importlib, json, resource, signal, sys
sys.path[:0] = [%(root)r, %(tests)r]
module = importlib.import_module(%(module)r)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (%(limit)d, %(limit)d))
messages = getattr(module, %(function)r)(%(log_dir)r)
sys.stdout.write("MESSAGES=" + json.dumps(messages) + "\\n")
"""


def _fill(path, free):
    """Fills the file system of `path` with one file, then gives `free` bytes back."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    os.truncate(path, max(0, os.path.getsize(path) - free))


def _mount(mount):
    """Mounts a 1 MiB tmpfs at `mount`; False if this machine does not let us."""
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                              capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def run_on_full_disk(tmp_path, module, function, rlimit=False):
    """Runs `module.function(log_dir)` with `log_dir` on a disk that fills up.

    Args:
      tmp_path: pytest's tmp_path.
      module: the test module's name (importable from tests/).
      function: a function of it: trains, writing to `log_dir`; returns the
        warning messages it saw, as strings.
      rlimit: use RLIMIT_FSIZE even where a tmpfs can be mounted.

    Returns:
      (the messages, a copy of the run directory as written, readable after
      the disk is gone, "tmpfs" or "rlimit").
    """
    mount = tmp_path / "disk"
    mount.mkdir()
    copy = tmp_path / "written"
    if not rlimit and _mount(mount):
        try:
            _fill(str(mount / "filler"), FREE)
            messages = getattr(sys.modules[module], function)(str(mount / "run"))
            shutil.copytree(mount / "run", copy)
        finally:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)
        return messages, copy, "tmpfs"
    log_dir = str(mount / "run")
    code = _CHILD % {"root": _ROOT, "tests": _TESTS, "module": module, "function": function,
                     "log_dir": log_dir, "limit": FREE}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("MESSAGES=")]
    assert done.returncode == 0 and lines, done.stdout[-2000:] + done.stderr[-4000:]
    shutil.copytree(log_dir, copy)
    return json.loads(lines[-1][len("MESSAGES="):]), copy, "rlimit"
