"""The demo's scenario record and its registry, shared by the TensorFlow and PyTorch scenarios.

No framework import: `demo.scenarios` (TensorFlow/Keras) and
`demo.torch_scenarios` (PyTorch) each keep a `SCENARIOS` list filled by a
`registry`, and `demo.run_all` runs both.
"""

import contextlib
import dataclasses
import os
import sys
from typing import Callable, Dict, FrozenSet, Tuple

# Statuses that fail `tb-varupdate check` for a trainable variable.
FAILING = ("never_updated", "stalled", "non_finite")


@dataclasses.dataclass(frozen=True)
class Scenario:
    """A demo run and the verdicts it must produce.

    Attributes:
      name: the directory the scenario writes under the logdir.
      write: `write(logdir)` trains the model and writes the run.
      description: one line for the demo's progress and README.
      expected: {variable: (status, gradient verdict)} for every variable.
      not_trainable: the variables of `expected` that are not trainable.
      keras_fit: True when written by `VariableUpdateCallback`, whose run is
        `<name>/train`.
    """

    name: str
    write: Callable[[str], None]
    description: str
    expected: Dict[str, Tuple[str, str]]
    not_trainable: FrozenSet[str] = frozenset()
    keras_fit: bool = False

    @property
    def run(self):
        """The run name TensorBoard and `tb-varupdate check` show."""
        return self.name + "/train" if self.keras_fit else self.name

    @property
    def healthy(self):
        """True when no trainable variable should fail `tb-varupdate check`."""
        return not any(
            status in FAILING for var, (status, _) in self.expected.items() if var not in self.not_trainable
        )


def registry(scenarios, seed):
    """A decorator `scenario(name, description, expected, not_trainable=(), keras_fit=False)`.

    It registers `train(run_dir)` in `scenarios` as the scenario `name`, whose
    `write(logdir)` calls `seed()` and then trains into `<logdir>/<name>`.
    """

    def scenario(name, description, expected, not_trainable=(), keras_fit=False):
        def register(train):
            def write(logdir: str) -> None:
                seed()
                train(os.path.join(logdir, name))

            # Named like the training function, but not functools.wraps: its
            # __wrapped__ would make inspect show `train`'s (run_dir) signature.
            write.__name__, write.__qualname__ = train.__name__, train.__qualname__
            write.__doc__ = "Writes the run `<logdir>/%s`: %s." % (name, description)
            scenarios.append(Scenario(name, write, description, dict(expected), frozenset(not_trainable), keras_fit))
            return write

        return register

    return scenario


@contextlib.contextmanager
def quiet_stderr():
    """Silences file descriptor 2, where TensorFlow's C++ runtime logs on import.

    TF_CPP_MIN_LOG_LEVEL does not cover absl's "log messages before
    absl::InitializeLog()" line, which is written straight to the descriptor.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
