// Badges and swatches every view shares. What a badge says and how loud it is
// comes from the row (`label`, `quiet`, `severity`, `allowed`: the backend's
// verdict); this module only draws it.

import { el } from "./dom.js";
import { statusLabel } from "./format.js";
import { gradientLabel } from "./vocabulary.js";

/** A row's status badge; quiet rows (frozen, buffers, no elements) are drawn quietly. */
export function statusBadge(row) {
  const classes = ["vu-badge", `vu-status--${row.status}`];
  if (row.quiet) classes.push("vu-badge--quiet");
  if (row.allowed) classes.push("vu-badge--accepted");
  return el("span", { className: classes.join(" "), text: statusLabel(row) });
}

/** A gradient verdict badge. */
export function gradientBadge(gradient) {
  return el("span", { className: `vu-badge vu-badge--small vu-grad--${gradient}`, text: gradientLabel(gradient) });
}

/** A red count of problems ("3", "2 problems"), or null for none. */
export function problemBadge(count, { small = false, words = false } = {}) {
  if (!count) return null;
  const text = words ? `${count} problem${count === 1 ? "" : "s"}` : String(count);
  return el("span", { className: `vu-badge vu-status--never_updated${small ? " vu-badge--small" : ""}`, title: "problem variables", text });
}

/** A colour swatch (a run's colour in pickers, legends and compare headers). */
export function swatch(color, className = "") {
  return el("span", { className: `vu-swatch ${className}`.trim(), style: color ? { background: color } : {} });
}

/**
 * A variable or run name as text, isolated from the text around it: a
 * right-to-left override inside a name cannot reorder what follows it.
 */
export function nameText(name, className = "") {
  // A variable may be called "": shown as "" (as the CLI prints it), not as nothing.
  if (String(name) === "") return el("bdi", { className: `${className} vu-dim`.trim(), text: '""', title: "the empty name" });
  return el("bdi", { className, text: String(name) });
}
