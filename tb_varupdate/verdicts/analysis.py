"""Per-variable verdicts from the newest `varupdate` record. Pure: no I/O, no TF.

The backend's `variables` route and `tb-varupdate check` both call `verdicts`.
Because every record carries cumulative counters, the newest record alone is
enough, so verdicts are exact whatever TensorBoard downsampled.
"""

import math
import re

import numpy as np

from tb_varupdate.format import metadata as md
from tb_varupdate.format import variables as vr
from tb_varupdate.verdicts import vocabulary as vc
from tb_varupdate.verdicts.diagnosis import TF, TORCH, diagnose

# The largest single update was below this fraction of the variable's norm:
# even 10,000 such steps move it by at most ~1%, and float32 rounds relative
# changes under ~6e-8 away entirely, so the learning rate is almost surely too
# small (healthy training sits around 1e-4 to 1e-2; see Karpathy's 1e-3 rule).
TINY_RELATIVE_UPDATE = 1e-6
# A largest relative update this far below the healthy range (1e-4 to 1e-2)
# is not slow training but none: 10^9 such steps would not double the
# weight. AMP clipping before `scaler.unscale_` gives ~1e-11. Such a row is a
# problem, reported at training time like a never-updated one.
STUCK_RELATIVE_UPDATE = 1e-9

# A variable that changed earlier is `stalled` when it has not changed for at
# least STALL_MIN_LOGS records (short runs are noisy), for at least
# STALL_FRACTION of the records since it was first tracked (a change at step
# 500 of 1,000 followed by silence is a stall; a pause of 30 steps in 10,000 is
# not), and for more than STALL_RHYTHM_FACTOR times its usual interval between
# changes (gradient accumulation over N steps changes a variable every N steps).
STALL_MIN_LOGS = 20
STALL_FRACTION = 0.25
STALL_RHYTHM_FACTOR = 3

# A run whose newest NON_FINITE_RUN_MIN_LOGS or more records in a row all had a
# non-finite gradient has stopped training, whatever loss scaling does: a
# dynamic loss scale halves at each skipped step, so Keras' default initial
# scale of 2**15 (and GradScaler's 2**16) reaches 1 within 16 skips in a row,
# after which the gradients themselves are non-finite. No fraction of the run
# is asked for: 20 dead records at the end of 10,000 are as dead.
NON_FINITE_RUN_MIN_LOGS = 20


def _finite_or_none(value):
    value = float(value)
    return value if math.isfinite(value) else None


def relative_update(delta_l2, value_l2, dtype=np.float64):
    """The relative update DELTA_L2 / VALUE_L2 (vectorised): the one formula.

    The table's `latest_relative_update`, the heatmap's cells and the detail
    charts all use it, so a zero bias that never trains reads 0 ("no change")
    everywhere.

    Args:
      delta_l2, value_l2: arrays of the same shape (or broadcastable).
      dtype: of the result.

    Returns:
      `dtype` array: 0 where the delta is 0 (the variable did not change, even
      if its value is 0), NaN where the ratio is undefined (value 0 or
      non-finite, or a non-finite delta).
    """
    delta = np.asarray(delta_l2, dtype=dtype)
    value = np.asarray(value_l2, dtype=dtype)
    usable = np.isfinite(delta) & np.isfinite(value) & (value > 0)
    ratio = np.full(np.broadcast(delta, value).shape, np.nan, dtype=dtype)
    np.divide(delta, value, out=ratio, where=usable)
    ratio[delta == 0] = 0.0
    return ratio


def _gradient_verdict(counts, value_went_non_finite):
    given = sum(counts.values())
    present, none, zero, non_finite = (
        counts["present"], counts["none"], counts["zero"], counts["non_finite"],
    )
    if given == 0:
        return vc.GRAD_NOT_LOGGED
    if none == given:
        return vc.GRAD_MISSING
    if non_finite == given or (non_finite and value_went_non_finite):
        return vc.GRAD_NON_FINITE
    if present == 0 and zero and not none:
        return vc.GRAD_ZERO
    if none:
        return vc.GRAD_INTERMITTENT
    if present == 0:
        # Only zero and non-finite gradients, values finite: nothing usable.
        return vc.GRAD_ZERO
    # Non-finite gradients beside present ones are skipped steps (loss scaling).
    return vc.GRAD_PRESENT


