"""PyTorch training overhead on a CUDA GPU: step time with each way of logging, as a ratio to none.

Runs where CUDA is present (`python benchmarks/gpu_training.py`); elsewhere
the section says it was not measured. Per model, in one process, the
variants' rounds are interleaved and each round is bracketed by
`torch.cuda.synchronize()`; the median per-round step time is reported:

* tracker every step / every 10 steps (`ParameterUpdateTracker.log`, its
  default `read_every`), and every step reading records back every 8 records
  or every record (the choices behind the default); the host time spent
  inside `log()` is reported beside;
* floor, no host read: snapshot, difference, norms and copy by foreach
  kernels, the norms left on the device;
* floor + one `.cpu()` per step: the same, read back every step.

Models: GPT-2 124M (random weights from `transformers`' config; skipped
without it), ResNet-50 (`torchvision`, skipped without it) and 150
`Linear(32, 32)` layers (300 small tensors). Nothing is downloaded.
"""

import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import tb_varupdate.torch as tbt  # noqa: E402
from tb_varupdate.writers.torch.pending import READ_EVERY_ACCELERATOR  # noqa: E402

# The tracker variants: (every_n_steps, read_every or None for the default).
TRACKERS = {"tracker every step": (1, None), "tracker every 10 steps": (10, None),
            "tracker every step, read_every=8": (1, 8), "tracker every step, read_every=1": (1, 1)}
VARIANTS = ("no logging",) + tuple(TRACKERS) + ("floor, no host read", "floor + .cpu()")
# The targets: (model key, variant) -> the largest ratio to no logging.
TARGETS = {
    ("GPT-2", "tracker every step"): 1.03, ("ResNet-50", "tracker every step"): 1.03,
    ("300 tensors", "tracker every step"): 1.15, ("GPT-2", "tracker every 10 steps"): 1.01,
    ("ResNet-50", "tracker every 10 steps"): 1.01, ("300 tensors", "tracker every 10 steps"): 1.01,
}


class _Task:
    """A model, its optimizer and one fixed batch; `step()` is one training step."""

    def __init__(self, key, description, model, batch, loss, optimizer, amp):
        self.key, self.description, self.model = key, description, model
        self.batch, self.loss, self.optimizer, self.amp = batch, loss, optimizer, amp

    def step(self):
        self.optimizer.zero_grad(set_to_none=True)
        device = self.batch[0].device.type
        with torch.autocast(device, dtype=torch.bfloat16, enabled=self.amp):
            loss = self.loss(self.model, self.batch)
        loss.backward()
        self.optimizer.step()


def _cross_entropy(model, batch):
    return torch.nn.functional.cross_entropy(model(batch[0]), batch[1])


def _gpt2(device, quick):
    try:
        from transformers import GPT2Config, GPT2LMHeadModel  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    config = (GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=1000, n_positions=128) if quick
              else GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024))
    model = GPT2LMHeadModel(config).to(device)
    batch, tokens = (2, 64) if quick else (8, 1024)
    ids = torch.randint(0, config.vocab_size, (batch, tokens), device=device)
    return _Task("GPT-2", "GPT-2 124M, %d x %d tokens, bf16 autocast, fused AdamW" % (batch, tokens), model, (ids,),
                 lambda m, b: m(input_ids=b[0], labels=b[0]).loss,
                 torch.optim.AdamW(model.parameters(), lr=3e-4, fused=device == "cuda"), True)


def _resnet50(device, quick):
    try:
        import torchvision  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    model = torchvision.models.resnet50(weights=None).to(device).to(memory_format=torch.channels_last)
    batch, side = (4, 64) if quick else (128, 224)
    images = torch.randn(batch, 3, side, side, device=device).to(memory_format=torch.channels_last)
    return _Task("ResNet-50", "ResNet-50, batch %d at %d, bf16 autocast, SGD, BN buffers" % (batch, side), model,
                 (images, torch.randint(0, 1000, (batch,), device=device)), _cross_entropy,
                 torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4), True)


def _many_small(device, quick):  # pylint: disable=unused-argument
    layers = []
    for _ in range(149):
        layers += [torch.nn.Linear(32, 32), torch.nn.Tanh()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(32, 10)).to(device)
    return _Task("300 tensors", "150 x Linear(32, 32) (300 small tensors), batch 256, Adam", model,
                 (torch.randn(256, 32, device=device), torch.randint(0, 10, (256,), device=device)), _cross_entropy,
                 torch.optim.Adam(model.parameters(), lr=1e-4), False)


# Built one at a time, so only one model is on the device at once.
TASKS = {"GPT-2": _gpt2, "ResNet-50": _resnet50, "300 tensors": _many_small}


