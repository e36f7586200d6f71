"""Per-variable verdicts from the newest `varupdate` record. Pure: no I/O, no TF.

The backend's `variables` route and `tb-varupdate check` both call `verdicts`.
Because every record carries cumulative counters, the newest record alone is
enough, so verdicts are exact whatever TensorBoard downsampled.
"""

import math
import re

import numpy as np

from tb_varupdate import metadata as md

# Statuses, in the order a user should look at them.
NON_FINITE = "non_finite"
NEVER_UPDATED = "never_updated"
STALLED = "stalled"
TINY_UPDATES = "tiny_updates"
UPDATING = "updating"
STATUSES = (NON_FINITE, NEVER_UPDATED, STALLED, TINY_UPDATES, UPDATING)

# Statuses that fail `tb-varupdate check` when the variable is trainable.
PROBLEM_STATUSES = frozenset((NON_FINITE, NEVER_UPDATED, STALLED))

# Gradient verdicts.
GRAD_PRESENT = "present"
GRAD_MISSING = "missing"
GRAD_ZERO = "zero"
GRAD_INTERMITTENT = "intermittent"
GRAD_NON_FINITE = "non_finite"
GRAD_NOT_LOGGED = "not_logged"
GRADIENT_VERDICTS = (
    GRAD_PRESENT, GRAD_MISSING, GRAD_ZERO, GRAD_INTERMITTENT, GRAD_NON_FINITE, GRAD_NOT_LOGGED,
)

# The largest single update was below this fraction of the variable's norm:
# even 10,000 such steps move it by at most ~1%, and float32 rounds relative
# changes under ~6e-8 away entirely, so the learning rate is almost surely too
# small (healthy training sits around 1e-4 to 1e-2; see Karpathy's 1e-3 rule).
TINY_RELATIVE_UPDATE = 1e-6

# A variable that changed earlier is `stalled` when it has not changed for at
# least STALL_MIN_LOGS records (short runs are noisy), for at least
# STALL_FRACTION of the records since it was first tracked (a change at step
# 500 of 1,000 followed by silence is a stall; a pause of 30 steps in 10,000 is
# not), and for more than STALL_RHYTHM_FACTOR times its usual interval between
# changes (gradient accumulation over N steps changes a variable every N steps).
STALL_MIN_LOGS = 20
STALL_FRACTION = 0.25
STALL_RHYTHM_FACTOR = 3


def _finite_or_none(value):
    value = float(value)
    return value if math.isfinite(value) else None


def _gradient_verdict(counts, value_went_non_finite):
    given = sum(counts.values())
    present, none, zero, non_finite = (
        counts["present"], counts["none"], counts["zero"], counts["non_finite"],
    )
    if given == 0:
        return GRAD_NOT_LOGGED
    if none == given:
        return GRAD_MISSING
    if non_finite == given or (non_finite and value_went_non_finite):
        return GRAD_NON_FINITE
    if present == 0 and zero and not none:
        return GRAD_ZERO
    if none:
        return GRAD_INTERMITTENT
    if present == 0:
        # Only zero and non-finite gradients, values finite: nothing usable.
        return GRAD_ZERO
    # Non-finite gradients beside present ones are skipped steps (loss scaling).
    return GRAD_PRESENT


