"""Loopback ports and bounded worker processes, shared by the demo's and the tests' distributed runs.

Every worker binds 127.0.0.1 only, and every run has a deadline, so a
rendezvous that hangs ends as an error instead of a hung demo or CI job.
"""

import os
import socket
import sys
import time

# How long a killed worker is waited for; SIGKILL ends it at once.
KILLED_JOIN_S = 10


def free_ports(count=1):
    """`count` distinct TCP ports on 127.0.0.1 that nothing listens on right now.

    The sockets are held open together so that the ports differ. Another
    process can still take a port before the caller binds it, which is why
    `spawn_bounded` retries once on fresh ports.
    """
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port():
    """One TCP port on 127.0.0.1 that nothing listens on right now."""
    return free_ports(1)[0]


def spawn_bounded(worker, args, nprocs, deadline_s, on_retry=None):
    """Runs `worker(rank, port, *args)` in `nprocs` torch processes, each given one free port.

    A worker that returns ends its process at once (`_run_then_exit`): it
    closes its own writers and saves its own results before it returns.

    Workers still alive at the deadline are killed and TimeoutError raised;
    a worker's exception is re-raised here (torch.multiprocessing's
    ProcessRaisedException). A failed run gets one more try on a fresh port:
    a start-up abort was seen once on a loaded 2-core machine, and another
    process can take the port between `free_port` and the rendezvous.
    `on_retry()`, when given, runs before that try: it removes what the
    failed one wrote, which the second would otherwise add to.
    """
    import torch.multiprocessing as mp  # pylint: disable=import-outside-toplevel  (free_ports needs no torch)

    try:
        _spawn_once(mp, worker, args, nprocs, deadline_s)
    except (mp.ProcessExitedException, mp.ProcessRaisedException):
        if on_retry is not None:
            on_retry()
        _spawn_once(mp, worker, args, nprocs, deadline_s)


def _spawn_once(mp, worker, args, nprocs, deadline_s):
    context = mp.spawn(_run_then_exit, args=(worker, free_port()) + tuple(args), nprocs=nprocs, join=False)
    deadline = time.monotonic() + deadline_s
    try:
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                raise TimeoutError("the %d worker processes did not finish in %d s" % (nprocs, deadline_s))
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
        for process in context.processes:
            process.join(KILLED_JOIN_S)  # reaped, not left as zombies


def _run_then_exit(rank, worker, port, *args):
    """Runs `worker(rank, port, *args)`, then ends the process without the interpreter's finalization.

    torch 2.13 over gloo can abort a rank after its work is done: a
    collective launched from backward() holds a Python object (the context
    that autograd stashes in its thread-local state), and the gloo thread that
    frees the finished collective needs the GIL for it. When that happens
    while the interpreter finalizes, the thread is ended inside a C++
    destructor: "terminate called without an active exception", SIGABRT,
    in 5 of 30 runs of a plain DDP loop here, with no tracker. The worker has
    closed its writers and saved its results by the time it returns, so
    nothing is left for finalization to do. A worker that raises leaves
    through torch.multiprocessing as before, which records the error first.
    """
    worker(rank, port, *args)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
