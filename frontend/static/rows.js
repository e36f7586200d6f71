// Pure table logic: filter, sort, group by layer and virtual windows. No DOM.

import { shapeSize } from "./format.js";
import { gradientOrder, statusOrder } from "./vocabulary.js";

/**
 * A name matcher from the filter box.
 *
 * Returns:
 *   {test(name) -> bool, error: string|null}. An invalid regex never throws:
 *   it matches everything and carries a message for the user.
 */
export function makeMatcher(text, regex = false) {
  const query = (text || "").trim();
  if (!query) return { test: () => true, error: null };
  if (regex) {
    try {
      const re = new RegExp(query, "i");
      return { test: (name) => re.test(name), error: null };
    } catch (err) {
      return { test: () => true, error: `Invalid regular expression ${JSON.stringify(query)}: ${err.message}` };
    }
  }
  const needle = query.toLowerCase();
  return { test: (name) => name.toLowerCase().includes(needle), error: null };
}

/**
 * Whether a row passes the status filter: "" (all), "problems" (severity 2),
 * "warnings" (severity >= 1) or a status name.
 */
export function matchesStatus(row, status) {
  if (!status) return true;
  if (status === "problems") return row.severity === 2;
  if (status === "warnings") return row.severity >= 1;
  return row.status === status;
}

/**
 * Rows passing the name and status filters, and the filter's error if any.
 * `matches` (a Set of names, from match.js) replaces the name filter when given.
 */
export function filterRows(rows, { query = "", regex = false, status = "", matches = null } = {}) {
  const matcher = matches ? { test: (name) => matches.has(name), error: null } : makeMatcher(query, regex);
  return { rows: rows.filter((r) => matcher.test(r.variable) && matchesStatus(r, status)), error: matcher.error };
}

/**
 * The rows of a `variables` answer, each with its `rank` in the server's
 * order (analysis.sort_key: severity, status, name), which every sort keeps
 * as its tie-breaker: the order is decided once, in the backend.
 */
export function rankRows(rows) {
  return (rows || []).map((row, rank) => ({ ...row, rank }));
}

// Each sortable column maps a row to a comparable value; null sorts last
// whichever the direction, so "never changed" never hides the data.
const SORT_VALUES = {
  problems: null, // the server's order: severity, status, name
  variable: (r) => r.variable,
  status: (r) => [-r.severity, statusOrder(r.status)],
  gradient: (r) => gradientOrder(r.gradient),
  shape: (r) => shapeSize(r.shape),
  trainable: (r) => (r.trainable ? 1 : 0),
  first_update_step: (r) => r.first_update_step,
  last_update_step: (r) => r.last_update_step,
  changed_fraction: (r) => r.changed_fraction,
  latest_relative_update: (r) => r.latest_relative_update,
  diagnosis: (r) => r.diagnosis,
};
export const SORT_KEYS = Object.keys(SORT_VALUES);

function compareValues(a, b) {
  if (Array.isArray(a)) {
    for (let i = 0; i < a.length; i++) {
      const c = compareValues(a[i], b[i]);
      if (c) return c;
    }
    return 0;
  }
  if (typeof a === "string") return a.localeCompare(b);
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The server's problems-first order (`rankRows`), kept as the tie-breaker of every sort. */
function problemsOrder(a, b) {
  return (a.rank ?? 0) - (b.rank ?? 0);
}

/** A sorted copy of rows; `dir` is "asc" or "desc". Unknown keys sort as "problems". */
export function sortRows(rows, key = "problems", dir = "asc") {
  const value = SORT_VALUES[key];
  const sign = dir === "desc" ? -1 : 1;
  return [...rows].sort((a, b) => {
    if (!value) return sign * problemsOrder(a, b);
    const va = value(a);
    const vb = value(b);
    const na = va === null || va === undefined;
    const nb = vb === null || vb === undefined;
    if (na || nb) return na && nb ? problemsOrder(a, b) : na ? 1 : -1;
    return sign * compareValues(va, vb) || problemsOrder(a, b);
  });
}

/** The next sort state after a click on a column header. */
export function toggleSort(current, key) {
  if (current.key === key) return { key, dir: current.dir === "asc" ? "desc" : "asc" };
  // Numbers are most interesting largest first; names alphabetically.
  const descFirst = ["changed_fraction", "latest_relative_update", "shape", "last_update_step"].includes(key);
  return { key, dir: descFirst ? "desc" : "asc" };
}

/** The layer path of a variable name: everything before its last "/". */
export function layerOf(name) {
  const cut = name.lastIndexOf("/");
  return cut > 0 ? name.slice(0, cut) : "";
}

/**
 * Groups sorted rows by layer path, groups in order of their first row (so a
 * problems-first sort puts the layers with problems first).
 *
 * Returns:
 *   [{key, rows, problems}] where key is the layer path ("" for top level).
 */
export function groupRows(rows) {
  const groups = new Map();
  for (const row of rows) {
    const key = layerOf(row.variable);
    if (!groups.has(key)) groups.set(key, { key, rows: [], problems: 0 });
    const group = groups.get(key);
    group.rows.push(row);
    if (row.severity === 2) group.problems += 1;
  }
  return [...groups.values()];
}

/**
 * The flat list the virtual table draws: rows, or group headers each followed
 * by its rows unless collapsed.
 */
export function displayItems(rows, { group = false, collapsed = new Set() } = {}) {
  if (!group) return rows.map((row) => ({ kind: "row", row }));
  const items = [];
  for (const g of groupRows(rows)) {
    const isCollapsed = collapsed.has(g.key);
    items.push({ kind: "group", key: g.key, count: g.rows.length, problems: g.problems, collapsed: isCollapsed });
    if (!isCollapsed) for (const row of g.rows) items.push({ kind: "row", row });
  }
  return items;
}

/**
 * The slice of a virtual list to draw for a scroll position.
 *
 * Returns:
 *   {start, end} (end exclusive) including `overscan` items on each side.
 */
export function visibleRange(scrollTop, viewportHeight, itemHeight, count, overscan = 0) {
  if (count <= 0 || itemHeight <= 0) return { start: 0, end: 0 };
  const first = Math.floor(Math.max(0, scrollTop) / itemHeight);
  const last = Math.ceil((Math.max(0, scrollTop) + Math.max(0, viewportHeight)) / itemHeight);
  return { start: Math.max(0, Math.min(count, first - overscan)), end: Math.min(count, last + overscan) };
}

/** Compare rows filtered to those where runs disagree, when asked (`matches` as in filterRows). */
export function filterCompareRows(rows, { disagreeOnly = false, query = "", regex = false, matches = null } = {}) {
  const matcher = matches ? { test: (name) => matches.has(name), error: null } : makeMatcher(query, regex);
  return { rows: rows.filter((r) => (!disagreeOnly || r.disagree) && matcher.test(r.variable)), error: matcher.error };
}