_NEVER_UPDATED_CAUSE = {
    GRAD_PRESENT: (
        "a non-zero gradient arrived at {present} of {logged} logged steps but was never "
        "applied: the variable is likely not passed to the optimizer (left out of "
        "apply_gradients or of trainable_variables), its Python name was rebound with "
        "`v = v - lr * g` (which makes a new tensor; use `v.assign_sub(lr * g)` or "
        "`optimizer.apply_gradients`), or the learning rate is 0 or too small to move "
        "{dtype} weights"
    ),
    GRAD_MISSING: (
        "its gradient is None at every step: it is not connected to the loss (unused in "
        "the forward pass, or reached only through non-differentiable ops such as argmax, "
        "round or cast); call it on the path to the loss"
    ),
    GRAD_ZERO: (
        "its gradient is exactly zero: dead units (ReLUs that never fire), a saturated "
        "activation or a masked or all-zero input; check activations and initialisation, "
        "or try LeakyReLU and a lower learning rate"
    ),
    GRAD_INTERMITTENT: (
        "its gradient is None at some steps and never applied at the others: it is only "
        "connected to the loss in some steps (a conditional branch) and then not passed "
        "to the optimizer"
    ),
    GRAD_NON_FINITE: (
        "its gradient is NaN or Inf, so the optimizer skips it or poisons it: look for "
        "log(0), division by zero or an exploding loss; clip gradients or lower the "
        "learning rate"
    ),
    GRAD_NOT_LOGGED: (
        "no gradient was logged for it, so the likely causes are: it is not passed to the "
        "optimizer, its Python name was rebound with `v = v - lr * g` (use "
        "`v.assign_sub(lr * g)` or `optimizer.apply_gradients`), or the learning rate is "
        "0; pass `gradients=` to `log()` to tell a disconnected variable from an "
        "unapplied one"
    ),
}

_LATEST_GRADIENT_HINT = {
    md.GRAD_STATE_NONE: "its gradient is now None (the variable was disconnected from the loss)",
    md.GRAD_STATE_ZERO: "its gradient is now zero (units died or saturated)",
    md.GRAD_STATE_NON_FINITE: "its gradient is now NaN or Inf",
    md.GRAD_STATE_PRESENT: (
        "its gradient is still present, so the update is no longer applied: a learning "
        "rate schedule that reached 0, a layer frozen mid-run, or the variable dropped "
        "from the optimizer's list"
    ),
    md.GRAD_STATE_NOT_GIVEN: (
        "likely a learning rate schedule that reached 0, a layer frozen mid-run, or the "
        "variable dropped from the optimizer's list"
    ),
}


def _diagnosis(row, latest_grad_state):
    status, gradient = row["status"], row["gradient"]
    if not row["trainable"]:
        if status == NEVER_UPDATED:
            return (
                "Not trainable and never changed: frozen on purpose (trainable=False). "
                "Not a problem unless you meant to train it."
            )
        if status == NON_FINITE:
            return (
                "Not trainable, but its value became NaN or Inf at step %d: a statistic "
                "(e.g. BatchNorm moving variance) was fed non-finite activations."
                % row["first_non_finite_step"]
            )
        return (
            "Not trainable, changed by assignments (BatchNorm moving statistics, counters, "
            "EMA): expected."
        )
    if status == NON_FINITE:
        text = (
            "Its value became NaN or Inf at step %d; everything downstream is poisoned. "
            "Look for an exploding loss, log(0) or division by zero; lower the learning "
            "rate, clip gradients, or use loss scaling with mixed precision."
            % row["first_non_finite_step"]
        )
        if row["gradient_steps"]["non_finite"]:
            text += " Its gradient was non-finite at %d steps." % row["gradient_steps"]["non_finite"]
        return text
    if status == NEVER_UPDATED:
        cause = _NEVER_UPDATED_CAUSE[gradient].format(
            present=row["gradient_steps"]["present"], logged=row["logged_steps"], dtype=row["dtype"]
        )
        return "Never changed: " + cause + "."
    if status == STALLED:
        return "Changed until step %d, then stopped for %d logged steps: %s." % (
            row["last_update_step"], row["logs_since_update"], _LATEST_GRADIENT_HINT[latest_grad_state],
        )
    if status == TINY_UPDATES:
        return (
            "Changes, but its largest relative update was %.1e (below %.0e): the learning "
            "rate is likely too small or the gradients vanish; raise the learning rate or "
            "check the gradient scale." % (row["max_relative_update"], TINY_RELATIVE_UPDATE)
        )
    text = "Updating."
    if gradient == GRAD_ZERO:
        text = "Updating although its gradient is zero: changed by something else (weight decay, assignments)."
    elif gradient == GRAD_MISSING:
        text = "Updating although its gradient is None: changed by assignments, not by gradients."
    skipped = row["gradient_steps"]["non_finite"]
    if skipped:
        text += (
            " %d steps had a non-finite gradient and were skipped, as loss scaling does "
            "with mixed precision; not a problem while values stay finite." % skipped
        )
    return text


