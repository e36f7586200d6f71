// The overview pane: banner, filters and the virtual table of one run's
// verdicts. Built once, so that reloads keep the scroll position and focus;
// redrawn from the store when a key it shows changes.

import { el, replace } from "../dom.js";
import { bannerLines } from "../format.js";
import { checkBox, filterBar, statusSelect } from "../filters.js";
import { createStateFilter } from "../match.js";
import { matchesSelection } from "../model.js";
import { displayItems, filterRows, rankRows, sortRows, toggleSort } from "../rows.js";
import { messageBox } from "../shell.js";
import { createVirtualList, renderTableItem, setHeader } from "../table.js";
import { statusNames } from "../vocabulary.js";

/** The overview banner: "3 of 42 trainable variables never updated"; chips filter. */
function renderBanner(node, response, onStatus) {
  const { tone, lines } = bannerLines(response.summary);
  const step = response.step ?? null;
  const logged = response.logged ?? null;
  const facts = [];
  if (step !== null) facts.push(`latest step ${step}`);
  if (logged !== null) facts.push(`${logged} logged record${logged === 1 ? "" : "s"}`);
  const nonTrainable = (response.summary?.variables ?? 0) - (response.summary?.trainable ?? 0);
  if (nonTrainable > 0) facts.push(`${nonTrainable} non-trainable`);
  const line = (l) =>
    l.status && l.status !== "updating"
      ? el("button", {
          type: "button", className: `vu-banner-line vu-banner-line--${l.status}`, title: "Show only these",
          text: l.text, dataset: { status: l.status }, on: { click: () => onStatus(l.status) },
        })
      : el("div", { className: "vu-banner-line", text: l.text });
  replace(
    node,
    el(
      "div",
      { className: `vu-banner vu-banner--${tone}`, attrs: { role: "status" } },
      el("div", { className: "vu-banner-lines" }, lines.map(line)),
      el("div", { className: "vu-banner-facts", text: facts.join(" \u00b7 ") }),
    ),
  );
}

/**
 * Creates the overview in `pane`.
 *
 * Args:
 *   ctx: app.js's context (store, client, latest, warnings, workerUrl, root).
 *
 * Returns:
 *   {show(), response()}: show fetches and draws the selected run.
 */
export function createOverview(pane, ctx) {
  const { store } = ctx;
  const state = store.get();
  const names = createStateFilter(ctx.workerUrl, store);
  let response = null;
  let rows = [];

  const banner = el("div");
  const message = el("div");
  const status = statusSelect(statusNames(), state.status, (value) => store.setState({ status: value }));
  const group = checkBox("group by layer", "Group variables by layer path", state.group, (value) => store.setState({ group: value }));
  const filters = filterBar(state, { label: "Filter variables by name", extras: [status, group.element] }, { filter: (c) => store.setState(c) });
  const head = el("div", { className: "vu-table-head" });
  const body = el("div", { className: "vu-table-body" });
  const table = el("div", { className: "vu-table", attrs: { role: "table", "aria-label": "Variables" } }, head, body);
  const empty = el("div", { className: "vu-table-empty", hidden: true });
  replace(pane, message, banner, filters.element, table, empty);
  const list = createVirtualList(body, (item) =>
    renderTableItem(item, {
      selected: store.get().variable,
      grouped: store.get().group,
      onSelect: (index) => ctx.openDetail(index),
      onToggleGroup: (key) => {
        const collapsed = new Set(store.get().collapsed);
        collapsed.has(key) ? collapsed.delete(key) : collapsed.add(key);
        store.setState({ collapsed: [...collapsed] });
      },
    }),
  );

  function draw() {
    const current = store.get();
    status.value = current.status;
    group.box.checked = current.group;
    filters.sync(current);
    filters.setError(names.answer.error);
    filters.setNote(names.answer.note);
    const shown = filterRows(rows, { status: current.status, matches: names.answer.matches });
    filters.setCount(shown.rows.length, rows.length);
    const sorted = sortRows(shown.rows, current.sort, current.dir);
    setHeader(head, { key: current.sort, dir: current.dir }, (key) => {
      const next = toggleSort({ key: current.sort, dir: current.dir }, key);
      store.setState({ sort: next.key, dir: next.dir });
    });
    const items = displayItems(sorted, { group: current.group, collapsed: new Set(current.collapsed) });
    list.setItems(items);
    body.hidden = !items.length;
    empty.hidden = items.length > 0;
    empty.textContent = rows.length ? "No variable matches the filter." : "No variables tracked.";
  }

  const visible = () => store.get().view === "overview" && response;
  // The name filter may run a regex in a worker: draw when its answer is
  // still the one the state asks for.
  store.subscribe(["query", "regex"], async () => {
    if (visible() && (await names.refresh())) draw();
  });
  store.subscribe(["status", "sort", "dir", "group", "collapsed", "variable"], () => visible() && draw());

  async function show() {
    const started = performance.now();
    const current = store.get();
    let answer;
    try {
      answer = await ctx.latest("variables", ctx.client.variables(current.run, current.tag));
    } catch (err) {
      replace(message, messageBox("error", `Could not load variables of "${current.run}"`, err.message));
      banner.hidden = table.hidden = true;
      return;
    }
    // A late answer for a run the user has since left must not be drawn.
    const now = store.get();
    if (answer.stale || !matchesSelection(answer.value, { run: now.run, tag: now.tag })) return;
    response = answer.value;
    rows = rankRows(response.rows);
    names.setNames(rows.map((r) => r.variable));
    await names.refresh();
    banner.hidden = table.hidden = false;
    replace(message, ctx.warnings.local(response.warnings));
    renderBanner(banner, response, (value) => store.setState({ status: value }));
    draw();
    performance.measure?.("varupdate:overview", { start: started });
    ctx.root.dataset.rendered = `${now.run}|${rows.length}`;
  }

  /** Shows only a message (a run without records), until the next show(). */
  function notice(box) {
    replace(message, box);
    banner.hidden = table.hidden = empty.hidden = true;
  }

  return { show, notice, response: () => response, redraw: () => list.redraw() };
}
