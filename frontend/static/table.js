// The overview table: a virtual list (only rows in view exist in the DOM,
// so 2,000 variables render as fast as 20) and its row and header cells.

import { OVERSCAN, ROW_HEIGHT } from "./constants.js";
import { el, replace } from "./dom.js";
import { formatFraction, formatNumber, formatShape, formatStep } from "./format.js";
import { gradientBadge, nameText, problemBadge, statusBadge } from "./badges.js";
import { layerOf, visibleRange } from "./rows.js";

/**
 * A fixed-row-height virtual list inside `container`.
 *
 * Args:
 *   renderItem: (item, index) -> element; positioned by the list.
 *
 * Returns:
 *   {setItems(items), scrollToIndex(i), element}. setItems keeps the scroll
 *   position, so a reload does not throw the user back to the top.
 */
export function createVirtualList(container, renderItem, rowHeight = ROW_HEIGHT) {
  const spacer = el("div", { className: "vu-vlist-spacer" });
  const viewport = el("div", { className: "vu-vlist", attrs: { role: "rowgroup" } }, spacer);
  container.append(viewport);
  let items = [];
  let drawn = "";
  function draw(force = false) {
    const { start, end } = visibleRange(viewport.scrollTop, viewport.clientHeight || 600, rowHeight, items.length, OVERSCAN);
    const key = `${start}:${end}`;
    if (!force && key === drawn) return;
    drawn = key;
    const nodes = [];
    for (let i = start; i < end; i++) {
      const node = renderItem(items[i], i);
      node.style.top = `${i * rowHeight}px`;
      node.style.height = `${rowHeight}px`;
      nodes.push(node);
    }
    spacer.replaceChildren(...nodes);
  }
  viewport.addEventListener("scroll", () => draw());
  return {
    element: viewport,
    setItems(next) {
      items = next;
      spacer.style.height = `${items.length * rowHeight}px`;
      draw(true);
    },
    redraw: () => draw(true),
    scrollToIndex(index) {
      const top = index * rowHeight;
      if (top < viewport.scrollTop || top + rowHeight > viewport.scrollTop + viewport.clientHeight) {
        viewport.scrollTop = Math.max(0, top - viewport.clientHeight / 3);
      }
    },
  };
}

export const COLUMNS = [
  { key: "variable", label: "Variable" },
  { key: "status", label: "Status" },
  { key: "gradient", label: "Gradient", title: "What the gradients were over all logged steps" },
  { key: "shape", label: "Shape" },
  { key: "trainable", label: "Trainable" },
  { key: "first_update_step", label: "First change", title: "First step at which the value changed" },
  { key: "last_update_step", label: "Last change", title: "Latest step at which the value changed" },
  { key: "changed_fraction", label: "Changed", title: "Fraction of logged steps in which the value changed" },
  { key: "latest_relative_update", label: "Rel. update", title: "Latest relative update \u2016\u0394w\u2016 / \u2016w\u2016" },
  { key: "diagnosis", label: "Diagnosis" },
];
const NUMERIC = new Set(["first_update_step", "last_update_step", "changed_fraction", "latest_relative_update"]);

/** The header row; clicking a column asks to sort by it. */
export function headerRow(sort, onSort) {
  return el(
    "div",
    { className: "vu-row vu-row--head", attrs: { role: "row" } },
    COLUMNS.map(({ key, label, title }) => {
      const active = sort.key === key;
      const arrow = active ? (sort.dir === "asc" ? " \u25b2" : " \u25bc") : "";
      return el("button", {
        className: `vu-cell vu-head${NUMERIC.has(key) ? " vu-num" : ""}${active ? " vu-head--active" : ""}`,
        type: "button",
        title: title || `Sort by ${label.toLowerCase()}`,
        dataset: { sort: key },
        attrs: { role: "columnheader", "aria-sort": active ? (sort.dir === "asc" ? "ascending" : "descending") : "none" },
        text: label + arrow,
        on: { click: () => onSort(key) },
      });
    }),
  );
}

/** One table row (a variable) or a group header. */
export function renderTableItem(item, { selected, grouped, onSelect, onToggleGroup }) {
  if (item.kind === "group") {
    return el(
      "div",
      {
        className: "vu-row vu-row--group",
        dataset: { group: item.key },
        attrs: { role: "row", "aria-expanded": String(!item.collapsed), tabindex: "0" },
        on: { click: () => onToggleGroup(item.key), keydown: (e) => e.key === "Enter" && onToggleGroup(item.key) },
      },
      el("span", { className: "vu-caret", text: item.collapsed ? "\u25b8" : "\u25be" }),
      el("span", { className: "vu-group-name", title: item.key || "(top level)" }, nameText(item.key || "(top level)")),
      el("span", { className: "vu-group-count", text: `${item.count} variable${item.count === 1 ? "" : "s"}` }),
      problemBadge(item.problems, { words: true }),
    );
  }
  const row = item.row;
  const layer = layerOf(row.variable);
  const shown = grouped && layer ? row.variable.slice(layer.length + 1) : row.variable;
  // How loud a row is comes from the verdict: `problem` (accepted problems
  // are not), `severity` and `quiet`.
  const classes = ["vu-row"];
  if (row.problem) classes.push("vu-row--problem");
  if (row.problem && row.status === "never_updated") classes.push("vu-row--never");
  if (row.severity === 1) classes.push("vu-row--warning");
  if (row.allowed) classes.push("vu-row--accepted");
  if (row.quiet) classes.push("vu-row--quiet");
  // Selected by row index: two variables may share a name.
  if (row.index === selected) classes.push("vu-row--selected");
  const num = (text) => el("span", { className: "vu-cell vu-num", text });
  return el(
    "div",
    {
      className: classes.join(" "),
      dataset: { variable: row.variable, index: String(row.index), status: row.status },
      attrs: { role: "row", tabindex: "0" },
      on: { click: () => onSelect(row.index), keydown: (e) => e.key === "Enter" && onSelect(row.index) },
    },
    el("span", { className: "vu-cell vu-name", title: row.variable }, nameText(shown)),
    el("span", { className: "vu-cell" }, statusBadge(row)),
    el("span", { className: "vu-cell" }, gradientBadge(row.gradient)),
    el("span", { className: "vu-cell vu-dim", text: formatShape(row.shape) }),
    el("span", { className: "vu-cell vu-dim", text: row.trainable ? "yes" : "no" }),
    num(formatStep(row.first_update_step)),
    num(formatStep(row.last_update_step)),
    num(formatFraction(row.changed_fraction)),
    num(formatNumber(row.latest_relative_update)),
    el("span", { className: "vu-cell vu-diagnosis", title: row.diagnosis || "", text: row.diagnosis || "" }),
  );
}

/** Replaces the header of a table whose sort changed. */
export function setHeader(container, sort, onSort) {
  replace(container, headerRow(sort, onSort));
}
