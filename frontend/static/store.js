// The dashboard's state as a small store: `setState` merges a change, makes it
// consistent, saves it and tells the views whose keys changed. No DOM.

function same(a, b) {
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((v, i) => v === b[i]);
  return a === b;
}

/**
 * Creates a store.
 *
 * Args:
 *   initial: the first state (a plain object).
 *   options.normalize: (state) -> state, applied after every change (e.g.
 *     state.reconcile against the runs the server has).
 *   options.save: (state) -> void, called once per change that changed something.
 *
 * Returns:
 *   {get(), setState(change), subscribe(keys, fn) -> unsubscribe}. `fn(state,
 *   changed)` runs once per setState whose change touched one of `keys`
 *   ("*" for any), in subscription order; `changed` is a Set of keys.
 */
export function createStore(initial, { normalize = (s) => s, save = () => {} } = {}) {
  let state = Object.freeze({ ...initial });
  const listeners = [];
  let notifying = false;
  const queued = [];

  function notify(changed) {
    queued.push(changed);
    if (notifying) return; // a listener's own setState runs after this round
    notifying = true;
    try {
      while (queued.length) {
        const keys = queued.shift();
        for (const { wanted, fn } of [...listeners]) {
          if (wanted.has("*") || [...keys].some((k) => wanted.has(k))) fn(state, keys);
        }
      }
    } finally {
      notifying = false;
    }
  }

  return {
    get: () => state,
    setState(change) {
      const next = normalize({ ...state, ...change });
      const changed = new Set(Object.keys({ ...state, ...next }).filter((k) => !same(state[k], next[k])));
      if (!changed.size) return changed;
      state = Object.freeze({ ...next });
      save(state);
      notify(changed);
      return changed;
    },
    subscribe(keys, fn) {
      const entry = { wanted: new Set(keys), fn };
      listeners.push(entry);
      return () => listeners.splice(listeners.indexOf(entry), 1);
    },
  };
}