def _status(logs_tracked, changed, logs_since, logs_to_last_update, non_finite_step, max_rel, diverged_step=-1):
    # Everything is counted in records, never in steps: a step that restarts
    # each epoch or repeats (a LossScaleOptimizer's skipped steps) must not
    # hide a stall.
    if non_finite_step != -1:
        return vc.NON_FINITE
    if diverged_step != -1:
        # Replicas that differ train different models on each rank, whatever else the row says.
        return vc.REPLICAS_DIVERGED
    if changed == 0:
        return vc.NEVER_UPDATED
    # Records per change up to the latest one: exact for gradient accumulation
    # (a change every N records) and an upper bound for a variable that started
    # changing late, whose quiet window must then be longer to count as a stall.
    usual_interval = logs_to_last_update / changed if changed > 1 else 0.0
    if (
        logs_since >= STALL_MIN_LOGS
        and logs_since >= STALL_FRACTION * logs_tracked
        and logs_since > STALL_RHYTHM_FACTOR * usual_interval
    ):
        return vc.STALLED
    if max_rel is not None and max_rel < TINY_RELATIVE_UPDATE:
        return vc.TINY_UPDATES
    return vc.UPDATING


def severity(row):
    """2 for a problem, 1 for a warning, 0 for healthy; problems sort first."""
    if row["status"] == vc.EMPTY:
        return 0
    if not row["trainable"]:
        if row["status"] in (vc.NON_FINITE, vc.REPLICAS_DIVERGED):
            return 2
        # A PyTorch parameter with requires_grad=False should not move.
        return 1 if row.get("role") == vr.ROLE_PARAMETER and row["changed_steps"] else 0
    if row["status"] in vc.PROBLEM_STATUSES or row.get("non_finite_gradient_run") or is_stuck_tiny(row):
        return 2
    if row["status"] == vc.TINY_UPDATES or row["gradient"] in (vc.GRAD_ZERO, vc.GRAD_NON_FINITE):
        return 1
    return 0


def is_stuck_tiny(row):
    """A `tiny_updates` row whose largest relative update is orders below healthy: no training at all."""
    return (row["status"] == vc.TINY_UPDATES and row["max_relative_update"] is not None
            and row["max_relative_update"] < STUCK_RELATIVE_UPDATE)


def _label(row):
    """The badge word: frozen for a quiet row that does not change, else the status."""
    if row["quiet"] and row["status"] in (vc.NEVER_UPDATED, vc.STALLED):
        return vc.FROZEN_LABEL
    return vc.STATUS_LABELS[row["status"]]


def sort_key(row):
    """Problems first, then by status order, then by name, then by row (names may repeat)."""
    return (-row["severity"], vc.STATUSES.index(row["status"]), row["variable"], row.get("index", 0))


def _non_finite_run(updates):
    """Records in a row with a non-finite gradient at the end of the run, when a problem; else 0."""
    if updates.logs_at_last_finite_grads is None:
        return 0  # version 2 records do not say
    run = updates.logged - updates.logs_at_last_finite_grads
    return run if run >= NON_FINITE_RUN_MIN_LOGS else 0


def _is_empty(shape):
    return any(d == 0 for d in shape or ())


def _writer_facts(entry, role, updates):
    """What the entry says about its writer: framework, how it wrote, the learning rate.

    Records of older writers carry no `framework`: a `role` has always meant
    PyTorch. `learning_rate` is None and `in_optimizer` None where the record
    does not say.
    """
    framework = entry.get("framework")
    if framework not in vr.FRAMEWORKS:
        framework = TORCH if role else TF
    slot, learning_rate, in_optimizer = entry.get("lr_slot"), None, None
    if type(slot) is int:  # pylint: disable=unidiomatic-typecheck  (bool is not a slot)
        if slot == vr.NOT_IN_OPTIMIZER:
            in_optimizer = False
        elif 0 <= slot < md.LEARNING_RATE_SLOTS:
            in_optimizer = True
            learning_rate = _finite_or_none(updates.learning_rates[slot])
    via = entry.get("via") if entry.get("via") in vr.VIAS else vr.VIA_LOG
    return {"framework": framework, "via": via, "learning_rate": learning_rate, "in_optimizer": in_optimizer}


