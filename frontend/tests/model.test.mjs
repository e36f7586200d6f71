import test from "node:test";
import assert from "node:assert/strict";

import { ApiError, createClient, createLatest, matchesSelection, routeUrl } from "../static/model.js";

function fakeFetch(routes) {
  const calls = [];
  const impl = async (url) => {
    calls.push(url);
    const answer = routes[url.split("?")[0]];
    if (answer instanceof Error) throw answer;
    const { status = 200, body } = answer;
    return { ok: status < 400, status, statusText: "x", text: async () => (typeof body === "string" ? body : JSON.stringify(body)) };
  };
  return { impl, calls };
}

test("routeUrl repeats array parameters and skips missing ones", () => {
  assert.equal(routeUrl("runs"), "runs");
  assert.equal(routeUrl("series", { run: "a b", tag: null, variable: ["x/y", "<z>"] }), "series?run=a+b&variable=x%2Fy&variable=%3Cz%3E");
});

test("series asks by row index, so 0 and two variables of one name are reachable", async () => {
  const { impl, calls } = fakeFetch({ series: { body: { by_index: {} } } });
  const client = createClient({ fetchImpl: impl });
  await client.series("r", "t", [0, 1]);
  assert.deepEqual(calls, ["series?run=r&tag=t&index=0&index=1"]);
});

test("the client caches answers until clear()", async () => {
  const { impl, calls } = fakeFetch({ runs: { body: { runs: [] } } });
  const client = createClient({ fetchImpl: impl });
  assert.deepEqual(await client.runs(), { runs: [] });
  await client.runs();
  assert.equal(calls.length, 1);
  client.clear();
  await client.runs();
  assert.equal(calls.length, 2);
});

test("a JSON error body becomes an ApiError with the server's message, and is not cached", async () => {
  const { impl, calls } = fakeFetch({ "data/variables": { status: 404, body: { error: "no run named 'x'" } } });
  const client = createClient({ fetchImpl: impl, base: "data/" });
  await assert.rejects(client.variables("x", "t"), (err) => {
    assert.ok(err instanceof ApiError);
    assert.equal(err.status, 404);
    assert.equal(err.message, "The server answered 404 for data/variables: no run named 'x'");
    return true;
  });
  await assert.rejects(client.variables("x", "t"));
  assert.equal(calls.length, 2);
});

test("an HTML 500 page, a non-JSON 200 and a network failure all read clearly", async () => {
  const { impl } = fakeFetch({
    heatmap: { status: 500, body: "<html>Internal Server Error</html>" },
    compare: { status: 200, body: "not json" },
    runs: new TypeError("Failed to fetch"),
  });
  const client = createClient({ fetchImpl: impl });
  await assert.rejects(client.heatmap("r", "t", 10), /answered 500 for heatmap: <html>Internal Server Error/);
  await assert.rejects(client.compare("t", ["a", "b"]), /not JSON for compare/);
  await assert.rejects(client.runs(), /Could not reach TensorBoard \(Failed to fetch\)/);
});

test("createLatest drops an answer overtaken by a newer request of the same slot", async () => {
  const latest = createLatest();
  let resolveOld;
  const old = latest("variables", new Promise((r) => (resolveOld = r)));
  const fresh = latest("variables", Promise.resolve("run b"));
  const other = latest("heatmap", Promise.resolve("kept"));
  resolveOld("run a");
  assert.deepEqual(await old, { stale: true });
  assert.deepEqual(await fresh, { stale: false, value: "run b" });
  assert.deepEqual(await other, { stale: false, value: "kept" });
  const failedOld = latest("x", Promise.reject(new Error("boom")));
  latest("x", Promise.resolve(1));
  assert.deepEqual(await failedOld, { stale: true });
});

test("matchesSelection rejects a response for another run", () => {
  assert.equal(matchesSelection({ run: "a", tag: "t" }, { run: "a", tag: "t" }), true);
  assert.equal(matchesSelection({ run: "a", tag: "t" }, { run: "b", tag: "t" }), false);
  assert.equal(matchesSelection(null, { run: "a" }), false);
});
