"""One record's fold on the device: `counters.fold` eagerly, or replayed as a CUDA graph.

`counters.fold` is ~120 small operations on [rows] vectors, whatever the
number of tensors. On a GPU each is a kernel launch that costs the Python
thread more than the kernel costs the device (~10 us), so on CUDA the fold is
captured once into a CUDA graph and replayed: one launch, after copying this
record's measurements, step and flags into the graph's own input buffers.
The graph is captured again when the state it folds is replaced (rows
joined, the state moved) or the header constants change. If capture fails,
the eager fold runs instead: the same operations, the same records.
"""

import warnings

import torch

from tb_varupdate.writers import counters
from tb_varupdate.writers.torch.measure import CHANGED, DELTA_L2, FINITE, GRAD_L2, ROWS_CHANGED, VALUE_L2
from tb_varupdate.writers.torch.ops import TorchOps

_OPS = TorchOps()


def fold_eagerly(state, measured, step, trainable, sized, constants):
    """`counters.fold` of `measured` ([NUM_MEASURED, rows] float64) into `state` (counters, floats, header).

    Returns (counters, floats, header, record), as `counters.fold`.
    """
    measured = counters.Measured(
        delta_l2=measured[DELTA_L2], value_l2=measured[VALUE_L2], grad_l2=measured[GRAD_L2],
        changed=measured[CHANGED] != 0, finite=measured[FINITE] != 0,
        rows_changed=measured[ROWS_CHANGED].to(torch.int64),
    )
    return counters.fold(_OPS, *state, measured, step, trainable, sized, *constants)


class _Graph:
    """The fold of one state, captured: its inputs and outputs live in buffers of its own."""

    def __init__(self, state, measured, step, trainable, sized, constants):
        with torch.cuda.device(measured.device):  # capture runs on the current device: make it the state's
            self._capture(state, measured, step, trainable, sized, constants)

    def _capture(self, state, measured, step, trainable, sized, constants):
        self.constants = constants
        self.state = tuple(t.clone() for t in state)
        self.measured, self.step = measured.clone(), step.clone()
        self.trainable, self.sized = trainable.clone(), sized.clone()
        side = torch.cuda.Stream(device=measured.device)
        side.wait_stream(torch.cuda.current_stream(measured.device))
        with torch.cuda.stream(side):
            self._fold()  # a warm-up: kernels are not loaded for the first time under capture
        torch.cuda.current_stream(measured.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: the user's other threads (data loaders, communication) may use CUDA meanwhile.
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            folded = self._fold()
            for mine, new in zip(self.state, folded[:3]):
                mine.copy_(new)  # the new state becomes the next replay's input
        self.record = folded[3]

    def _fold(self):
        return fold_eagerly(self.state, self.measured, self.step, self.trainable, self.sized, self.constants)

    def folds(self, state, constants):
        """Whether this graph folds `state` (the tensors it returned last time) with `constants`."""
        return constants == self.constants and all(mine is theirs for mine, theirs in zip(self.state, state))

    def replay(self, measured, step, trainable, sized):
        self.measured.copy_(measured)
        self.step.fill_(step)  # a kernel argument: no copy from the host
        self.trainable.copy_(trainable)
        self.sized.copy_(sized)
        self.graph.replay()
        return self.state + (self.record,)


class Fold:
    """Folds records into a writer's state; on CUDA by replaying a captured graph."""

    def __init__(self):
        self._graph = None
        self._eager_only = False

    def __call__(self, state, measured, step, origin, trainable, sized, constants):
        """(counters, floats, header, record) after folding one record.

        Args:
          state: (counters, floats, header), as `counters.fold` takes them.
          measured: float64 [NUM_MEASURED, rows] on the state's device.
          step: the record's step, a Python int.
          origin: 0-d int64 zero on the device (the eager step is origin + step: no host copy).
          trainable, sized: bool [rows] on the device.
          constants: (names_hash, every_n, writer_id).
        """
        if measured.device.type == "cuda" and not self._eager_only:
            if self._graph is None or not self._graph.folds(state, constants):
                self._graph = self._capture(state, measured, origin + step, trainable, sized, constants)
            if self._graph is not None:
                return self._graph.replay(measured, step, trainable, sized)
        return fold_eagerly(state, measured, origin + step, trainable, sized, constants)

    def _capture(self, *fold_args):
        """A `_Graph` of `fold_args`, or None (and eager folds from now on) where capture fails."""
        try:
            return _Graph(*fold_args)
        except Exception as error:  # pylint: disable=broad-except
            self._eager_only = True
            warnings.warn("tb_varupdate: the record fold could not be captured as a CUDA graph (%s: %s); "
                          "records are folded eagerly instead: the same records, ~1 ms more per record "
                          "on the Python thread." % (type(error).__name__, error), RuntimeWarning,
                          stacklevel=3)
            return None