class _Floor:
    """Snapshot and difference by foreach kernels; the norms read back every step or never."""

    def __init__(self, params):
        self.params = [p.detach() for p in params if p.is_floating_point()]
        self.snapshots = [p.clone() for p in self.params]
        self.last = None

    def __call__(self, read):
        with torch.no_grad():
            torch._foreach_sub_(self.snapshots, self.params)  # pylint: disable=protected-access
            norms = torch.stack(torch._foreach_norm(self.snapshots))  # pylint: disable=protected-access
            torch._foreach_copy_(self.snapshots, self.params)  # pylint: disable=protected-access
            self.last = norms.cpu() if read else norms


def step_times(task, rounds, steps):
    """({variant: median seconds per step}, {tracker variant: mean host seconds per log() call}).

    Rounds are interleaved, each bracketed by a synchronize.
    """
    synchronize = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    with tempfile.TemporaryDirectory() as logdir:
        from torch.utils.tensorboard import SummaryWriter  # pylint: disable=import-outside-toplevel

        writer = SummaryWriter(logdir)
        trackers = {}
        for variant, (every_n, read_every) in TRACKERS.items():
            options = {} if read_every is None else {"read_every": read_every}
            trackers[variant] = tbt.ParameterUpdateTracker(task.model, writer=writer, name="t%d" % len(trackers),
                                                           every_n_steps=every_n, on_stuck="ignore", **options)
        floor = _Floor(task.model.parameters())
        count = [0]
        # Host time inside log(), the device not waited for: what a record costs the Python thread.
        log_seconds = {variant: [] for variant in trackers}

        def run(variant, n):
            for _ in range(n):
                task.step()
                if variant in trackers:
                    started = time.perf_counter()
                    trackers[variant].log(count[0])
                    log_seconds[variant].append(time.perf_counter() - started)
                elif variant.startswith("floor"):
                    floor(read=variant.endswith(".cpu()"))
                count[0] += 1

        for variant in VARIANTS:
            run(variant, 2)
        times = {variant: [] for variant in VARIANTS}
        for round_index in range(rounds):
            shift = round_index % len(VARIANTS)
            for variant in VARIANTS[shift:] + VARIANTS[:shift]:
                synchronize()
                start = time.perf_counter()
                run(variant, steps)
                synchronize()
                times[variant].append((time.perf_counter() - start) / steps)
        for tracker in trackers.values():
            tracker.close()
        writer.close()
    return ({variant: statistics.median(values) for variant, values in times.items()},
            {variant: sum(values) / len(values) for variant, values in log_seconds.items()})


def measure(device, quick, keys=None):
    """{task key: (description, {variant: seconds})} for every model present (or those of `keys`)."""
    rounds, steps = (2, 2) if quick else (7, 10)
    measured = {}
    for key, build in TASKS.items():
        task = build(device, quick) if keys is None or key in keys else None
        if task is None:
            continue  # not asked for, or its library is not installed
        common.progress("gpu training: %s" % task.key)
        measured[task.key] = (task.description, step_times(task, rounds, steps))
        del task
        if device == "cuda":
            torch.cuda.empty_cache()
    return measured


def section(measured, device_name):
    """The section of `measure`'s results on `device_name`."""
    parts, targets = [], []
    for key, (description, (times, log_seconds)) in measured.items():
        base = times["no logging"]
        rows = [(name, common.ms(t), "%.3fx" % (t / base),
                 "%.2f ms" % (log_seconds[name] * 1e3) if name in log_seconds else "")
                for name, t in times.items()]
        parts.append("**%s**\n\n%s" % (description, common.table(
            ("variant", "step", "ratio", "host time in log(), per call"), rows)))
        for (model, variant), goal in TARGETS.items():
            if model == key:
                ratio = times[variant] / base
                targets.append(common.Target("%s / no logging (%s, %s)" % (variant, key, device_name),
                                             "%.3fx" % ratio, "<= %.2fx" % goal, ratio <= goal))
    header = ("Measured on %s, torch %s, CUDA %s; medians of interleaved rounds, each bracketed by "
              "`torch.cuda.synchronize()`. The tracker's default `read_every` on CUDA is %d." % (
                  device_name, torch.__version__, torch.version.cuda, READ_EVERY_ACCELERATOR))
    return common.Section("Training overhead, PyTorch on a GPU", "\n\n".join([header] + parts), targets)


def run(quick):
    if not torch.cuda.is_available():
        goals = ", ".join("%s %s <= %.2fx" % (model, variant, goal) for (model, variant), goal in TARGETS.items())
        return common.Section("Training overhead, PyTorch on a GPU", (
            "**Not measured**: no CUDA device in this run (torch %s). The targets (%s) are measured only on "
            "a GPU, with `python benchmarks/gpu_training.py` there; CI asserts their CPU proxies instead "
            "(tests/test_torch_measure.py, tests/test_torch_pending.py)." % (torch.__version__, goals)),
            measured=False)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return section(measure("cuda", quick), torch.cuda.get_device_name(0))


if __name__ == "__main__":
    sys.exit(common.main_for(run))
