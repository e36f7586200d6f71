"""`demo.localnet.spawn_bounded`, which every multi-process run of the demo, tests and benchmarks goes through.

Real torch.multiprocessing workers, no process group: what is checked is how
a worker ends, which is where torch 2.13's gloo abort happens.
"""

import atexit
import os
import time

import pytest
import torch.multiprocessing as mp

from demo import localnet

NPROCS = 2
DEADLINE_S = 120


def _writes_then_returns(rank, port, out):
    # Printed without a flush: stdout is a pipe here, so the line waits in the buffer.
    print("rank %d of port %d" % (rank, port))
    atexit.register(lambda: open(os.path.join(out, "finalized%d" % rank), "w", encoding="utf-8").close())
    open(os.path.join(out, "done%d" % rank), "w", encoding="utf-8").close()


def _raises(rank, port):
    raise ValueError("rank %d failed on port %d" % (rank, port))


def _sleeps(rank, port, out):
    open(os.path.join(out, "pid%d" % rank), "w", encoding="utf-8").write(str(os.getpid()))
    time.sleep(600)


def test_a_worker_that_returns_ends_without_finalization_and_keeps_its_output(tmp_path, capfd, monkeypatch):
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)  # the workers' stdout buffered, as by default
    localnet.spawn_bounded(_writes_then_returns, (str(tmp_path),), NPROCS, DEADLINE_S)
    printed = capfd.readouterr().out
    for rank in range(NPROCS):
        assert (tmp_path / ("done%d" % rank)).exists()
        assert "rank %d of port" % rank in printed, printed
        # The interpreter's finalization, where the gloo abort strikes, never ran.
        assert not (tmp_path / ("finalized%d" % rank)).exists()


def test_a_worker_that_raises_is_reraised_after_one_retry():
    retries = []
    with pytest.raises(mp.ProcessRaisedException, match="ValueError: rank . failed on port"):
        localnet.spawn_bounded(_raises, (), NPROCS, DEADLINE_S, on_retry=lambda: retries.append(1))
    assert retries == [1]


def test_workers_past_the_deadline_are_killed(tmp_path):
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="did not finish in 20 s"):
        localnet.spawn_bounded(_sleeps, (str(tmp_path),), NPROCS, 20)
    assert time.monotonic() - started < 60
    for rank in range(NPROCS):
        pid = int((tmp_path / ("pid%d" % rank)).read_text(encoding="utf-8"))
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # the worker, killed and reaped by torch.multiprocessing
