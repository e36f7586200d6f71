import test from "node:test";
import assert from "node:assert/strict";

import { createStore } from "../static/store.js";

test("setState saves once and tells only the subscribers whose keys changed", () => {
  const saved = [];
  const store = createStore({ run: "a", query: "", compare: ["a"] }, { save: (s) => saved.push(s) });
  const calls = [];
  store.subscribe(["query"], (s, changed) => calls.push(["query", s.query, [...changed]]));
  store.subscribe(["run"], (s) => calls.push(["run", s.run]));
  store.subscribe(["*"], () => calls.push(["any"]));
  store.setState({ query: "dense" });
  assert.deepEqual(calls, [["query", "dense", ["query"]], ["any"]]);
  assert.equal(saved.length, 1);
  // Nothing changed (arrays compared by value): no save, no call.
  calls.length = 0;
  assert.equal(store.setState({ query: "dense", compare: ["a"] }).size, 0);
  assert.deepEqual(calls, []);
  assert.equal(saved.length, 1);
});

test("normalize runs on every change and its own changes are reported", () => {
  const store = createStore({ run: "a", variable: "w" }, {
    normalize: (s) => (s.run === "gone" ? { ...s, run: "a", variable: null } : s),
  });
  const changed = store.setState({ run: "gone" });
  assert.deepEqual([...changed], ["variable"]);
  assert.deepEqual(store.get(), { run: "a", variable: null });
  assert.throws(() => {
    store.get().run = "x";
  });
});

test("a subscriber's own setState is delivered after the current round", () => {
  const store = createStore({ a: 0, b: 0 });
  const order = [];
  store.subscribe(["a"], (s) => {
    order.push(`a=${s.a}`);
    if (s.a === 1) store.setState({ b: 1 });
  });
  store.subscribe(["a", "b"], (s) => order.push(`ab=${s.a},${s.b}`));
  store.setState({ a: 1 });
  assert.deepEqual(order, ["a=1", "ab=1,1", "ab=1,1"]);
});
