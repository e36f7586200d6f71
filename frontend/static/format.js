// Pure text formatting for numbers, shapes and the banner. No DOM.

import { countedStatuses, isProblemStatus, label, statusLabel as vocabularyLabel, statusPhrase } from "./vocabulary.js";

const DASH = "\u2013";

/** A number for a table cell: exponent form for very small or large values. */
export function formatNumber(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return DASH;
  if (!Number.isFinite(value)) return value > 0 ? "Inf" : "-Inf";
  if (value === 0) return "0";
  const abs = Math.abs(value);
  // Trailing zeros of the mantissa carry nothing: "1.50e-7" reads as "1.5e-7".
  if (abs < 1e-3 || abs >= 1e5) return value.toExponential(digits - 1).replace(/\.?0+e/, "e");
  return String(Number(value.toPrecision(digits)));
}

/** A step, or a dash when there is none (a variable that never changed). */
export function formatStep(step) {
  return step === null || step === undefined ? DASH : String(step);
}

/** A fraction 0..1 as a percentage; tiny non-zero fractions are not shown as 0%. */
export function formatFraction(fraction) {
  if (fraction === null || fraction === undefined || !Number.isFinite(fraction)) return DASH;
  if (fraction > 0 && fraction < 0.001) return "<0.1%";
  const percent = fraction * 100;
  return (Number.isInteger(percent) ? String(percent) : percent.toFixed(1)) + "%";
}

/** `[3, 4]` -> "3 x 4"; a scalar -> "scalar"; unknown dimensions -> "?". */
export function formatShape(shape) {
  if (!Array.isArray(shape)) return "?";
  if (shape.length === 0) return "scalar";
  return shape.map((d) => (d === null || d === undefined ? "?" : String(d))).join(" \u00d7 ");
}

/** Number of elements of a shape, for sorting; unknown dimensions count as 0. */
export function shapeSize(shape) {
  if (!Array.isArray(shape)) return 0;
  return shape.reduce((n, d) => n * (Number.isFinite(d) ? d : 0), 1);
}

/** The word shown in a row's badge: the backend's `label`, "accepted" for an allowed problem. */
export function statusLabel(row) {
  if (row.allowed) return `${label("accepted")}: ${row.label ?? vocabularyLabel(row.status)}`;
  return row.label ?? vocabularyLabel(row.status);
}

/**
 * Banner lines for a `summary` object of the `variables` route.
 *
 * Returns:
 *   {tone: "problem"|"warning"|"ok"|"empty", lines: [{status, count, text}]}
 *   with one line per status that has trainable variables, problems first.
 */
export function bannerLines(summary) {
  const trainable = summary?.trainable ?? 0;
  const byStatus = summary?.by_status ?? {};
  if (!summary || !summary.variables) {
    return { tone: "empty", lines: [{ status: null, count: 0, text: "No variables tracked in this record." }] };
  }
  if (!trainable) {
    return {
      tone: "ok",
      lines: [{ status: null, count: 0, text: `None of the ${summary.variables} tracked variables is trainable.` }],
    };
  }
  const lines = [];
  for (const status of countedStatuses()) {
    const count = byStatus[status] ?? 0;
    if (!count || status === "updating") continue;
    lines.push({ status, count, text: `${count} of ${trainable} trainable variables ${statusPhrase(status)}` });
  }
  const problems = lines.some((l) => isProblemStatus(l.status));
  if (!lines.length) {
    const text = trainable === 1 ? "The trainable variable is updating" : `All ${trainable} trainable variables are updating`;
    return { tone: "ok", lines: [{ status: "updating", count: trainable, text }] };
  }
  return { tone: problems ? "problem" : "warning", lines };
}

/** Short badge text for a run in the picker: its problem count, or "" if none. */
export function runProblemText(run) {
  const problems = (run.tags || []).reduce((n, t) => n + (t.problems || 0), 0);
  return problems ? String(problems) : "";
}