def _rows_note(row):
    never = row["rows_total"] - row["rows_changed"]
    if row["rows_changed"] < 0 or not row["rows_total"] or never <= 0:
        return ""
    return " %d%% of rows (%d of %d) never updated: ids that never occur in the data." % (
        round(100.0 * never / row["rows_total"]), never, row["rows_total"],
    )


def _status(logs_tracked, changed, logs_since, logs_to_last_update, non_finite_step, max_rel):
    # Everything is counted in records, never in steps: a step that restarts
    # each epoch or repeats (a LossScaleOptimizer's skipped steps) must not
    # hide a stall.
    if non_finite_step >= 0:
        return NON_FINITE
    if changed == 0:
        return NEVER_UPDATED
    # Records per change up to the latest one: exact for gradient accumulation
    # (a change every N records) and an upper bound for a variable that started
    # changing late, whose quiet window must then be longer to count as a stall.
    usual_interval = logs_to_last_update / changed if changed > 1 else 0.0
    if (
        logs_since >= STALL_MIN_LOGS
        and logs_since >= STALL_FRACTION * logs_tracked
        and logs_since > STALL_RHYTHM_FACTOR * usual_interval
    ):
        return STALLED
    if max_rel is not None and max_rel < TINY_RELATIVE_UPDATE:
        return TINY_UPDATES
    return UPDATING


def severity(row):
    """2 for a problem, 1 for a warning, 0 for healthy; problems sort first."""
    if not row["trainable"]:
        return 2 if row["status"] == NON_FINITE else 0
    if row["status"] in PROBLEM_STATUSES:
        return 2
    if row["status"] == TINY_UPDATES or row["gradient"] in (GRAD_ZERO, GRAD_NON_FINITE):
        return 1
    return 0


def sort_key(row):
    """Problems first, then by status order, then by name."""
    return (-row["severity"], STATUSES.index(row["status"]), row["variable"])


