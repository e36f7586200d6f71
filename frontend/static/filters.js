// The filter bar both the overview and the compare view use: a name box
// (substring or regex), extra controls each view adds, a count, and lines for
// an invalid pattern and for a regex that was stopped (match.js).

import { el } from "./dom.js";
import { statusLabel } from "./vocabulary.js";

/** A checkbox with its label, bound to one boolean state key. */
export function checkBox(text, title, checked, onChange) {
  const box = el("input", { type: "checkbox", checked, on: { change: (e) => onChange(e.target.checked) } });
  const caption = el("span", { text });
  return { box, caption, element: el("label", { className: "vu-check", title }, box, caption) };
}

/** The status select of the overview: all, problems, warnings, or one status. */
export function statusSelect(statuses, value, onChange) {
  const options = [["", "All statuses"], ["problems", "Problems"], ["warnings", "Problems and warnings"], ...statuses.map((s) => [s, statusLabel(s)])];
  return el(
    "select",
    { className: "vu-select", attrs: { "aria-label": "Status filter" }, on: { change: (e) => onChange(e.target.value) } },
    options.map(([v, text]) => el("option", { value: v, selected: value === v, text })),
  );
}

/**
 * A filter bar.
 *
 * Args:
 *   state: the store's state (query, regex).
 *   label: the name box's accessible label.
 *   extras: elements placed after the regex box.
 *   regexBox: whether to show the regex box (the compare view follows the
 *     overview's choice without one of its own).
 *   on: {filter(change)} called with {query} or {regex}.
 *
 * Returns:
 *   {element, sync(state), setError(text), setNote(text), setCount(shown, total)}.
 */
export function filterBar(state, { label, extras = [], regexBox = true }, on) {
  const regex = checkBox("regex", "Treat the filter as a regular expression", state.regex, (value) => on.filter({ regex: value }));
  const input = el("input", {
    className: "vu-input", type: "search", placeholder: "Filter variables (substring or regex)", value: state.query,
    attrs: { "aria-label": label }, on: { input: (e) => on.filter({ query: e.target.value }) },
  });
  const count = el("span", { className: "vu-dim vu-count" });
  const error = el("div", { className: "vu-filter-error", attrs: { role: "alert" } });
  const note = el("div", { className: "vu-note vu-filter-note", attrs: { role: "status" } });
  const element = el("div", {}, el("div", { className: "vu-filters" }, input, regexBox ? regex.element : null, ...extras, count));
  // In the page only while they say something (a hidden pane's empty line
  // must not be found beside the shown one's).
  const show = (node, text) => {
    node.textContent = text || "";
    if (text && !node.isConnected) element.append(node);
    else if (!text) node.remove();
  };
  return {
    element,
    // Both views edit the same name filter; show its current text.
    sync(current) {
      if (input.value !== current.query) input.value = current.query;
      regex.box.checked = current.regex;
    },
    setError: (text) => show(error, text),
    setNote: (text) => show(note, text),
    setCount(shown, total) {
      count.textContent = shown === total ? `${total} variables` : `${shown} of ${total} variables`;
    },
  };
}
