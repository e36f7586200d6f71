"""PyTorch training overhead: step time with each way of logging, as a ratio to none.

Every variant trains the same model with the same optimizer in one process,
their timed blocks interleaved round by round so drift in machine load hits
them alike; the median over rounds is reported. A "step" is zero_grad,
forward, backward and `optimizer.step()`, then the variant's logging:

* tracker every step / every 10 steps: `ParameterUpdateTracker.log(step)`
  (what `attach(optimizer)` calls from the step hook);
* histograms every step: `SummaryWriter.add_histogram` of every parameter and
  of its gradient, what users do today;
* bare floor: the least work that can tell a change and its size, one
  snapshot per parameter, `snapshot -= value`, its norms, copy back, one
  `.cpu()` per step;
* exact floor: the kernels an exact record needs on the CPU, as the
  tracker runs them there (the value norms; the difference's and the
  gradient's norms, each as is and scaled by 2**100 so that no square
  underflows; the copy back), with no fold, no record and no host read:
  what the tracker costs at the least without giving up exactness.
"""

import os
import sys
import tempfile
import time

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import tb_varupdate.torch as tbt  # noqa: E402

BATCH = 256
THREADS = 1
VARIANTS = ("no logging", "tracker every step", "tracker every 10 steps", "histograms every step", "bare floor",
            "exact floor")


def mlp(width=1024):
    """~2.6M parameters: 1024 -> 1024 -> 1024 -> 512 -> 10, as benchmarks/training.py's Keras MLP."""
    return torch.nn.Sequential(
        torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, width), torch.nn.ReLU(),
        torch.nn.Linear(width, width // 2), torch.nn.ReLU(), torch.nn.Linear(width // 2, 10),
    )


def many_small(layers=150, width=32):
    """150 small Linear layers: 300 parameter tensors, ~160k parameters."""
    modules = []
    for _ in range(layers - 1):
        modules += [torch.nn.Linear(width, width), torch.nn.Tanh()]
    return torch.nn.Sequential(*modules, torch.nn.Linear(width, 10))


class _Floor:
    """Snapshot and diff, the cheapest way found: multi-tensor kernels in place, one read per step."""

    def __init__(self, params):
        self.params = [p.detach() for p in params]
        self.snapshots = [p.clone() for p in self.params]

    def __call__(self):
        with torch.no_grad():
            torch._foreach_sub_(self.snapshots, self.params)  # pylint: disable=protected-access
            norms = torch._foreach_norm(self.snapshots)  # pylint: disable=protected-access
            torch._foreach_copy_(self.snapshots, self.params)  # pylint: disable=protected-access
            return torch.stack(norms).cpu()


class _ExactFloor(_Floor):
    """The multi-tensor kernels of an exact record, as `writers/torch/measure.py` runs them on the CPU."""

    def __init__(self, params):
        super().__init__(params)
        self.owners = list(params)  # their `.grad`s

    def __call__(self):
        # pylint: disable=protected-access
        with torch.no_grad():
            torch._foreach_norm(self.params)  # the values
            torch._foreach_sub_(self.snapshots, self.params)  # the difference ...
            self._both_looks()
            torch._foreach_copy_(self.snapshots, [p.grad for p in self.owners])  # ... then the gradient, in its place
            self._both_looks()
            torch._foreach_copy_(self.snapshots, self.params)

    def _both_looks(self):
        # pylint: disable=protected-access
        torch._foreach_norm(self.snapshots)
        torch._foreach_mul_(self.snapshots, 2.0 ** 100)  # measure._UP
        torch._foreach_norm(self.snapshots)


class Bench:
    """One model, its optimizer and data, and the logging of each variant."""

    def __init__(self, model, logdir):
        torch.manual_seed(0)
        self.model = model
        self.params = list(model.parameters())
        self.optimizer = torch.optim.Adam(self.params, lr=1e-4)
        width = self.params[0].shape[1]
        self.x = torch.randn(BATCH, width)
        self.y = torch.randint(0, 10, (BATCH,))
        from torch.utils.tensorboard import SummaryWriter  # pylint: disable=import-outside-toplevel

        self.writer = SummaryWriter(logdir)
        self.trackers = {
            "tracker every step": tbt.ParameterUpdateTracker(model, writer=self.writer, name="every_step", on_stuck="ignore"),
            "tracker every 10 steps": tbt.ParameterUpdateTracker(
                model, writer=self.writer, name="every_10", every_n_steps=10, on_stuck="ignore"),
        }
        self.floors = {"bare floor": _Floor(self.params), "exact floor": _ExactFloor(self.params)}
        self.names = [name for name, _ in model.named_parameters()]

    def step(self, variant, step):
        self.optimizer.zero_grad()
        torch.nn.functional.cross_entropy(self.model(self.x), self.y).backward()
        self.optimizer.step()
        if variant in self.trackers:
            self.trackers[variant].log(step)
        elif variant == "histograms every step":
            for name, param in zip(self.names, self.params):
                self.writer.add_histogram(name, param, step)
                self.writer.add_histogram(name + "/gradient", param.grad, step)
        elif variant in self.floors:
            self.floors[variant]()

    def close(self):
        for tracker in self.trackers.values():
            tracker.close()
        self.writer.close()


def step_times(model, rounds, steps_per_round):
    """Median seconds per step for each variant (interleaved rounds)."""
    times = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as logdir:
        bench = Bench(model, logdir)
        step = 0
        for name in VARIANTS:  # warm up every path
            for _ in range(2):
                bench.step(name, step)
                step += 1
        for round_index in range(rounds):
            # Rotated each round, so no variant always follows the slow histograms.
            for name in VARIANTS[round_index % len(VARIANTS):] + VARIANTS[:round_index % len(VARIANTS)]:
                start = time.perf_counter()
                for _ in range(steps_per_round):
                    bench.step(name, step)
                    step += 1
                times[name].append((time.perf_counter() - start) / steps_per_round)
        bench.close()
    return {name: float(np.median(values)) for name, values in times.items()}


