"""What every writer does alike, whatever its framework: the writer contract's shared half.

A writer (TensorFlow's, PyTorch's, the NumPy `reference`) adds a tracker, a
measure and an `Ops` for its framework; the rest is here, once:
the tracker options and their messages, the writer id, warn-once, the rule
that `log()` never raises (`never_raise`), the variables record's
bookkeeping (`VariablesRecord`). The training-time check on a record's plain
data is `verdicts.stuck.StuckCheck`. No framework import.
"""

import contextlib
import random
import warnings

from tb_varupdate.errors import StuckVariableError
from tb_varupdate.format import variables as vr

# How a tracker measures a change: "exact" keeps a snapshot of each tensor,
# "checksum" keeps none and sees a change in the bits' sum or the norm.
EXACT, CHECKSUM = "exact", "checksum"
DELTA_CHOICES = (EXACT, CHECKSUM)


def check_name(name):
    """The tracker name, used in the tag `varupdate/<name>`.

    Raises:
      ValueError: `name` is not a non-empty string without '/'.
    """
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(
            "name must be a non-empty string without '/', used in the tag "
            "'varupdate/<name>'. Received: name=%r" % (name,)
        )
    return name


def check_positive_int(option, value):
    """`value` of the option named `option`, an int >= 1 (bools are not counts).

    Raises:
      ValueError: it is not.
    """
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError("%s must be an int >= 1. Received: %s=%r" % (option, option, value))
    return value


def check_every_n_steps(every_n_steps):
    """`every_n_steps`, an int >= 1."""
    return check_positive_int("every_n_steps", every_n_steps)


def check_delta(delta):
    """`delta`, one of DELTA_CHOICES.

    Raises:
      ValueError: it is not.
    """
    if delta not in DELTA_CHOICES:
        raise ValueError("delta must be one of %s. Received: delta=%r" % (DELTA_CHOICES, delta))
    return delta


def new_writer_id():
    """A random HEADER_WRITER_ID for a new tracker: two ids in one tag mean two writers started over in it."""
    return random.SystemRandom().randrange(1, 2**31)


class Warnings:
    """Warns once per key: advice is worth one line, not one per step.

    Attributes:
      seen: the keys warned about so far.
    """

    def __init__(self):
        self.seen = set()

    def once(self, key, message, stacklevel=5):
        """Warns with `message` unless `key` was warned about; True when it warned."""
        if key in self.seen:
            return False
        self.seen.add(key)
        warnings.warn(message, stacklevel=stacklevel)
        return True


@contextlib.contextmanager
def never_raise(warn, handled=lambda err: False, stacklevel=5):
    """Logging must never take training down: an error inside the block is one warning per kind.

    `StuckVariableError` (`on_stuck="raise"`) is the one error that leaves
    the block.

    Args:
      warn: the tracker's `Warnings`.
      handled: called with the error first; True when it said what went wrong
        itself (a failed write, which says what was lost).
      stacklevel: the warning's, counted from `Warnings.once` (the block's
        frame is 4: once, this generator, contextlib's `__exit__`, the block).
    """
    try:
        yield
    except StuckVariableError:
        raise
    except Exception as err:  # pylint: disable=broad-except
        if not handled(err):
            warn.once(
                "error:%s" % type(err).__name__,
                "tb_varupdate: logging failed and was skipped; training goes on. %s: %s" % (type(err).__name__, err),
                stacklevel=stacklevel,
            )


class VariablesRecord:
    """The variables record a writer writes: its entries, their JSON and whether that was written.

    A writer re-encodes it when rows join or an entry changes (`update`) and
    writes `document` before the next updates record while `due`.

    Args:
      writer_id: the tracker's HEADER_WRITER_ID, in the record.
    """

    def __init__(self, writer_id):
        self.writer_id = writer_id
        self.entries = []
        self.document, self.names_hash = vr.encode_variables([], writer_id=writer_id)
        self.written = None  # the names_hash of the document last written

    def update(self, entries):
        """Encodes `entries` (dicts, in row order) anew; the entries kept are copies."""
        self.entries = [dict(entry) for entry in entries]
        self.document, self.names_hash = vr.encode_variables(self.entries, writer_id=self.writer_id)
        self.written = None

    @property
    def due(self):
        """Whether `document` must be written before the next updates record."""
        return self.written != self.names_hash

    def mark_written(self):
        self.written = self.names_hash