def _used_as_fixed_model(entry, row, facts):
    """Whether a trainable variable that never changed is, by the writer's evidence, part of a fixed model.

    keras-io's knowledge distillation keeps its teacher `trainable=True` and
    gives it to no optimizer; so do target networks. The record cannot tell
    such a model from a forgotten layer, but the writer can: the Keras
    callback saw that no `tf.GradientTape.gradient` of the train step ever
    asked for its gradient (entry `differentiated` false), the PyTorch
    tracker that it is in none of the attached optimizers and its `.grad`
    stayed None. A layer whose gradient was taken and never applied, or one
    an optimizer holds, stays a problem.
    """
    # Unfrozen since it was first tracked: the no-recompile / not-in-optimizer case, never a fixed model.
    if row["status"] != vc.NEVER_UPDATED or not row["trainable"] or not facts["first_trainable"]:
        return False
    if facts["framework"] == TF:
        return entry.get("differentiated") is False and row["gradient"] in (vc.GRAD_NOT_LOGGED, vc.GRAD_MISSING)
    return facts["in_optimizer"] is False and row["gradient"] == vc.GRAD_MISSING


def _row(entry, col, fcol, updates, step, run, relative, latest_state, replicas=(-1, None)):
    """One verdict row (without severity and sort) of variable `entry`.

    `col` and `fcol` are the variable's ints and floats as Python lists;
    `relative` its `relative_update` and `latest_state` its newest
    `metadata.GRAD_STATE_*` (both computed for all rows at once);
    `replicas` its (FIRST_DIVERGED_STEP, REPLICA_SPREAD or None) of a
    version 4 record.
    """
    logs_tracked = max(updates.logged - int(entry["joined"]), 0)
    changed = int(col[md.CHANGED_STEPS])
    logs_since = updates.logged - int(col[md.LOGS_AT_LAST_UPDATE]) if changed else logs_tracked
    logs_to_last_update = int(col[md.LOGS_AT_LAST_UPDATE]) - int(entry["joined"]) if changed else 0
    # Version 3 records carry the trainable flag of this record; version 2
    # ones only the flag when the variable was first tracked.
    first_trainable = bool(entry["trainable"])
    trainable = bool(col[md.TRAINABLE] > 0) if updates.trainable is not None else first_trainable
    counts = {
        "present": int(col[md.GRAD_PRESENT_STEPS]),
        "none": int(col[md.GRAD_NONE_STEPS]),
        "zero": int(col[md.GRAD_ZERO_STEPS]),
        "non_finite": int(col[md.GRAD_NON_FINITE_STEPS]),
    }
    non_finite_step = int(col[md.FIRST_NON_FINITE_STEP])
    # NaN (and a negative value of an older writer): no change was measured
    # against a non-zero norm (a zero-initialised bias), so the size is unknown.
    max_rel = _finite_or_none(fcol[md.MAX_RELATIVE_UPDATE])
    if max_rel is not None and max_rel < 0:
        max_rel = None
    first_step = int(col[md.FIRST_UPDATE_STEP])
    last_step = int(col[md.LAST_UPDATE_STEP])
    shape = entry["shape"]
    value_l2 = _finite_or_none(fcol[md.VALUE_L2])
    delta_l2 = _finite_or_none(fcol[md.DELTA_L2])
    role = entry.get("role") if entry.get("role") in vr.ROLES else None
    empty = _is_empty(shape)
    diverged_step, spread = replicas
    status = vc.EMPTY if empty else _status(
        logs_tracked, changed, logs_since, logs_to_last_update, non_finite_step, max_rel, diverged_step)
    gradient = _gradient_verdict(counts, non_finite_step != -1)
    if gradient == vc.GRAD_INTERMITTENT and trainable and not first_trainable and counts["present"]:
        # Unfrozen mid-run: its gradient was None while it was frozen, which is
        # expected, not a branch that skips it.
        gradient = vc.GRAD_PRESENT
    # A run of non-finite gradients at the end concerns the variables whose
    # newest gradient is non-finite; their value stayed finite (skipped steps).
    run = run if trainable and not empty and latest_state == md.GRAD_STATE_NON_FINITE and status != vc.NON_FINITE else 0
    if run:
        gradient = vc.GRAD_NON_FINITE
        if changed and int(col[md.LOGS_AT_LAST_UPDATE]) <= updates.logged - run:
            status = vc.STALLED
    row = {
        "variable": entry["name"],
        "trainable": trainable,
        "shape": shape,
        "dtype": entry["dtype"],
        "role": role,
        "status": status,
        "gradient": gradient,
        "first_update_step": first_step if changed else None,
        "last_update_step": last_step if changed else None,
        "stalled_since_step": last_step if status == vc.STALLED else None,
        "logs_since_update": logs_since,
        "logged_steps": logs_tracked,
        "changed_steps": changed,
        "changed_fraction": (changed / logs_tracked) if logs_tracked else 0.0,
        "latest_step": int(step),
        "latest_delta_l2": delta_l2,
        "latest_relative_update": relative if math.isfinite(relative) else None,
        "max_relative_update": max_rel,
        "value_l2": value_l2,
        "gradient_l2": _finite_or_none(fcol[md.GRAD_L2]) if fcol[md.GRAD_L2] >= 0 else None,
        "gradient_steps": dict(counts, not_given=logs_tracked - sum(counts.values())),
        "first_non_finite_step": non_finite_step if non_finite_step != -1 else None,
        "non_finite_gradient_run": run or None,
        "rows_changed": int(col[md.ROWS_CHANGED]),
        "rows_total": shape[0] if shape and shape[0] is not None else 0,
        # Version 4 (torch.distributed): the first step the ranks' copies differed,
        # and the largest spread of their fingerprints seen (None: never compared).
        "replicas_diverged_step": diverged_step if diverged_step != -1 else None,
        "replica_spread": spread,
    }
    facts = dict(_writer_facts(entry, role, updates), **{
        "role": role, "first_trainable": first_trainable,
        "non_finite_run": run, "empty": empty, "tiny": TINY_RELATIVE_UPDATE, "stuck_tiny": STUCK_RELATIVE_UPDATE,
        "zero_init": entry.get("zero_init") is True,
    })
    facts["fixed_model"] = _used_as_fixed_model(entry, row, facts)
    row["diagnosis"] = diagnose(row, latest_state, facts)
    row["_fixed_model"] = facts["fixed_model"]
    if row["rows_changed"] < 0:
        row["rows_changed"] = None
    return row


