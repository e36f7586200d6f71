// The name filter, typed or deep-linked: a substring match on the page, a
// regular expression in a Worker with a time budget. Whatever the pattern, the
// tab stays responsive: a regex that overruns the budget is stopped and the
// filter falls back to a plain substring match, with a note saying so.

import { makeMatcher } from "./rows.js";

// Long enough for a worker to start on a busy machine and match 10,000
// names; short enough that a stuck pattern is given up on before a user waits.
export const REGEX_BUDGET_MS = 1500;

/**
 * A name filter over the names of one answer.
 *
 * Args:
 *   workerUrl: URL of match-worker.js.
 *   budgetMs: how long a regex may run before it is stopped.
 *
 * Returns:
 *   {match(names, query, regex) -> Promise<{matches: Set|null, error, note}>}:
 *   `matches` null means every name; `error` an invalid pattern; `note` the
 *   fallback to a substring match; `{superseded: true}` when a newer call
 *   replaced this one. Answers are cached per names and query.
 */
export function createNameFilter(workerUrl, budgetMs = REGEX_BUDGET_MS) {
  let worker = null;
  let nextId = 0;
  let cached = { names: null, key: null, answer: null };

  function substring(names, query, note = null) {
    const matcher = makeMatcher(query, false);
    return { matches: new Set(names.filter((n) => matcher.test(n))), error: null, note };
  }

  let pending = null; // {resolve, timer} of the regex in flight

  function stop(result) {
    if (!pending) return;
    clearTimeout(pending.timer);
    // Stopping the worker is the only way to stop a running regex.
    worker?.terminate();
    worker = null;
    const { resolve } = pending;
    pending = null;
    resolve(result);
  }

  function runInWorker(names, re) {
    // A newer filter replaces one still running (typing fast over a slow pattern).
    stop({ superseded: true });
    return new Promise((resolve) => {
      if (!worker) worker = new Worker(workerUrl);
      const id = ++nextId;
      pending = { resolve, timer: setTimeout(() => stop(null), budgetMs) };
      worker.onmessage = (event) => {
        if (event.data.id !== id || !pending) return;
        clearTimeout(pending.timer);
        pending = null;
        resolve(new Set(event.data.matched.map((i) => names[i])));
      };
      worker.onerror = () => stop(null);
      worker.postMessage({ id, source: re.source, flags: re.flags, names });
    });
  }

  async function compute(names, query, regex) {
    const text = (query || "").trim();
    if (!text) return { matches: null, error: null, note: null };
    if (!regex) return substring(names, text);
    const checked = makeMatcher(text, true); // compiles only: building a RegExp never backtracks
    if (checked.error) return { matches: null, error: checked.error, note: null };
    const found = await runInWorker(names, new RegExp(text, "i"));
    if (found?.superseded) return found;
    if (found) return { matches: found, error: null, note: null };
    return substring(
      names, text,
      `The regular expression took longer than ${budgetMs / 1000} s on these names and was stopped; showing names that contain it as plain text instead.`,
    );
  }

  return {
    async match(names, query, regex) {
      const key = `${regex ? 1 : 0}\n${query}`;
      if (cached.names === names && cached.key === key) return cached.answer;
      const answer = await compute(names, query, regex);
      // {superseded: true}: a newer call is running; its caller draws instead.
      if (!answer.superseded) cached = { names, key, answer };
      return answer;
    },
  };
}

/**
 * The name filter of one pane, following the store's `query` and `regex`.
 *
 * Returns:
 *   {answer, setNames(names), refresh() -> Promise<bool>}: refresh matches
 *   the current names against the current state and keeps the answer if
 *   nothing changed meanwhile (true: draw it).
 */
export function createStateFilter(workerUrl, store) {
  const filter = createNameFilter(workerUrl);
  let names = [];
  let answer = { matches: null, error: null, note: null };
  return {
    get answer() {
      return answer;
    },
    setNames(next) {
      names = next;
    },
    async refresh() {
      const asked = store.get();
      const forNames = names;
      const next = await filter.match(forNames, asked.query, asked.regex);
      const now = store.get();
      if (next.superseded || forNames !== names || now.query !== asked.query || now.regex !== asked.regex) return false;
      answer = next;
      return true;
    },
  };
}
