"""The training-time check: after `stuck_after` records, report stuck trainable variables once.

Shared by every writer. The check runs the same verdicts as the tab and
`tb-varupdate check` (`analysis.verdicts`) on the tracker's newest record, and
owns its message: `on_stuck="warn"` warns with it, `"raise"` raises
`StuckVariableError` with it. No framework import.
"""

import warnings

from tb_varupdate import analysis
from tb_varupdate import metadata as md
from tb_varupdate.errors import StuckVariableError

ON_STUCK_CHOICES = ("warn", "raise", "ignore")
# Statuses reported at training time: a stall needs more records than the check has seen.
STUCK_STATUSES = (analysis.NEVER_UPDATED, analysis.NON_FINITE)


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

    @property
    def enabled(self):
        return self.on_stuck != "ignore"

    def is_due(self, records_written):
        """True exactly once: at the `stuck_after`-th record."""
        return self.enabled and int(records_written) == self.stuck_after

    def find(self, entries, record, step, seen_at=None):
        """The message for the stuck variables of one record, or None.

        Args:
          entries: the variables record's entries.
          record: the int32 updates record (NumPy array).
          step: the record's step.
          seen_at: the training step when the writer read the record, if
            later than `step` (records read from a device in batches).
        """
        rows = analysis.apply_allow(analysis.verdicts(entries, md.parse_updates(record), int(step)), self.allow)
        stuck = [row for row in rows if row["problem"] and row["status"] in STUCK_STATUSES]
        if not stuck:
            return None
        lines = ["  %s: %s. %s" % (row["variable"], row["status"], row["diagnosis"]) for row in stuck]
        return (
            "tb_varupdate: after %d records (step %d%s), %d trainable variable(s) of tracker %r are "
            "stuck:\n%s\nAccept a variable that is stuck on purpose with allow=[REGEX] here and "
            "`tb-varupdate check --allow REGEX` in CI." % (
                self.stuck_after, int(step),
                ", seen at step %d" % seen_at if seen_at is not None and seen_at != int(step) else "",
                len(stuck), self.tracker_name, "\n".join(lines),
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
