// The words of a verdict (statuses, gradient verdicts, their labels and
// order), as the plugin's `vocabulary` route serves verdicts/vocabulary.py's
// vocabulary(), their one owner: index.js sets them before the app starts,
// and the node tests set them from frontend/tests/vocabulary.json, written
// from Python (tests/test_vocabulary.py keeps it equal). No DOM, no fetching.

const EMPTY = Object.freeze({ statuses: [], gradients: [], gradient_states: [], counted_statuses: [], labels: {} });

let current = EMPTY;

function byName(list) {
  return new Map((list || []).map((item, index) => [item.name, { ...item, index }]));
}
let statuses = byName(current.statuses);
let gradients = byName(current.gradients);
let gradientStates = byName(current.gradient_states);

/**
 * Uses `vocabulary` (the route's answer) from now on.
 * Throws on one without statuses: the dashboard cannot name a verdict without them.
 */
export function setVocabulary(vocabulary) {
  if (!vocabulary || !Array.isArray(vocabulary.statuses) || !vocabulary.statuses.length) {
    throw new Error("the vocabulary route answered without statuses");
  }
  current = { ...EMPTY, ...vocabulary };
  statuses = byName(current.statuses);
  gradients = byName(current.gradients);
  gradientStates = byName(current.gradient_states);
}

/** Status names in the order a user should look at them. */
export function statusNames() {
  return current.statuses.map((s) => s.name);
}

/** The statuses a summary's `by_status` counts, in order. */
export function countedStatuses() {
  return current.counted_statuses.length ? current.counted_statuses : statusNames();
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
