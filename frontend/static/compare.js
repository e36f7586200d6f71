// DOM of the compare view's variables x runs matrix. No fetching.

import { el, replace } from "./dom.js";
import { nameText, statusBadge, swatch } from "./badges.js";
import { messageBox } from "./shell.js";
import { statusLabel } from "./format.js";
import { gradientLabel } from "./vocabulary.js";
import { compareKey } from "./state.js";

/** The compare matrix: variables x runs of status badges; disagreeing rows marked. */
export function renderCompare(node, { response, rows, state, selected, runColors }, on) {
  const runs = response.runs || [];
  const head = el(
    "tr",
    {},
    el("th", { text: "Variable" }),
    runs.map((run) => el("th", { title: run }, swatch(runColors.get(run)), el("span", { className: "vu-th-run" }, nameText(run)))),
  );
  // The matrix is paged: a filter narrows long lists instead of a huge DOM.
  const LIMIT = 400;
  const body = rows.slice(0, LIMIT).map((row) =>
    el(
      "tr",
      { className: `${row.disagree ? "vu-disagree" : ""}${compareKey(row) === selected ? " vu-row--selected" : ""}`, dataset: { variable: row.variable } },
      el("td", { className: "vu-name", title: row.variable }, nameText(row.variable)),
      runs.map((run) => {
        // Each run's badge as that run's own row draws it (label, quiet, accepted).
        const cell = row.badges?.[run] ?? null;
        const gradient = row.gradients?.[run];
        const badge = cell ? statusBadge(cell) : el("span", { className: "vu-dim", text: "absent" });
        return el(
          "td",
          {
            className: "vu-compare-cell", dataset: { run }, title: `${run}: ${cell ? statusLabel(cell) : "absent"}${gradient ? `, ${gradientLabel(gradient)}` : ""}`,
            on: { click: () => on.cell(compareKey(row), run) },
          },
          badge,
        );
      }),
    ),
  );
  replace(
    node,
    rows.length > LIMIT ? el("div", { className: "vu-note", text: `Showing the first ${LIMIT} of ${rows.length} variables; filter to narrow.` }) : null,
    rows.length
      ? el("div", { className: "vu-compare-wrap" }, el("table", { className: "vu-compare" }, el("thead", {}, head), el("tbody", {}, body)))
      : messageBox("info", "No variables match", state.disagree ? "All runs agree on every variable shown." : "Change the filter."),
  );
}
