"""The words of a verdict: statuses, gradient verdicts, their labels and order. Pure.

One source for the CLI, the backend and the dashboard: `vocabulary()` is what
the dashboard draws its badges, filters and banner from (served by the
backend; frontend/static/vocabulary.js holds a copy for an older backend,
and tests/test_vocabulary.py keeps that copy equal to this).
"""

from tb_varupdate.format import metadata as md

# Statuses, in the order a user should look at them.
NON_FINITE = "non_finite"
# The ranks' copies of a replicated parameter (DDP, a replicated DTensor) differ.
REPLICAS_DIVERGED = "replicas_diverged"
NEVER_UPDATED = "never_updated"
STALLED = "stalled"
TINY_UPDATES = "tiny_updates"
UPDATING = "updating"
# A variable with no elements (a shape with a 0): nothing to update, not a problem.
EMPTY = "empty"
STATUSES = (NON_FINITE, REPLICAS_DIVERGED, NEVER_UPDATED, STALLED, TINY_UPDATES, UPDATING, EMPTY)
# Statuses counted per trainable variable in a summary's `by_status` (an
# empty variable has no training to count).
COUNTED_STATUSES = (NON_FINITE, REPLICAS_DIVERGED, NEVER_UPDATED, STALLED, TINY_UPDATES, UPDATING)

# Statuses that fail `tb-varupdate check` when the variable is trainable.
PROBLEM_STATUSES = frozenset((NON_FINITE, REPLICAS_DIVERGED, NEVER_UPDATED, STALLED))

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

# Severities: what a row is to a user.
PROBLEM, WARNING, HEALTHY = 2, 1, 0

STATUS_LABELS = {
    NON_FINITE: "NaN / Inf",
    REPLICAS_DIVERGED: "replicas diverged",
    NEVER_UPDATED: "never updated",
    STALLED: "stalled",
    TINY_UPDATES: "tiny updates",
    UPDATING: "updating",
    EMPTY: "no elements",
}
# How a banner phrases each status after "N of M trainable variables ...".
STATUS_PHRASES = {
    NON_FINITE: "became NaN or Inf",
    REPLICAS_DIVERGED: "differ between ranks",
    NEVER_UPDATED: "never updated",
    STALLED: "stalled",
    TINY_UPDATES: "have tiny updates",
    UPDATING: "are updating",
    EMPTY: "have no elements",
}
GRADIENT_LABELS = {
    GRAD_PRESENT: "present",
    GRAD_MISSING: "no gradient",
    GRAD_ZERO: "zero gradient",
    GRAD_INTERMITTENT: "intermittent",
    GRAD_NON_FINITE: "NaN gradient",
    GRAD_NOT_LOGGED: "not logged",
}
# Per-record gradient states of the `series` route.
GRADIENT_STATES = (
    md.GRAD_STATE_PRESENT, md.GRAD_STATE_ZERO, md.GRAD_STATE_NONE, md.GRAD_STATE_NON_FINITE,
    md.GRAD_STATE_NOT_GIVEN,
)
GRADIENT_STATE_LABELS = {
    md.GRAD_STATE_PRESENT: "present",
    md.GRAD_STATE_ZERO: "zero",
    md.GRAD_STATE_NONE: "None (disconnected)",
    md.GRAD_STATE_NON_FINITE: "NaN / Inf",
    md.GRAD_STATE_NOT_GIVEN: "not logged",
}
# Badge words that are not a status: a quiet row that does not change
# (non-trainable on purpose), and a problem a user accepted (`--allow`).
FROZEN_LABEL = "frozen"
ACCEPTED_LABEL = "accepted"
SEVERITY_NAMES = {PROBLEM: "problem", WARNING: "warning", HEALTHY: "ok"}


def vocabulary():
    """Statuses and gradient words with labels, order and severity, as plain JSON.

    Returns:
      dict with "statuses" ([{name, label, phrase, problem}] in the order a
      user should look at them; `problem`: fails `check` when trainable),
      "counted_statuses" (the keys of a summary's `by_status`), "gradients"
      and "gradient_states" ([{name, label}]), "labels" ({frozen, accepted})
      and "severities" ([{value, name}], most severe first).
    """
    return {
        "statuses": [
            {"name": s, "label": STATUS_LABELS[s], "phrase": STATUS_PHRASES[s], "problem": s in PROBLEM_STATUSES}
            for s in STATUSES
        ],
        "counted_statuses": list(COUNTED_STATUSES),
        "gradients": [{"name": g, "label": GRADIENT_LABELS[g]} for g in GRADIENT_VERDICTS],
        "gradient_states": [{"name": g, "label": GRADIENT_STATE_LABELS[g]} for g in GRADIENT_STATES],
        "labels": {"frozen": FROZEN_LABEL, "accepted": ACCEPTED_LABEL},
        "severities": [{"value": v, "name": SEVERITY_NAMES[v]} for v in (PROBLEM, WARNING, HEALTHY)],
    }