def _rows(times):
    base = times["no logging"]
    return [
        (name, common.ms(seconds), "%.3fx" % (seconds / base), "%+.2f ms" % ((seconds - base) * 1e3))
        for name, seconds in times.items()
    ]


def _why_missed(times):
    base = times["no logging"]
    added, floor_added = times["tracker every step"] - base, times["bare floor"] - base
    exact_added = times["exact floor"] - base
    if floor_added >= added:
        return (
            "the bare floor measured +%.2f ms in the same rounds, more than the tracker's +%.2f ms: "
            "what is left is this shared machine's load, beyond what interleaving evens out" % (floor_added * 1e3, added * 1e3)
        )
    return (
        "exact floor: %.3fx (+%.2f ms) in the same rounds, the kernels an exact record needs without "
        "its fold, record or read (bare floor %.3fx, +%.2f ms); the tracker adds +%.2f ms beyond the "
        "exact floor" % (times["exact floor"] / base, exact_added * 1e3, times["bare floor"] / base,
                         floor_added * 1e3, (added - exact_added) * 1e3)
    )


def _targets(short, times, with_ratio):
    base = times["no logging"]
    added = times["tracker every step"] - base
    hist_added = times["histograms every step"] - base
    floor_added = times["bare floor"] - base
    targets = []
    if with_ratio:
        ratio = times["tracker every step"] / base
        targets.append(common.Target(
            "PyTorch tracker every step / no logging (%s)" % short, "%.3fx" % ratio, "<= 1.05x", ratio <= 1.05,
            "" if ratio <= 1.05 else _why_missed(times),
        ))
    factor = hist_added / added if added > 0 else float("inf")
    targets.append(common.Target(
        "PyTorch histograms added / tracker added (%s)" % short,
        "%.0fx" % factor if np.isfinite(factor) else "tracker added <= 0", ">= 20x", factor >= 20,
    ))
    return targets


def crc_times(record_bytes):
    """Seconds per masked CRC-32C of one record of `record_bytes`: TensorBoard's pure Python, and `crc32c`'s."""
    from tensorboard.compat.tensorflow_stub import pywrap_tensorflow  # pylint: disable=import-outside-toplevel

    from tb_varupdate.format import crc32c  # pylint: disable=import-outside-toplevel

    data = os.urandom(record_bytes)
    return {
        "TensorBoard's pure Python": common.median_seconds(lambda: pywrap_tensorflow.masked_crc32c(data), 5),
        "google-crc32c" if crc32c.NATIVE else "crc32c (not installed: pure Python)":
            common.median_seconds(lambda: crc32c.masked_crc32c(data), 50),
    }


def run(quick):
    # As in a PyTorch-only environment: torch's SummaryWriter would otherwise
    # import TensorFlow (through tensorboard.compat) when it is installed, as it
    # is in this repository's test environment. run.py gives each section its
    # own process, so this blocks nothing else.
    sys.modules.setdefault("tensorflow", None)
    # One intra-op thread: on this shared 2-core machine two OpenMP threads
    # made the MLP's step about 2x slower and far noisier (threads spinning
    # while the other core runs another process).
    torch.set_num_threads(THREADS)
    models = [
        ("MLP", "2.6M-parameter MLP, batch %d" % BATCH, mlp(256 if quick else 1024), True),
        ("300 tensors", "150 Linear(32, 32) layers (300 parameter tensors, ~160k parameters), batch %d" % BATCH,
         many_small(20 if quick else 150), False),
    ]
    rounds, steps = (2, 2) if quick else (25, 3)
    parts, targets = [], []
    for short, description, model, with_ratio in models:
        common.progress("torch training: %s" % short)
        times = step_times(model, rounds, steps)
        parts.append("**%s** (Adam; median of %d interleaved rounds of %d steps; torch %s, %d threads):\n\n%s" % (
            description, rounds, steps, torch.__version__, torch.get_num_threads(),
            common.table(("variant", "step", "ratio", "added"), _rows(times))))
        targets += _targets(short, times, with_ratio)
    record_bytes = 301 * 15 * 4  # a 300-tensor updates record: 15 int32 columns, a header row
    crc_rows = [(name, "%.3f ms" % (seconds * 1e3)) for name, seconds in crc_times(record_bytes).items()]
    parts.append("**The event record's CRC-32C** (two per record, over %d bytes, median of repeats; the "
                 "tracker's record writer uses the native one where `google-crc32c` is installed):\n\n%s" % (
                     record_bytes, common.table(("CRC-32C", "per record"), crc_rows)))
    body = "\n\n".join(parts + [
        "The tracker's per-record work, a fixed number of multi-tensor kernels per (device, dtype) "
        "group whatever the number of tensors: the value norms; `snapshot -= value` and the norm of "
        "that difference twice, as is and scaled by 2**100 (exact for changes whose float32 squares "
        "underflow); the gradients copied into the same scratch and measured the same way; the "
        "snapshot copied back; the counters folded on the tensors' device (`counters.fold` over "
        "torch ops); the record read back and written every `read_every` records (1 on the CPU, the "
        "default there). The bare floor does the difference, one norm and the copy only, and reads "
        "its norms every step; the exact floor runs the tracker's CPU kernels above, the fold, record "
        "and read excepted. TensorFlow is blocked in this process, as in a PyTorch-only "
        "environment (torch's SummaryWriter imports it when installed).",
    ])
    return common.Section("Training overhead, PyTorch", body, targets)


if __name__ == "__main__":
    sys.exit(common.main_for(run))