def verdicts(entries, updates, step):
    """One verdict row per variable, problems first.

    Args:
      entries: the variables record's entries (`metadata.parse_variables`).
      updates: the newest `metadata.Updates` of the same tracker.
      step: the step of that newest record.

    Returns:
      A list of JSON-ready dicts, sorted by `sort_key`.

    Raises:
      metadata.FormatError: the updates have more rows than `entries` names.
    """
    if updates.num_variables > len(entries):
        raise md.FormatError(
            "the updates record has %d variable rows but its variables record names "
            "only %d" % (updates.num_variables, len(entries))
        )
    ints, floats = updates.ints, updates.floats
    rows = []
    for index in range(updates.num_variables):
        entry, col, fcol = entries[index], ints[index], floats[index]
        logs_tracked = max(updates.logged - int(entry["joined"]), 0)
        changed = int(col[md.CHANGED_STEPS])
        logs_since = updates.logged - int(col[md.LOGS_AT_LAST_UPDATE]) if changed else logs_tracked
        logs_to_last_update = int(col[md.LOGS_AT_LAST_UPDATE]) - int(entry["joined"]) if changed else 0
        # Version 3 records carry the trainable flag of this record; version 2
        # ones only the flag when the variable was first tracked.
        trainable = bool(updates.trainable[index]) if updates.trainable is not None else bool(entry["trainable"])
        counts = {
            "present": int(col[md.GRAD_PRESENT_STEPS]),
            "none": int(col[md.GRAD_NONE_STEPS]),
            "zero": int(col[md.GRAD_ZERO_STEPS]),
            "non_finite": int(col[md.GRAD_NON_FINITE_STEPS]),
        }
        non_finite_step = int(col[md.FIRST_NON_FINITE_STEP])
        max_rel = _finite_or_none(fcol[md.MAX_RELATIVE_UPDATE])
        first_step = int(col[md.FIRST_UPDATE_STEP])
        last_step = int(col[md.LAST_UPDATE_STEP])
        shape = entry["shape"]
        value_l2 = _finite_or_none(fcol[md.VALUE_L2])
        delta_l2 = _finite_or_none(fcol[md.DELTA_L2])
        row = {
            "variable": entry["name"],
            "trainable": trainable,
            "shape": shape,
            "dtype": entry["dtype"],
            "status": _status(logs_tracked, changed, logs_since, logs_to_last_update, non_finite_step, max_rel),
            "gradient": _gradient_verdict(counts, non_finite_step >= 0),
            "first_update_step": first_step if changed else None,
            "last_update_step": last_step if changed else None,
            "logs_since_update": logs_since,
            "logged_steps": logs_tracked,
            "changed_steps": changed,
            "changed_fraction": (changed / logs_tracked) if logs_tracked else 0.0,
            "latest_step": int(step),
            "latest_delta_l2": delta_l2,
            "latest_relative_update": (
                delta_l2 / value_l2 if delta_l2 is not None and value_l2 else None
            ),
            "max_relative_update": max_rel,
            "value_l2": value_l2,
            "gradient_l2": _finite_or_none(fcol[md.GRAD_L2]) if fcol[md.GRAD_L2] >= 0 else None,
            "gradient_steps": dict(counts, not_given=logs_tracked - sum(counts.values())),
            "first_non_finite_step": non_finite_step if non_finite_step >= 0 else None,
            "rows_changed": int(col[md.ROWS_CHANGED]),
            "rows_total": shape[0] if shape and shape[0] is not None else 0,
        }
        if row["status"] == STALLED:
            row["stalled_since_step"] = last_step
        else:
            row["stalled_since_step"] = None
        latest_state = md.grad_state(fcol[md.GRAD_L2]).item()
        row["diagnosis"] = _diagnosis(row, latest_state) + _rows_note(row)
        if row["rows_changed"] < 0:
            row["rows_changed"] = None
        row["severity"] = severity(row)
        row["problem"] = row["severity"] == 2
        rows.append(row)
    rows.sort(key=sort_key)
    return rows


def summarize(rows):
    """Counts per status of trainable variables, and the number of problems.

    Returns:
      dict with "variables", "trainable", "problems", "warnings" and
      "by_status" ({status: count of trainable variables}).
    """
    by_status = {status: 0 for status in STATUSES}
    for row in rows:
        if row["trainable"]:
            by_status[row["status"]] += 1
    return {
        "variables": len(rows),
        "trainable": sum(1 for row in rows if row["trainable"]),
        "problems": sum(1 for row in rows if row["severity"] == 2),
        "warnings": sum(1 for row in rows if row["severity"] == 1),
        "by_status": by_status,
    }


def is_healthy(rows):
    """False when any variable's verdict is a problem (what fails `check`)."""
    return not any(row["problem"] for row in rows)


def compile_allow(patterns):
    """Compiles `--allow` / `allow=` patterns (regular expressions, `re.search`).

    Raises:
      ValueError: a pattern is not a valid regular expression.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    compiled = []
    for pattern in patterns or ():
        if isinstance(pattern, re.Pattern):
            compiled.append(pattern)
            continue
        try:
            compiled.append(re.compile(pattern))
        except (re.error, TypeError) as err:
            raise ValueError("allow patterns must be regular expressions. Received: %r (%s)" % (pattern, err)) from err
    return compiled


def apply_allow(rows, allow):
    """Marks the problem rows whose variable matches an allow pattern as accepted.

    An accepted row keeps its status and diagnosis, gets `"allowed": True`, and
    is no longer a problem: it fails neither `check` nor the `on_stuck` check.

    Args:
      rows: verdict rows from `verdicts`.
      allow: patterns from `compile_allow`.

    Returns:
      The same rows (changed in place), for chaining.
    """
    for row in rows:
        row["allowed"] = bool(allow) and row["problem"] and any(p.search(row["variable"]) for p in allow)
        if row["allowed"]:
            row["problem"] = False
    return rows
