// The dashboard's remembered selection, as a URL-hash-style string. Pure.

import { VIEWS } from "./constants.js";
import { SORT_KEYS } from "./rows.js";
import { statusNames } from "./vocabulary.js";

export const DEFAULT_STATE = Object.freeze({
  run: null,
  tag: null,
  compare: [], // runs ticked for the compare view
  view: "overview",
  variable: null, // row index (the variables route's `index`) of the variable whose detail is open
  query: "",
  regex: false,
  status: "",
  sort: "problems",
  dir: "asc",
  group: false,
  collapsed: [], // layer paths folded in the grouped table
  disagree: false, // compare view: only rows where runs disagree
  compareVariable: null, // compare view: `compareKey` of the row whose overlaid charts are open
  log: true, // detail charts on a log y axis
});

/**
 * A row index from a saved or linked state, else null. Names are not keys
 * (two variables may share one, or be called ""): an older link that names a
 * variable opens nothing rather than the wrong one.
 */
export function parseIndex(value) {
  if (typeof value === "number") return Number.isSafeInteger(value) && value >= 0 ? value : null;
  return typeof value === "string" && /^[0-9]{1,9}$/.test(value) ? Number(value) : null;
}

/** The compare view's key of a row: its name and which of the rows of that name it is. */
export function compareKey(row) {
  return `${row.occurrence ?? 0}:${row.variable}`;
}

const isStatusFilter = (value) => ["", "problems", "warnings"].includes(value) || statusNames().includes(value);

/** The state as a string like "run=a&view=heatmap", leaving defaults out. */
export function encodeState(state) {
  const params = new URLSearchParams();
  for (const [key, fallback] of Object.entries(DEFAULT_STATE)) {
    const value = state[key];
    if (value === undefined || value === null) continue;
    if (Array.isArray(fallback)) {
      for (const item of value) params.append(key, item);
    } else if (typeof fallback === "boolean") {
      if (value !== fallback) params.set(key, value ? "1" : "0");
    } else if (value !== fallback) {
      params.set(key, String(value));
    }
  }
  return params.toString();
}

/**
 * Parses what `encodeState` wrote (with or without a leading "#"). Unknown
 * keys are ignored and invalid values fall back to defaults: a stale or
 * hand-edited link must never break the dashboard.
 */
export function decodeState(text) {
  const params = new URLSearchParams(String(text || "").replace(/^#/, ""));
  const state = { ...DEFAULT_STATE, compare: [], collapsed: [] };
  for (const [key, fallback] of Object.entries(DEFAULT_STATE)) {
    if (!params.has(key)) continue;
    if (Array.isArray(fallback)) state[key] = params.getAll(key);
    else if (typeof fallback === "boolean") state[key] = params.get(key) === "1";
    else state[key] = params.get(key);
  }
  if (!VIEWS.includes(state.view)) state.view = DEFAULT_STATE.view;
  if (!SORT_KEYS.includes(state.sort)) state.sort = DEFAULT_STATE.sort;
  if (state.dir !== "asc" && state.dir !== "desc") state.dir = DEFAULT_STATE.dir;
  if (!isStatusFilter(state.status)) state.status = DEFAULT_STATE.status;
  state.variable = parseIndex(state.variable);
  return state;
}

/**
 * The state made consistent with the runs the server has: a vanished run is
 * replaced by the first one with problems (else the first run), a tag by the
 * run's first tag, and compare runs that no longer exist are dropped. With
 * `fillCompare`, an empty compare list starts as the first 8 runs (on load,
 * not after the user unticked them all).
 */
export function reconcile(state, runs, fillCompare = true) {
  const names = runs.map((r) => r.run);
  const next = { ...state };
  if (!names.includes(next.run)) {
    const withProblems = runs.find((r) => (r.tags || []).some((t) => t.problems > 0));
    next.run = (withProblems || runs[0] || { run: null }).run;
    next.variable = null;
  }
  const run = runs.find((r) => r.run === next.run);
  const tags = run ? (run.tags || []).map((t) => t.tag) : [];
  if (!tags.includes(next.tag)) {
    next.tag = tags[0] ?? null;
    next.variable = null;
  }
  next.compare = (next.compare || []).filter((name) => names.includes(name));
  if (fillCompare && !next.compare.length) next.compare = names.slice(0, 8);
  return next;
}
