// The words of a verdict (statuses, gradient verdicts, their labels and
// order), as the backend's `vocabulary` route serves analysis.vocabulary().
// FALLBACK is a copy for a backend without that route; tests/test_vocabulary.py
// keeps it equal to analysis.vocabulary(). No DOM, no fetching.

export const FALLBACK = Object.freeze({
  "statuses": [
    {
      "name": "non_finite",
      "label": "NaN / Inf",
      "phrase": "became NaN or Inf",
      "problem": true
    },
    {
      "name": "replicas_diverged",
      "label": "replicas diverged",
      "phrase": "differ between ranks",
      "problem": true
    },
    {
      "name": "never_updated",
      "label": "never updated",
      "phrase": "never updated",
      "problem": true
    },
    {
      "name": "stalled",
      "label": "stalled",
      "phrase": "stalled",
      "problem": true
    },
    {
      "name": "tiny_updates",
      "label": "tiny updates",
      "phrase": "have tiny updates",
      "problem": false
    },
    {
      "name": "updating",
      "label": "updating",
      "phrase": "are updating",
      "problem": false
    },
    {
      "name": "empty",
      "label": "no elements",
      "phrase": "have no elements",
      "problem": false
    }
  ],
  "counted_statuses": [
    "non_finite",
    "replicas_diverged",
    "never_updated",
    "stalled",
    "tiny_updates",
    "updating"
  ],
  "gradients": [
    {
      "name": "present",
      "label": "present"
    },
    {
      "name": "missing",
      "label": "no gradient"
    },
    {
      "name": "zero",
      "label": "zero gradient"
    },
    {
      "name": "intermittent",
      "label": "intermittent"
    },
    {
      "name": "non_finite",
      "label": "NaN gradient"
    },
    {
      "name": "not_logged",
      "label": "not logged"
    }
  ],
  "gradient_states": [
    {
      "name": "present",
      "label": "present"
    },
    {
      "name": "zero",
      "label": "zero"
    },
    {
      "name": "none",
      "label": "None (disconnected)"
    },
    {
      "name": "non_finite",
      "label": "NaN / Inf"
    },
    {
      "name": "not_given",
      "label": "not logged"
    }
  ],
  "labels": {
    "frozen": "frozen",
    "accepted": "accepted"
  },
  "severities": [
    {
      "value": 2,
      "name": "problem"
    },
    {
      "value": 1,
      "name": "warning"
    },
    {
      "value": 0,
      "name": "ok"
    }
  ]
});

let current = FALLBACK;

function byName(list) {
  return new Map((list || []).map((item, index) => [item.name, { ...item, index }]));
}
let statuses = byName(current.statuses);
let gradients = byName(current.gradients);
let gradientStates = byName(current.gradient_states);

/** Uses `vocabulary` (the route's answer) from now on; ignores one that lacks statuses. */
export function setVocabulary(vocabulary) {
  if (!vocabulary || !Array.isArray(vocabulary.statuses) || !vocabulary.statuses.length) return false;
  current = { ...FALLBACK, ...vocabulary };
  statuses = byName(current.statuses);
  gradients = byName(current.gradients);
  gradientStates = byName(current.gradient_states);
  return true;
}

/** Status names in the order a user should look at them. */
export function statusNames() {
  return current.statuses.map((s) => s.name);
}

/** The statuses a summary's `by_status` counts, in order. */
export function countedStatuses() {
  return current.counted_statuses || statusNames();
}

/** Position of a status in the vocabulary order (unknown ones last). */
export function statusOrder(name) {
  return statuses.has(name) ? statuses.get(name).index : statuses.size;
}

export function statusLabel(name) {
  return statuses.get(name)?.label ?? String(name);
}

export function statusPhrase(name) {
  return statuses.get(name)?.phrase ?? String(name);
}

/** Whether a status fails `check` for a trainable variable. */
export function isProblemStatus(name) {
  return Boolean(statuses.get(name)?.problem);
}

export function gradientLabel(name) {
  return gradients.get(name)?.label ?? String(name);
}

/** Position of a gradient verdict in the vocabulary order (unknown ones last). */
export function gradientOrder(name) {
  return gradients.has(name) ? gradients.get(name).index : gradients.size;
}

export function gradientStateNames() {
  return current.gradient_states.map((s) => s.name);
}

export function gradientStateLabel(name) {
  return gradientStates.get(name)?.label ?? String(name);
}

/** A badge word that is not a status: "frozen" or "accepted". */
export function label(key) {
  return current.labels?.[key] ?? key;
}
