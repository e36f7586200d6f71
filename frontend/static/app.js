// The controller: the store, the runs, and which pane is shown. Each pane
// (panes/) fetches and draws its own view and redraws itself from the store;
// this module only loads the runs and switches views.

import { RUN_COLORS, STORAGE_KEY } from "./constants.js";
import { replace } from "./dom.js";
import { createLatest } from "./model.js";
import { createComparePane } from "./panes/compare.js";
import { createDetailPane } from "./panes/detail.js";
import { createHeatmapPane } from "./panes/heatmap.js";
import { createOverview } from "./panes/overview.js";
import { buildShell, createWarnings, emptyLogdirMessage, messageBox, renderRunPicker, showView } from "./shell.js";
import { decodeState, encodeState, reconcile } from "./state.js";
import { createStore } from "./store.js";

function loadState() {
  const standalone = window.parent === window;
  if (standalone && location.hash.length > 1) return decodeState(location.hash);
  try {
    return decodeState(localStorage.getItem(STORAGE_KEY) || "");
  } catch {
    return decodeState("");
  }
}

function saveState(state) {
  const text = encodeState(state);
  try {
    localStorage.setItem(STORAGE_KEY, text);
  } catch {
    // Storage can be disabled; the selection then lasts for this page only.
  }
  if (window.parent === window) history.replaceState(null, "", text ? `#${text}` : location.pathname);
}

/**
 * Starts the dashboard in `root`.
 *
 * Args:
 *   client: model.createClient().
 *   initial: state overrides (e.g. from the host's URL data).
 *
 * Returns:
 *   {reload(), redrawCharts()} for TensorBoard's reload notice and theme changes.
 */
export function createApp(root, client, initial = {}) {
  let runs = [];
  // A Map, not an object: a run may be called `__proto__` or `constructor`.
  const runColors = new Map();
  const store = createStore({ ...loadState(), ...initial }, {
    normalize: (state) => (runs.length ? reconcile(state, runs, false) : state),
    save: saveState,
  });
  const on = {
    run: (run) => store.setState({ run, tag: null, variable: null }),
    tag: (tag) => store.setState({ tag, variable: null }),
    compare: (run, checked) => {
      const set = new Set(store.get().compare);
      checked ? set.add(run) : set.delete(run);
      store.setState({ compare: runs.map((r) => r.run).filter((r) => set.has(r)) });
    },
    view: (view) => store.setState({ view }),
    refresh: () => reload(),
  };
  const refs = buildShell(root, on);
  const ctx = {
    store, client, root, runColors,
    latest: createLatest(),
    warnings: createWarnings(),
    workerUrl: new URL("./match-worker.js", import.meta.url),
    runs: () => runs,
    variables: () => panes.overview.response(),
    // `index`: the row's index; a name is no key (two may share one, or be "").
    openDetail: (index) => store.setState({ variable: index }),
  };
  const panes = {
    overview: createOverview(refs.panes.overview, ctx),
    heatmap: createHeatmapPane(refs.panes.heatmap, ctx),
    compare: createComparePane(refs.panes.compare, ctx),
  };
  const detail = createDetailPane(refs.detail, ctx);

  store.subscribe(["run", "tag", "compare"], (state) => renderRunPicker(refs, runs, state, runColors, on));
  let loading = false; // loadRuns draws once itself, after reconciling the state
  store.subscribe(["run", "tag", "view", "compare"], (state, changed) => {
    if (loading) return;
    // Ticking runs redraws only the compare view, and only when it is shown.
    if (changed.has("run") || changed.has("tag") || changed.has("view") || state.view === "compare") showCurrent();
  });

  async function reload() {
    client.clear();
    refs.refresh.disabled = true;
    try {
      await loadRuns();
    } finally {
      refs.refresh.disabled = false;
    }
  }

  async function loadRuns() {
    let answer;
    try {
      answer = await ctx.latest("runs", client.runs());
    } catch (err) {
      replace(refs.message, messageBox("error", "Could not load runs", err.message));
      return;
    }
    if (answer.stale) return;
    runs = Array.isArray(answer.value.runs) ? answer.value.runs : [];
    runs.forEach((r, i) => runColors.set(r.run, RUN_COLORS[i % RUN_COLORS.length]));
    refs.status.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    // The data changed, not only the state: draw once, below.
    loading = true;
    try {
      store.setState(reconcile(store.get(), runs));
    } finally {
      loading = false;
    }
    renderRunPicker(refs, runs, store.get(), runColors, on);
    if (!runs.length) {
      replace(refs.message, emptyLogdirMessage());
      for (const pane of Object.values(refs.panes)) pane.hidden = true;
      refs.detail.hidden = true;
      return;
    }
    replace(refs.message, ctx.warnings.global(answer.value.warnings));
    await showCurrent();
  }

  async function showCurrent() {
    const state = store.get();
    showView(refs, state.view);
    refs.detail.hidden = state.view === "compare" || state.variable == null;
    const run = runs.find((r) => r.run === state.run);
    if (state.view !== "compare" && run && !(run.tags || []).length) {
      const box = messageBox("empty", `Run "${run.run}" has no varupdate records yet`, "Its tracker has not logged a step; reload once training has run.");
      panes[state.view].notice(box);
      return;
    }
    await panes[state.view].show();
    if (state.view !== "compare" && state.variable != null) await detail.show(false);
  }

  let resizeTimer = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      panes.overview.redraw();
      if (store.get().view === "heatmap") panes.heatmap.redraw();
    }, 150);
  });

  loadRuns();
  return { reload, redrawCharts: () => showCurrent() };
}
