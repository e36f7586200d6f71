"""Where one `ParameterUpdateTracker.log()` spends the Python thread's time on a CUDA GPU.

`python benchmarks/gpu_log_profile.py [--profile]`, where CUDA is present:
per model of `gpu_training.TASKS`, the host time of `log()` with the GPU
idle (a `torch.cuda.synchronize()` before each; median of 32 records, after
40 to warm up), and with `--profile` the operations and kernels dispatched
inside `log()` (torch.profiler). A diagnosis aid beside the
`gpu_training` section, whose ratios are the targets.
"""

import collections
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_training  # noqa: E402

import tb_varupdate.torch as tbt  # noqa: E402


def _inside_log(task, tracker, first_step, records):
    """Counts of the profiler events that ran inside `log()`, over `records` records."""
    from torch.profiler import ProfilerActivity, profile, record_function  # pylint: disable=import-outside-toplevel

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
        for step in range(first_step, first_step + records):
            task.step()
            with record_function("LOG"):
                tracker.log(step)
        torch.cuda.synchronize()
    events = profiler.events()
    spans = [event.time_range for event in events if event.name == "LOG"]
    inside = collections.Counter(
        event.name for event in events
        if event.name != "LOG" and any(s.start <= event.time_range.start and event.time_range.end <= s.end
                                       for s in spans))
    return inside


def main(argv):
    if not torch.cuda.is_available():
        print("No CUDA device: nothing measured.")
        return 0
    for key, build in gpu_training.TASKS.items():
        task = build("cuda", False)
        if task is None:
            continue
        with tempfile.TemporaryDirectory() as log_dir:
            tracker = tbt.ParameterUpdateTracker(task.model, log_dir=log_dir, on_stuck="ignore")
            for step in range(40):
                task.step()
                tracker.log(step)
            host = []
            for step in range(40, 72):
                task.step()
                torch.cuda.synchronize()
                started = time.perf_counter()
                tracker.log(step)
                host.append(time.perf_counter() - started)
            print("%s: log() host time with the GPU idle, median %.2f ms, max %.2f ms" % (
                key, statistics.median(host) * 1e3, max(host) * 1e3), flush=True)
            if "--profile" in argv:
                for name, count in _inside_log(task, tracker, 72, 32).most_common(40):
                    print("  %8.1f per record  %s" % (count / 32, name[:100]))
            tracker.close()
        del task, tracker
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