def verdicts(entries, updates, step):
    """One verdict row per variable, problems first.

    Besides the counters, each row carries what the dashboard draws without
    deciding anything: `severity` (2 problem, 1 warning, 0 healthy),
    `problem` (fails `check`), `quiet` (not a concern: frozen on purpose, a
    buffer, no elements), `label` (the badge word), `allowed` (accepted by
    `apply_allow`) and `latest_relative_update` (`relative_update`).

    Args:
      entries: the variables record's entries (`format.variables.parse_variables`).
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
    run = _non_finite_run(updates)
    # Whole columns at once, then plain Python per row: NumPy scalars cost
    # more than the rules (2,000 variables are one `variables` answer).
    relative = relative_update(updates.floats[:, md.DELTA_L2], updates.floats[:, md.VALUE_L2]).tolist()
    states = md.grad_state(updates.floats[:, md.GRAD_L2]).tolist()
    ints, floats = updates.ints.tolist(), updates.floats.tolist()
    if updates.first_diverged is not None:
        replicas = list(zip(updates.first_diverged.tolist(),
                            [v if math.isfinite(v) else None for v in updates.replica_spread.tolist()]))
    else:
        replicas = [(-1, None)] * updates.num_variables
    rows = []
    for index in range(updates.num_variables):
        row = _row(entries[index], ints[index], floats[index], updates, step, run, relative[index], states[index],
                   replicas[index])
        # The row's position in the records: names may repeat (or be ""), so
        # the series, heatmap and the tab tell variables apart by this.
        row["index"] = index
        # A model used as a fixed one (a teacher) is a warning, not a problem: see _used_as_fixed_model.
        row["severity"] = min(severity(row), vc.WARNING) if row.pop("_fixed_model") else severity(row)
        row["problem"] = row["severity"] == 2
        row["quiet"] = row["severity"] == 0 and (row["status"] == vc.EMPTY or not row["trainable"])
        row["allowed"] = False
        row["label"] = _label(row)
        rows.append(row)
    rows.sort(key=sort_key)
    return rows


def summarize(rows):
    """Counts per status of trainable variables, and the number of problems.

    Returns:
      dict with "variables", "trainable", "problems" (rows that fail `check`:
      accepted ones do not), "warnings" and "by_status" ({status: count of
      trainable variables} over COUNTED_STATUSES; a variable with no
      elements is in none).
    """
    by_status = {status: 0 for status in vc.COUNTED_STATUSES}
    for row in rows:
        if row["trainable"] and row["status"] in by_status:
            by_status[row["status"]] += 1
    return {
        "variables": len(rows),
        "trainable": sum(1 for row in rows if row["trainable"]),
        "problems": sum(1 for row in rows if row["problem"]),
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

    An accepted row keeps its status, severity and diagnosis, gets
    `"allowed": True` (the dashboard's badge reads ACCEPTED_LABEL), and is no
    longer a problem: it fails neither `check` nor the `on_stuck` check.

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
