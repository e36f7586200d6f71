"""The training-time check: after `stuck_after` records (then 2x, 4x, ... as many), report stuck variables once each.

Shared by every writer. The check runs the same verdicts as the tab and
`tb-varupdate check` (`analysis.verdicts`) on the tracker's newest record, and
owns its message: `on_stuck="warn"` warns with it, `"raise"` raises
`StuckVariableError` with it. No framework import.
"""

import re
import warnings

from tb_varupdate.errors import StuckVariableError
from tb_varupdate.format import metadata as md
from tb_varupdate.verdicts import analysis
from tb_varupdate.verdicts import vocabulary as vc

ON_STUCK_CHOICES = ("warn", "raise", "ignore")
# Statuses reported at training time, where the row is a problem (a
# `tiny_updates` row is one when its updates are orders below training).
STUCK_STATUSES = (vc.NEVER_UPDATED, vc.NON_FINITE, vc.STALLED, vc.TINY_UPDATES)
# A message names this many variables of a group, then counts the rest.
SHOWN_NAMES = 5
# Numbers in a diagnosis (counts, sizes, steps) do not make another cause.
_NUMBER = re.compile(r"[-+]?\d[\d.,]*(e[-+]?\d+)?")


def is_check_record(records_written, stuck_after):
    """Whether the check runs at this record: at `stuck_after`, then at 2x, 4x, 8x ... of it.

    The first check catches what never moved; the later ones, ever rarer,
    catch what stopped later (a learning rate schedule that reached 0, a
    layer unfrozen outside the optimizer), at no cost in between.
    """
    records_written, stuck_after = int(records_written), int(stuck_after)
    if records_written < stuck_after or records_written % stuck_after:
        return False
    multiple = records_written // stuck_after
    return multiple & (multiple - 1) == 0


def group_message(rows, shown=SHOWN_NAMES):
    """Lines that group `rows` by cause: a count, the first names, the cause once.

    Rows whose diagnoses differ only in numbers share a line; its text is the
    first row's.
    """
    groups = {}
    for row in rows:
        key = (row["status"], _NUMBER.sub("#", row["diagnosis"]))
        groups.setdefault(key, []).append(row)
    lines = []
    for (status, _), members in groups.items():
        names = [row["variable"] for row in members]
        listed = ", ".join(names[:shown]) + (" and %d more" % (len(names) - shown) if len(names) > shown else "")
        if len(members) == 1:
            lines.append("  %s: %s. %s" % (listed, status, members[0]["diagnosis"]))
        else:
            lines.append("  %d variables - %s: %s. %s" % (len(members), listed, status, members[0]["diagnosis"]))
    return lines


class StuckCheck:
    """Decides when to check, builds the message, and warns or raises.

    Args:
      tracker_name: the tracker's name, quoted in the message.
      on_stuck: "warn", "raise" or "ignore".
      stuck_after: the record count at which to check (once).
      allow: regular expressions (`re.search`) of variable names that are
        accepted as stuck, as `tb-varupdate check --allow` does.

    Raises:
      ValueError: an argument is out of range.
    """

    def __init__(self, tracker_name, on_stuck="warn", stuck_after=10, allow=()):
        if on_stuck not in ON_STUCK_CHOICES:
            raise ValueError("on_stuck must be one of %s. Received: on_stuck=%r" % (ON_STUCK_CHOICES, on_stuck))
        if not isinstance(stuck_after, int) or isinstance(stuck_after, bool) or stuck_after < 1:
            raise ValueError("stuck_after must be an int >= 1. Received: stuck_after=%r" % (stuck_after,))
        self.tracker_name = tracker_name
        self.on_stuck = on_stuck
        self.stuck_after = stuck_after
        self.allow = analysis.compile_allow(allow)
        self.message = None  # the last message, once the check found something
        self._reported = set()  # row indices already reported

    @property
    def enabled(self):
        return self.on_stuck != "ignore"

    def is_due(self, records_written):
        """True at the `stuck_after`-th record, then at each doubling of it (`is_check_record`)."""
        return self.enabled and is_check_record(records_written, self.stuck_after)

    def is_due_at_end(self, records_written):
        """Whether training's end checks the newest record once more: a stall since the last doubling.

        Warn mode only: the end of training (a tracker's `close()`, the end of
        a fit, also on an error) must not raise for a check the run never reached.
        """
        return (self.on_stuck == "warn" and records_written > self.stuck_after
                and not is_check_record(records_written, self.stuck_after))

    def find(self, entries, record, step, seen_at=None):
        """The message for the stuck variables of one record, or None.

        Args:
          entries: the variables record's entries.
          record: the int32 updates record (NumPy array).
          step: the record's step.
          seen_at: the training step when the writer read the record, if
            later than `step` (records read from a device in batches).
        """
        updates = md.parse_updates(record)
        rows = analysis.apply_allow(analysis.verdicts(entries, updates, int(step)), self.allow)
        # Each variable is reported once, at the first check that finds it.
        stuck = [row for row in rows if row["problem"] and row["status"] in STUCK_STATUSES
                 and row["index"] not in self._reported]
        if not stuck:
            return None
        self._reported.update(row["index"] for row in stuck)
        return (
            "tb_varupdate: after %d records (step %d%s), %d trainable variable(s) of tracker %r are "
            "stuck:\n%s\nAccept a variable that is stuck on purpose with allow=[REGEX] here and "
            "`tb-varupdate check --allow REGEX` in CI." % (
                updates.logged, int(step),
                ", seen at step %d" % seen_at if seen_at is not None and seen_at != int(step) else "",
                len(stuck), self.tracker_name, "\n".join(group_message(stuck)),
            )
        )

    def run(self, entries, record, step, seen_at=None):
        """Checks one record: warns or raises with the message (once per tracker)."""
        message = self.find(entries, record, step, seen_at)
        if message is None:
            return
        self.message = message
        if self.on_stuck == "raise":
            raise StuckVariableError(message)
        warnings.warn(message, stacklevel=3)
