// Pure colour scales and heatmap geometry. No DOM.

import { NO_CHANGE_COLOR, RAMP } from "./constants.js";

function parseHex(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

function toHex([r, g, b]) {
  return "#" + [r, g, b].map((c) => Math.round(c).toString(16).padStart(2, "0")).join("");
}

/** The ramp colour at t in [0, 1] (clamped), interpolated in RGB between stops. */
export function rampColor(t, ramp = RAMP) {
  const x = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (ramp.length - 1);
  const i = Math.min(ramp.length - 2, Math.floor(x));
  const a = parseHex(ramp[i]);
  const b = parseHex(ramp[i + 1]);
  const f = x - i;
  return toHex(a.map((c, k) => c + (b[k] - c) * f));
}

/**
 * The log10 domain of the positive finite values, widened to whole decades
 * (at least one), so the legend's ticks fall on powers of ten.
 *
 * Returns:
 *   [lo, hi] exponents, or null when there is no positive value.
 */
export function logDomain(matrix) {
  let min = Infinity;
  let max = -Infinity;
  for (const row of matrix) {
    for (const v of row) {
      if (typeof v === "number" && v > 0 && Number.isFinite(v)) {
        if (v < min) min = v;
        if (v > max) max = v;
      }
    }
  }
  if (min === Infinity) return null;
  let lo = Math.floor(Math.log10(min));
  let hi = Math.ceil(Math.log10(max));
  if (hi <= lo) hi = lo + 1;
  return [lo, hi];
}

/**
 * A cell's fill: null (not logged) -> null, 0 (no change) -> NO_CHANGE_COLOR,
 * a positive value -> its place on the log ramp.
 */
export function cellColor(value, domain) {
  if (value === null || value === undefined || Number.isNaN(value)) return null;
  if (value === 0) return NO_CHANGE_COLOR;
  if (!domain) return rampColor(1);
  if (!Number.isFinite(value)) return rampColor(1);
  if (value < 0) return null;
  const [lo, hi] = domain;
  return rampColor((Math.log10(value) - lo) / (hi - lo));
}

// Ramp colours precomputed for the heatmap's pixels: 257 levels put a level
// on each of the 5 stops (every 64th), and neighbouring levels differ by at
// most 3 in any channel, which no eye tells from the exact ramp.
const PIXEL_LEVELS = 257;

/**
 * The heatmap's cells as RGBA pixels, one per cell: cellColor's colours
 * (the ramp to the nearest of PIXEL_LEVELS levels), alpha 0 where cellColor
 * is null. Building 200,000 colour strings and fill styles took ~0.4 s for
 * 2,000 variables x 100 buckets; this is one pass over numbers.
 *
 * Args:
 *   matrix: rows of cell values; cols: the width (rows may be shorter).
 *
 * Returns:
 *   Uint8ClampedArray of rows x cols x 4 bytes, for an ImageData.
 */
export function cellPixels(matrix, cols, domain) {
  const ramp = [];
  for (let i = 0; i < PIXEL_LEVELS; i++) ramp.push(parseHex(rampColor(i / (PIXEL_LEVELS - 1))));
  const top = ramp[PIXEL_LEVELS - 1];
  const noChange = parseHex(NO_CHANGE_COLOR);
  const [lo, hi] = domain || [0, 1];
  const pixels = new Uint8ClampedArray(matrix.length * cols * 4);
  matrix.forEach((row, r) => {
    for (let c = 0; c < Math.min(cols, row.length); c++) {
      const value = row[c];
      let rgb = null;
      if (value === null || value === undefined || Number.isNaN(value)) rgb = null;
      else if (value === 0) rgb = noChange;
      else if (!domain || !Number.isFinite(value)) rgb = top;
      else if (value > 0) {
        const t = Math.min(1, Math.max(0, (Math.log10(value) - lo) / (hi - lo)));
        rgb = ramp[Math.round(t * (PIXEL_LEVELS - 1))];
      }
      if (!rgb) continue;
      const at = (r * cols + c) * 4;
      pixels[at] = rgb[0];
      pixels[at + 1] = rgb[1];
      pixels[at + 2] = rgb[2];
      pixels[at + 3] = 255;
    }
  });
  return pixels;
}

/** Legend ticks: one per decade of the domain, as {t, label}. */
export function legendTicks(domain) {
  if (!domain) return [];
  const [lo, hi] = domain;
  const step = Math.max(1, Math.ceil((hi - lo) / 6));
  const ticks = [];
  for (let e = lo; e <= hi; e += step) ticks.push({ t: (e - lo) / (hi - lo), label: `1e${e}` });
  return ticks;
}

/**
 * Heatmap geometry for n rows and m columns in a canvas `width` CSS pixels wide.
 * Rows shrink for many variables, but never below 2px, so 2,000 variables
 * stay hoverable; labels are drawn only when a row is tall enough to read.
 */
export function heatmapLayout(rows, cols, width, { labelWidth = 240, maxRowHeight = 18, minRowHeight = 2, targetHeight = 640 } = {}) {
  const rowHeight = Math.max(minRowHeight, Math.min(maxRowHeight, Math.floor(targetHeight / Math.max(1, rows))));
  const showLabels = rowHeight >= 10;
  const left = showLabels ? labelWidth : 0;
  const colWidth = cols ? Math.max(1, (width - left) / cols) : 0;
  return { rows, cols, width, left, top: 0, rowHeight, colWidth, showLabels, height: rows * rowHeight };
}

/** The {row, col} under a point of the canvas, or null outside the cells. */
export function cellAt(x, y, layout) {
  if (x < layout.left || y < layout.top) return null;
  const col = Math.floor((x - layout.left) / layout.colWidth);
  const row = Math.floor((y - layout.top) / layout.rowHeight);
  if (row < 0 || row >= layout.rows || col < 0 || col >= layout.cols) return null;
  return { row, col };
}

/** The row under y even over the labels, for click-to-open; null outside. */
export function rowAt(y, layout) {
  const row = Math.floor((y - layout.top) / layout.rowHeight);
  return row >= 0 && row < layout.rows ? row : null;
}

/**
 * A y column for a log-scale chart: non-positive and non-finite values become
 * null (gaps), since a log axis cannot place them.
 */
export function forLogScale(values) {
  return values.map((v) => (typeof v === "number" && v > 0 && Number.isFinite(v) ? v : null));
}

/** Chart-safe y column: anything not a finite number becomes a gap. */
export function finiteOrNull(values) {
  return (values || []).map((v) => (typeof v === "number" && Number.isFinite(v) ? v : null));
}

/**
 * Puts several (steps, values) series on one shared x axis for an overlay
 * chart: the union of steps, sorted, and each series' values at those steps
 * (null where that series has no point).
 *
 * Args:
 *   list: [{step: [...], values: [...]}]
 *
 * Returns:
 *   [xs, ys1, ys2, ...] in uPlot's columnar layout.
 */
export function alignSeries(list) {
  const steps = new Set();
  for (const { step } of list) for (const s of step || []) steps.add(s);
  const xs = [...steps].sort((a, b) => a - b);
  const index = new Map(xs.map((s, i) => [s, i]));
  const columns = list.map(({ step, values }) => {
    const column = new Array(xs.length).fill(null);
    (step || []).forEach((s, i) => {
      const v = values?.[i];
      column[index.get(s)] = typeof v === "number" && Number.isFinite(v) ? v : null;
    });
    return column;
  });
  return [xs, ...columns];
}
