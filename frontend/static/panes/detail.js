// The detail panel of one variable of the selected run (below the overview
// and the heatmap): facts and diagnosis from its verdict row, charts from the
// series route. Follows `variable` and `log` in the store.

import { renderDetail, renderDetailMessage } from "../detail.js";
import { matchesSelection } from "../model.js";
import { messageBox } from "../shell.js";

/** Creates the detail controller over `node`; returns {show(scroll)}. */
export function createDetailPane(node, ctx) {
  const { store } = ctx;
  const on = {
    close: () => store.setState({ variable: null }),
    log: (log) => store.setState({ log }),
  };

  async function show(scroll) {
    const state = store.get();
    // The row index, not the name: 0 and a variable called "" are selections too.
    const index = state.variable;
    if (index == null || state.view === "compare") {
      node.hidden = true;
      return;
    }
    const selection = { run: state.run, tag: state.tag };
    const known = ctx.variables();
    const knownRow = known && matchesSelection(known, selection) ? (known.rows || []).find((r) => r.index === index) : null;
    let name = knownRow ? knownRow.variable : `#${index}`;
    const key = `${selection.run}\n${selection.tag}\n${index}`;
    // A reload redraws the open detail in place; a placeholder in between
    // would shrink the page and lose the user's scroll position.
    if (node.dataset.key !== key || node.hidden) renderDetailMessage(node, name, messageBox("info", "Loading\u2026"), on);
    node.dataset.key = key;
    let rows;
    let series;
    try {
      rows = known && matchesSelection(known, selection) ? known : await ctx.client.variables(selection.run, selection.tag);
      const answer = await ctx.latest("series", ctx.client.series(selection.run, selection.tag, [index]));
      if (answer.stale) return;
      series = answer.value;
    } catch (err) {
      if (store.get().variable === index) renderDetailMessage(node, name, messageBox("error", `Could not load ${name}`, err.message), on);
      return;
    }
    const now = store.get();
    if (now.variable !== index || !matchesSelection(series, { run: now.run, tag: now.tag })) return;
    const row = (rows.rows || []).find((r) => r.index === index) || null;
    if (row) name = row.variable;
    const one = series.by_index?.[String(index)];
    renderDetail(node, { row, name, series: one, response: series, state: now }, on);
    if (scroll) node.scrollIntoView({ block: "nearest" });
  }

  store.subscribe(["variable"], (state) => (state.variable != null ? show(true) : (node.hidden = true)));
  store.subscribe(["log"], (state) => state.view !== "compare" && state.variable != null && show(false));
  return { show };
}
