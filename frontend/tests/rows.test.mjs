import test from "node:test";
import assert from "node:assert/strict";

import "./vocabulary-fixture.mjs";

import {
  displayItems, filterCompareRows, filterRows, groupRows, layerOf, makeMatcher, rankRows, sortRows, toggleSort, visibleRange,
} from "../static/rows.js";

function row(variable, status, extra = {}) {
  const trainable = extra.trainable ?? true;
  const severity = extra.severity ?? (["never_updated", "stalled", "non_finite"].includes(status) && trainable ? 2 : 0);
  return {
    variable, status, trainable, severity, gradient: "present", shape: [2, 2],
    first_update_step: null, last_update_step: null, changed_fraction: 0, latest_relative_update: null,
    diagnosis: "", ...extra,
  };
}

// In the server's order (analysis.sort_key), as the variables route sends them.
const SERVER_ORDER = [
  row("model/dense/bias", "never_updated", { changed_fraction: 0 }),
  row("w", "stalled", { latest_relative_update: 0, changed_fraction: 0.5 }),
  row("model/dense_1/kernel", "tiny_updates", { severity: 1, latest_relative_update: 1e-8, changed_fraction: 1 }),
  row("model/bn/moving_mean", "never_updated", { trainable: false }),
  row("model/dense/kernel", "updating", { latest_relative_update: 1e-3, changed_fraction: 1, shape: [8, 4] }),
];
const RANKED = rankRows(SERVER_ORDER);
// Shuffled, as a client-side sort would leave them.
const ROWS = [RANKED[4], RANKED[0], RANKED[3], RANKED[1], RANKED[2]];

test("makeMatcher: substring is case-insensitive", () => {
  const m = makeMatcher("Dense");
  assert.equal(m.error, null);
  assert.equal(m.test("model/dense/kernel"), true);
  assert.equal(m.test("w"), false);
});

test("makeMatcher: a regex matches, an invalid one reports instead of throwing", () => {
  assert.equal(makeMatcher("^model/dense_\\d", true).test("model/dense_1/kernel"), true);
  assert.equal(makeMatcher("^model/dense_\\d", true).test("model/dense/kernel"), false);
  const bad = makeMatcher("dense[", true);
  assert.match(bad.error, /Invalid regular expression "dense\["/);
  assert.equal(bad.test("anything"), true);
});

test("filterRows combines the name filter and the status filter", () => {
  const names = (rows) => rows.map((r) => r.variable);
  assert.deepEqual(names(filterRows(ROWS, { query: "dense", status: "problems" }).rows), ["model/dense/bias"]);
  assert.deepEqual(names(filterRows(ROWS, { status: "never_updated" }).rows), ["model/dense/bias", "model/bn/moving_mean"]);
  assert.deepEqual(names(filterRows(ROWS, { status: "warnings" }).rows), ["model/dense/bias", "w", "model/dense_1/kernel"]);
  assert.equal(filterRows(ROWS, { query: "(", regex: true }).rows.length, ROWS.length);
});

test("sortRows default is the server's order: trainable never_updated first, frozen variables last", () => {
  const order = sortRows(ROWS).map((r) => r.variable);
  assert.deepEqual(order, ["model/dense/bias", "w", "model/dense_1/kernel", "model/bn/moving_mean", "model/dense/kernel"]);
});

test("sortRows by a numeric column keeps nulls last in both directions", () => {
  const asc = sortRows(ROWS, "latest_relative_update", "asc").map((r) => r.latest_relative_update);
  assert.deepEqual(asc, [0, 1e-8, 1e-3, null, null]);
  const desc = sortRows(ROWS, "latest_relative_update", "desc").map((r) => r.latest_relative_update);
  assert.deepEqual(desc, [1e-3, 1e-8, 0, null, null]);
});

test("sortRows by name and by shape, and does not mutate its input", () => {
  const before = ROWS.map((r) => r.variable);
  assert.deepEqual(sortRows(ROWS, "variable", "desc").map((r) => r.variable)[0], "w");
  assert.equal(sortRows(ROWS, "shape", "desc")[0].variable, "model/dense/kernel");
  assert.deepEqual(ROWS.map((r) => r.variable), before);
});

test("toggleSort flips the direction of the same column, numbers start descending", () => {
  assert.deepEqual(toggleSort({ key: "variable", dir: "asc" }, "variable"), { key: "variable", dir: "desc" });
  assert.deepEqual(toggleSort({ key: "variable", dir: "asc" }, "changed_fraction"), { key: "changed_fraction", dir: "desc" });
  assert.deepEqual(toggleSort({ key: "status", dir: "desc" }, "variable"), { key: "variable", dir: "asc" });
});

test("groupRows groups by layer path in order of first appearance", () => {
  assert.equal(layerOf("a/b/c"), "a/b");
  assert.equal(layerOf("w"), "");
  const groups = groupRows(sortRows(ROWS));
  assert.deepEqual(groups.map((g) => [g.key, g.rows.length, g.problems]), [
    ["model/dense", 2, 1], ["", 1, 1], ["model/dense_1", 1, 0], ["model/bn", 1, 0],
  ]);
});

test("displayItems hides the rows of collapsed groups", () => {
  const items = displayItems(sortRows(ROWS), { group: true, collapsed: new Set(["model/dense"]) });
  assert.deepEqual(items.map((i) => (i.kind === "group" ? `[${i.key}${i.collapsed ? "+" : "-"}]` : i.row.variable)), [
    "[model/dense+]", "[-]", "w", "[model/dense_1-]", "model/dense_1/kernel", "[model/bn-]", "model/bn/moving_mean",
  ]);
  assert.equal(displayItems(ROWS).length, ROWS.length);
});

test("visibleRange draws only the rows in view plus overscan", () => {
  assert.deepEqual(visibleRange(0, 340, 34, 2000, 5), { start: 0, end: 15 });
  assert.deepEqual(visibleRange(34 * 1000, 340, 34, 2000, 5), { start: 995, end: 1015 });
  assert.deepEqual(visibleRange(1e9, 340, 34, 2000, 5), { start: 2000, end: 2000 });
  assert.deepEqual(visibleRange(0, 340, 34, 0, 5), { start: 0, end: 0 });
});

test("filterCompareRows keeps disagreeing rows when asked", () => {
  const rows = [
    { variable: "a", disagree: true }, { variable: "b", disagree: false }, { variable: "ab", disagree: false },
  ];
  assert.deepEqual(filterCompareRows(rows, { disagreeOnly: true }).rows.map((r) => r.variable), ["a"]);
  assert.deepEqual(filterCompareRows(rows, { query: "b" }).rows.map((r) => r.variable), ["b", "ab"]);
});
