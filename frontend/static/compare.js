// DOM of the compare view: its filters and the variables x runs matrix. No fetching.

import { GRADIENT_LABELS, STATUS_LABELS } from "./constants.js";
import { el, replace } from "./dom.js";
import { statusBadge } from "./table.js";
import { messageBox } from "./views.js";

/** The compare view's filters, built once so typing keeps focus. */
export function compareTools(state, on) {
  const count = el("span", { className: "vu-dim vu-count" });
  const disagreeLabel = el("span", { text: "only rows where runs disagree" });
  const input = el("input", {
    className: "vu-input", type: "search", placeholder: "Filter variables (substring or regex)", value: state.query,
    attrs: { "aria-label": "Filter compared variables" }, on: { input: (e) => on.filter({ query: e.target.value }) },
  });
  const element = el(
    "div",
    { className: "vu-filters" },
    input,
    el(
      "label",
      { className: "vu-check" },
      el("input", { type: "checkbox", checked: state.disagree, on: { change: (e) => on.filter({ disagree: e.target.checked }) } }),
      disagreeLabel,
    ),
    count,
  );
  return {
    element,
    setCounts(disagreeing, shown, total) {
      disagreeLabel.textContent = `only rows where runs disagree (${disagreeing})`;
      count.textContent = shown === total ? `${total} variables` : `${shown} of ${total} variables`;
    },
    sync(current) {
      if (input.value !== current.query) input.value = current.query;
    },
  };
}

/** The compare matrix: variables x runs of status badges; disagreeing rows marked. */
export function renderCompare(node, { response, rows, state, selected, error, runColors }, on) {
  const runs = response.runs || [];
  const head = el(
    "tr",
    {},
    el("th", { text: "Variable" }),
    runs.map((run) => el("th", { title: run }, el("span", { className: "vu-swatch", style: { background: runColors[run] } }), el("span", { className: "vu-th-run", text: run }))),
  );
  // The matrix is paged: a filter narrows long lists instead of a huge DOM.
  const LIMIT = 400;
  const body = rows.slice(0, LIMIT).map((row) =>
    el(
      "tr",
      { className: `${row.disagree ? "vu-disagree" : ""}${row.variable === selected ? " vu-row--selected" : ""}`, dataset: { variable: row.variable } },
      el("td", { className: "vu-name", title: row.variable, text: row.variable }),
      runs.map((run) => {
        const status = row.statuses?.[run] ?? null;
        const gradient = row.gradients?.[run];
        const badge = status
          ? statusBadge({ status, trainable: row.trainable, severity: 0 })
          : el("span", { className: "vu-dim", text: "absent" });
        return el(
          "td",
          {
            className: "vu-compare-cell", dataset: { run }, title: `${run}: ${status ? STATUS_LABELS[status] : "absent"}${gradient ? `, ${GRADIENT_LABELS[gradient] || gradient}` : ""}`,
            on: { click: () => on.cell(row.variable, run) },
          },
          badge,
        );
      }),
    ),
  );
  replace(
    node,
    error ? el("div", { className: "vu-filter-error", attrs: { role: "alert" }, text: error }) : null,
    rows.length > LIMIT ? el("div", { className: "vu-note", text: `Showing the first ${LIMIT} of ${rows.length} variables; filter to narrow.` }) : null,
    rows.length
      ? el("div", { className: "vu-compare-wrap" }, el("table", { className: "vu-compare" }, el("thead", {}, head), el("tbody", {}, body)))
      : messageBox("info", "No variables match", state.disagree ? "All runs agree on every variable shown." : "Change the filter."),
  );
}
