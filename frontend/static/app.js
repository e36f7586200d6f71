// The controller: holds the selection, asks model.js for data and hands it
// to the views. Drops answers for a selection that is no longer current.

import { HEATMAP_BUCKETS, RUN_COLORS, STORAGE_KEY } from "./constants.js";
import { el, replace } from "./dom.js";
import { createHeatmap } from "./heatmap.js";
import { createLatest, matchesSelection } from "./model.js";
import { displayItems, filterCompareRows, filterRows, sortRows, toggleSort } from "./rows.js";
import { decodeState, encodeState, reconcile } from "./state.js";
import { createVirtualList, renderTableItem, setHeader } from "./table.js";
import { compareTools, renderCompare } from "./compare.js";
import { renderCompareDetail, renderDetail, renderDetailMessage } from "./detail.js";
import { buildShell, emptyLogdirMessage, filterBar, messageBox, renderBanner, renderRunPicker, showView } from "./views.js";

function loadState() {
  const standalone = window.parent === window;
  if (standalone && location.hash.length > 1) return decodeState(location.hash);
  try {
    return decodeState(localStorage.getItem(STORAGE_KEY) || "");
  } catch {
    return decodeState("");
  }
}

/**
 * Starts the dashboard in `root`.
 *
 * Args:
 *   client: model.createClient().
 *   initial: state overrides (e.g. from the host's URL data).
 *
 * Returns:
 *   {reload()} for TensorBoard's reload notice and the refresh button.
 */
