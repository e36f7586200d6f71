"""A command run as a test's child with a deadline, killed with everything it started when it runs over (tests only)."""

import os
import signal
import subprocess


def run(args, timeout, **kwargs):
    """`subprocess.run(args, timeout=...)` in a process group of its own.

    On the deadline the whole group is killed (the workers a script spawned
    too, which a plain `subprocess.run` would leave running), then
    `subprocess.TimeoutExpired` is raised.
    """
    with subprocess.Popen(args, start_new_session=True, **kwargs) as process:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
    return subprocess.CompletedProcess(args, process.returncode, out, err)
