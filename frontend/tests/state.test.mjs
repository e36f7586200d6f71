import test from "node:test";
import assert from "node:assert/strict";

import "./vocabulary-fixture.mjs";

import { DEFAULT_STATE, compareKey, decodeState, encodeState, parseIndex, reconcile } from "../static/state.js";

test("encodeState leaves defaults out and round-trips through decodeState", () => {
  assert.equal(encodeState(DEFAULT_STATE), "");
  const state = {
    ...DEFAULT_STATE, run: "run a&b", tag: "varupdate/model", compare: ["x", "y,z"], view: "heatmap",
    variable: 3, query: "dense[", regex: true, sort: "variable", dir: "desc", log: false,
    collapsed: ["model/dense"],
  };
  const text = encodeState(state);
  assert.match(text, /run=run\+a%26b/);
  assert.deepEqual(decodeState("#" + text), state);
});

test("the open variable is a row index: 0 is one, a name (older links) opens none", () => {
  assert.equal(decodeState("#" + encodeState({ ...DEFAULT_STATE, variable: 0 })).variable, 0);
  assert.equal(decodeState("variable=dense%2Fkernel").variable, null);
  assert.equal(decodeState("variable=").variable, null);
  assert.equal(decodeState("variable=-1").variable, null);
  assert.equal(parseIndex(2), 2);
  assert.equal(parseIndex(1.5), null);
});

test("compare rows are keyed by name and occurrence, so two of one name (or \"\") differ", () => {
  assert.notEqual(compareKey({ variable: "x", occurrence: 0 }), compareKey({ variable: "x", occurrence: 1 }));
  assert.equal(compareKey({ variable: "", occurrence: 0 }), "0:");
});

test("decodeState falls back to defaults for invalid values and ignores unknown keys", () => {
  const state = decodeState("view=bogus&sort=nope&dir=sideways&status=weird&evil=1&group=1");
  assert.equal(state.view, "overview");
  assert.equal(state.sort, "problems");
  assert.equal(state.dir, "asc");
  assert.equal(state.status, "");
  assert.equal(state.group, true);
  assert.equal("evil" in state, false);
  assert.deepEqual(decodeState(""), { ...DEFAULT_STATE, compare: [], collapsed: [] });
});

const RUNS = [
  { run: "fixed", tags: [{ tag: "varupdate/model", problems: 0 }] },
  { run: "rebinding", tags: [{ tag: "varupdate/model", problems: 1 }, { tag: "varupdate/other", problems: 0 }] },
];

test("reconcile picks the first run with problems when the remembered run is gone", () => {
  const next = reconcile({ ...DEFAULT_STATE, run: "deleted", variable: "w", compare: ["deleted"] }, RUNS);
  assert.equal(next.run, "rebinding");
  assert.equal(next.tag, "varupdate/model");
  assert.equal(next.variable, null);
  assert.deepEqual(next.compare, ["fixed", "rebinding"]);
});

test("reconcile keeps a valid selection untouched", () => {
  const state = { ...DEFAULT_STATE, run: "rebinding", tag: "varupdate/other", variable: "w", compare: ["fixed"] };
  assert.deepEqual(reconcile(state, RUNS), state);
  assert.equal(reconcile({ ...DEFAULT_STATE }, []).run, null);
  assert.deepEqual(reconcile({ ...state, compare: [] }, RUNS, false).compare, []);
});