export function createApp(root, client, initial = {}) {
  let state = { ...loadState(), ...initial };
  let runs = [];
  let rowsResponse = null; // the `variables` answer of the selected run/tag
  let compareResponse = null;
  let compareVariable = null;
  const latest = createLatest();
  const runColors = {};

  const on = {
    run: (run) => update({ run, tag: null, variable: null }, true),
    tag: (tag) => update({ tag, variable: null }, true),
    compare: (run, checked) => {
      const set = new Set(state.compare);
      checked ? set.add(run) : set.delete(run);
      update({ compare: runs.map((r) => r.run).filter((r) => set.has(r)) }, state.view === "compare");
    },
    view: (view) => update({ view }, true),
    refresh: () => reload(),
  };
  const refs = buildShell(root, on);
  const detailOn = {
    close: () => {
      compareVariable = null;
      update({ variable: null });
      refs.detail.hidden = true;
      refreshTable();
      heatmap.select(null);
    },
    log: (log) => {
      update({ log });
      showDetail(false);
    },
  };

  // Overview pane: banner, filters and the virtual table, built once so that
  // reloads keep the scroll position and the focus.
  const banner = el("div");
  const filters = filterBar(state, {
    filter: (change) => {
      update(change);
      refreshTable();
    },
  });
  const tableHead = el("div", { className: "vu-table-head" });
  const tableBody = el("div", { className: "vu-table-body" });
  const overviewMessage = el("div");
  const tableWrap = el("div", { className: "vu-table", attrs: { role: "table", "aria-label": "Variables" } }, tableHead, tableBody);
  const tableEmpty = el("div", { className: "vu-table-empty", hidden: true });
  replace(refs.panes.overview, overviewMessage, banner, filters.element, tableWrap, tableEmpty);
  const list = createVirtualList(tableBody, (item) =>
    renderTableItem(item, {
      selected: state.variable,
      grouped: state.group,
      onSelect: (variable) => openDetail(variable),
      onToggleGroup: (key) => {
        const collapsed = new Set(state.collapsed);
        collapsed.has(key) ? collapsed.delete(key) : collapsed.add(key);
        update({ collapsed: [...collapsed] });
        refreshTable();
      },
    }),
  );
  const heatmapMessage = el("div");
  const heatmapSlot = el("div");
  replace(refs.panes.heatmap, heatmapMessage, heatmapSlot);
  const heatmap = createHeatmap(heatmapSlot, (variable) => openDetail(variable));
  const compareFilters = compareTools(state, {
    filter: (change) => {
      update(change);
      drawCompare();
    },
  });
  const compareSlot = el("div");
  const compareDetail = el("section", { className: "vu-detail", hidden: true });
  replace(refs.panes.compare, compareFilters.element, compareSlot, compareDetail);

  function save() {
    const text = encodeState(state);
    try {
      localStorage.setItem(STORAGE_KEY, text);
    } catch {
      // Storage can be disabled; the selection then lasts for this page only.
    }
    if (window.parent === window) history.replaceState(null, "", text ? `#${text}` : location.pathname);
  }

  function update(change, refetch = false) {
    state = { ...state, ...change };
    if (runs.length) state = reconcile(state, runs, false);
    save();
    if (refetch) {
      renderRunPicker(refs, runs, state, on);
      showCurrent();
    }
  }

  function setMessage(box) {
    replace(refs.message, box);
  }

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
      answer = await latest("runs", client.runs());
    } catch (err) {
      setMessage(messageBox("error", "Could not load runs", err.message));
      return;
    }
    if (answer.stale) return;
    runs = Array.isArray(answer.value.runs) ? answer.value.runs : [];
    runs.forEach((r, i) => (runColors[r.run] = RUN_COLORS[i % RUN_COLORS.length]));
    refs.status.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    state = reconcile(state, runs);
    save();
    renderRunPicker(refs, runs, state, on);
    if (!runs.length) {
      setMessage(emptyLogdirMessage());
      for (const pane of Object.values(refs.panes)) pane.hidden = true;
      refs.detail.hidden = true;
      return;
    }
    setMessage(warningsBox(answer.value.warnings, { global: true }));
    await showCurrent();
  }

  // Warnings of the runs route are shown above every view; a view repeats
  // only the ones that are new to it.
  let runWarnings = new Set();
  function warningsBox(warnings, { global = false } = {}) {
    if (!Array.isArray(warnings)) return null;
    if (global) runWarnings = new Set(warnings.map(String));
    else warnings = warnings.filter((w) => !runWarnings.has(String(w)));
    if (!warnings.length) return null;
    const title = `${warnings.length} record${warnings.length === 1 ? " was" : "s were"} skipped`;
    // Folded: the reasons matter when a run looks wrong, not on every visit.
    return el(
      "details",
      { className: "vu-message vu-message--info vu-warnings" },
      el("summary", { className: "vu-message-title", text: title }),
      warnings.map((w) => el("p", { text: String(w) })),
    );
  }

  async function showCurrent() {
    showView(refs, state.view);
    refs.detail.hidden = state.view === "compare" || !state.variable;
    const run = runs.find((r) => r.run === state.run);
    if (state.view !== "compare" && run && !(run.tags || []).length) {
      const box = messageBox("empty", `Run "${run.run}" has no varupdate records yet`, "Its tracker has not logged a step; reload once training has run.");
      replace(state.view === "overview" ? overviewMessage : heatmapMessage, box);
      return;
    }
    if (state.view === "overview") await showOverview();
    else if (state.view === "heatmap") await showHeatmap();
    else await showCompare();
    if (state.view !== "compare" && state.variable) await showDetail(false);
  }

  async function fetchVariables() {
    const selection = { run: state.run, tag: state.tag };
    const answer = await latest("variables", client.variables(selection.run, selection.tag));
    // A late answer for a run the user has since left must not be drawn.
    if (answer.stale || !matchesSelection(answer.value, { run: state.run, tag: state.tag })) return null;
    rowsResponse = answer.value;
    return rowsResponse;
  }

  async function showOverview() {
    const started = performance.now();
    let response;
    try {
      response = await fetchVariables();
    } catch (err) {
      replace(overviewMessage, messageBox("error", `Could not load variables of "${state.run}"`, err.message));
      banner.hidden = tableWrap.hidden = true;
      return;
    }
    if (!response) return;
    banner.hidden = tableWrap.hidden = false;
    filters.sync(state);
    replace(overviewMessage, warningsBox(response.warnings));
    renderBanner(banner, response, (status) => {
      update({ status });
      filters.setStatus(status);
      refreshTable();
    });
    refreshTable();
    performance.measure?.("varupdate:overview", { start: started });
    root.dataset.rendered = `${state.run}|${(response.rows || []).length}`;
  }

  function refreshTable() {
    const all = rowsResponse?.rows || [];
    const { rows, error } = filterRows(all, state);
    filters.setError(error);
    filters.setCount(rows.length, all.length);
    const sorted = sortRows(rows, state.sort, state.dir);
    setHeader(tableHead, { key: state.sort, dir: state.dir }, (key) => {
      const next = toggleSort({ key: state.sort, dir: state.dir }, key);
      update({ sort: next.key, dir: next.dir });
      refreshTable();
    });
    const items = displayItems(sorted, { group: state.group, collapsed: new Set(state.collapsed) });
    list.setItems(items);
    tableBody.hidden = !items.length;
    tableEmpty.hidden = items.length > 0;
    tableEmpty.textContent = all.length ? "No variable matches the filter." : "No variables tracked.";
  }

  async function showHeatmap() {
    let answer;
    try {
      // No more buckets than records: a bucket narrower than one logging
      // interval could only ever read "not logged".
      const info = runs.find((r) => r.run === state.run)?.tags?.find((t) => t.tag === state.tag);
      const buckets = Math.max(1, Math.min(HEATMAP_BUCKETS, info?.logged || HEATMAP_BUCKETS));
      answer = await latest("heatmap", client.heatmap(state.run, state.tag, buckets));
    } catch (err) {
      replace(heatmapMessage, messageBox("error", `Could not load the heatmap of "${state.run}"`, err.message));
      heatmapSlot.hidden = true;
      return;
    }
    if (answer.stale || !matchesSelection(answer.value, { run: state.run, tag: state.tag })) return;
    heatmapSlot.hidden = false;
    const count = (answer.value.variables || []).length;
    replace(
      heatmapMessage,
      warningsBox(answer.value.warnings),
      count ? null : messageBox("info", "No variables tracked in this record"),
    );
    heatmap.update(answer.value, state.variable);
    // Like `rendered` for the table: the canvas now holds this run's cells
    // (browser tests and benchmarks/dashboard.py wait for it).
    root.dataset.heatmapRendered = `${state.run}|${count}`;
  }

  async function showCompare() {
    if (state.compare.length < 2) {
      replace(compareSlot, messageBox("info", "Pick runs to compare", "Tick two or more runs in the list on the left."));
      compareDetail.hidden = true;
      return;
    }
    let answer;
    try {
      answer = await latest("compare", client.compare(state.tag, state.compare));
    } catch (err) {
      replace(compareSlot, messageBox("error", "Could not compare runs", err.message));
      return;
    }
    if (answer.stale) return;
    compareResponse = answer.value;
    drawCompare();
    if (compareVariable) await showCompareDetail();
  }

  function drawCompare() {
    if (!compareResponse) return;
    const all = compareResponse.rows || [];
    compareFilters.sync(state);
    const { rows, error } = filterCompareRows(all, { disagreeOnly: state.disagree, query: state.query, regex: state.regex });
    compareFilters.setCounts(all.filter((r) => r.disagree).length, rows.length, all.length);
    const scrollTop = compareSlot.querySelector(".vu-compare-wrap")?.scrollTop ?? 0;
    renderCompare(compareSlot, { response: compareResponse, rows, state, selected: compareVariable, error, runColors }, {
      cell: (variable) => {
        compareVariable = variable;
        drawCompare();
        showCompareDetail(true);
      },
    });
    const wrap = compareSlot.querySelector(".vu-compare-wrap");
    if (wrap) wrap.scrollTop = scrollTop;
  }

  async function showCompareDetail(scroll = false) {
    const name = compareVariable;
    const runsShown = (compareResponse?.runs || []).filter((run) => {
      const row = (compareResponse.rows || []).find((r) => r.variable === name);
      return row?.statuses?.[run];
    });
    const closeOn = {
      close: () => {
        compareVariable = null;
        compareDetail.hidden = true;
        drawCompare();
      },
      log: (log) => {
        update({ log });
        showCompareDetail();
      },
    };
    let responses;
    try {
      const answer = await latest(
        "compare-detail",
        Promise.all(runsShown.map(async (run) => ({ run, response: await client.series(run, compareResponse.tag, [name]) }))),
      );
      if (answer.stale || compareVariable !== name) return;
      responses = answer.value;
    } catch (err) {
      compareDetail.hidden = false;
      replace(compareDetail, messageBox("error", `Could not load the series of ${name}`, err.message));
      return;
    }
    renderCompareDetail(compareDetail, { name, responses, state, runColors }, closeOn);
    if (scroll) compareDetail.scrollIntoView({ block: "nearest" });
  }

  function openDetail(variable) {
    update({ variable });
    refreshTable();
    heatmap.select(variable);
    showDetail(true);
  }

  async function showDetail(scroll) {
    const name = state.variable;
    if (!name) return;
    const selection = { run: state.run, tag: state.tag };
    const key = `${selection.run}\n${selection.tag}\n${name}`;
    // A reload redraws the open detail in place; a placeholder in between
    // would shrink the page and lose the user's scroll position.
    if (refs.detail.dataset.key !== key || refs.detail.hidden) {
      renderDetailMessage(refs.detail, name, messageBox("info", "Loading\u2026"), detailOn);
    }
    refs.detail.dataset.key = key;
    let rows;
    let series;
    try {
      rows = rowsResponse && matchesSelection(rowsResponse, selection) ? rowsResponse : await client.variables(selection.run, selection.tag);
      const answer = await latest("series", client.series(selection.run, selection.tag, [name]));
      if (answer.stale) return;
      series = answer.value;
    } catch (err) {
      if (state.variable === name) renderDetailMessage(refs.detail, name, messageBox("error", `Could not load ${name}`, err.message), detailOn);
      return;
    }
    if (state.variable !== name || !matchesSelection(series, { run: state.run, tag: state.tag })) return;
    const row = (rows.rows || []).find((r) => r.variable === name) || null;
    renderDetail(refs.detail, { row, name, response: series, state }, detailOn);
    if (scroll) refs.detail.scrollIntoView({ block: "nearest" });
  }

  let resizeTimer = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      list.redraw();
      if (state.view === "heatmap") heatmap.redraw();
    }, 150);
  });

  loadRuns();
  return { reload, redrawCharts: () => showCurrent() };
}
