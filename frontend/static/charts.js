// Line charts (vendored uPlot) and the gradient-state strip of the detail view.

import uPlot from "./vendor/uPlot.esm.js";
import { GRADIENT_STATE_COLORS } from "./constants.js";
import { cssVar, el, replace } from "./dom.js";
import { formatNumber } from "./format.js";
import { forLogScale } from "./scale.js";
import { gradientStateLabel } from "./vocabulary.js";

/** A uPlot plugin that shows the step and each series' value under the cursor. */
function tooltipPlugin() {
  const tip = el("div", { className: "vu-tooltip", hidden: true });
  return {
    hooks: {
      init: (u) => u.over.append(tip),
      setCursor: (u) => {
        const i = u.cursor.idx;
        if (i === null || i === undefined) {
          tip.hidden = true;
          return;
        }
        const lines = [el("div", { className: "vu-tooltip-title", text: `step ${u.data[0][i]}` })];
        u.series.forEach((s, k) => {
          if (k === 0 || !s.show) return;
          const v = u.data[k][i];
          lines.push(
            el("div", {}, el("span", { className: "vu-swatch", style: { background: s._stroke || s.stroke } }), `${s.label}: ${formatNumber(v)}`),
          );
        });
        replace(tip, ...lines);
        tip.hidden = false;
        const left = u.cursor.left;
        tip.style.left = `${left > u.over.clientWidth / 2 ? left - 180 : left + 12}px`;
        tip.style.top = `${Math.max(0, u.cursor.top - 10)}px`;
      },
    },
  };
}

function allZero(columns) {
  return columns.every((col) => col.every((v) => v === 0 || v === null || v === undefined));
}

/**
 * A line chart of one or more series over steps.
 *
 * Args:
 *   container: element to draw into (its width is used).
 *   title: chart title.
 *   data: [xs, ys...] columnar.
 *   series: [{label, color}] for each ys.
 *   log: whether the y axis is logarithmic (non-positive values become gaps).
 *
 * Returns:
 *   the chart wrapper element (already appended).
 */
export function lineChart(container, { title, data, series, log = false }) {
  const wrap = el("div", { className: "vu-chart" });
  container.append(wrap);
  let ys = data.slice(1);
  let useLog = log;
  if (useLog) {
    ys = ys.map(forLogScale);
    // A log axis needs at least one positive value to choose its range.
    if (!ys.some((col) => col.some((v) => v !== null))) {
      useLog = false;
      ys = data.slice(1);
    }
  }
  // Zeros have no place on a log axis; say how many were left out rather
  // than let a never-changing variable look like missing data.
  const zeros = useLog ? data.slice(1).reduce((n, col) => n + col.filter((v) => v === 0).length, 0) : 0;
  const hasData = ys.some((col) => col.some((v) => v !== null && v !== undefined));
  const text = cssVar("--vu-text-2", "#616161");
  const grid = cssVar("--vu-grid", "#ebebeb");
  const axis = { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 }, font: `11px ${cssVar("--vu-font", "sans-serif")}` };
  // The wrapper sits in a grid column: its width, not the container's, fits.
  const width = Math.max(280, Math.floor(wrap.clientWidth || container.clientWidth || 480));
  // On a log axis uPlot grids every minor tick; keep only the decades readable.
  const decadesOnly = (u, splits) => splits.map((v) => (Math.abs(Math.log10(v) % 1) < 1e-9 ? v : null));
  const opts = {
    title: useLog !== log ? `${title} (all zero: linear axis)` : zeros ? `${title} (${zeros} zero point${zeros === 1 ? "" : "s"} not on log axis)` : title,
    width,
    height: 190,
    // uPlot stretches a flat zero line over 0..100; a unit range reads better.
    scales: { x: { time: false }, y: useLog ? { distr: 3 } : allZero(ys) ? { range: [0, 1] } : {} },
    axes: [
      { ...axis, label: "step", labelSize: 16, labelFont: axis.font },
      {
        ...axis, size: 62, values: (u, vals) => vals.map((v) => (v === null ? "" : formatNumber(v, 2))),
        ...(useLog ? { filter: decadesOnly, grid: { ...axis.grid, filter: decadesOnly }, ticks: { ...axis.ticks, filter: decadesOnly } } : {}),
      },
    ],
    series: [
      { label: "step" },
      ...series.map((s) => ({ label: s.label, stroke: s.color, width: 1.5, spanGaps: true, points: { show: data[0].length <= 60, size: 4 } })),
    ],
    cursor: { drag: { x: true, y: false } },
    legend: { show: series.length > 1 },
    plugins: [tooltipPlugin()],
  };
  new uPlot(opts, [data[0], ...ys], wrap);
  if (!hasData) wrap.append(el("div", { className: "vu-chart-empty", text: "no values to plot" }));
  return wrap;
}

/**
 * The gradient state at each logged step as a strip of coloured cells, with
 * a legend of the states that occur and a hover readout.
 */
export function gradientStrip(container, steps, states) {
  const wrap = el("div", { className: "vu-chart" }, el("div", { className: "vu-chart-title", text: "Gradient state" }));
  container.append(wrap);
  const width = Math.max(280, Math.floor(wrap.clientWidth || container.clientWidth || 480));
  const height = 18;
  const canvas = el("canvas", { className: "vu-strip", attrs: { role: "img", "aria-label": "gradient state per step" } });
  const readout = el("span", { className: "vu-dim vu-strip-readout", text: "hover to read a step" });
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  const n = states.length;
  const cell = n ? width / n : width;
  states.forEach((state, i) => {
    ctx.fillStyle = GRADIENT_STATE_COLORS[state] || "#9e9e9e";
    ctx.fillRect(i * cell, 0, Math.ceil(cell), height);
  });
  canvas.addEventListener("mousemove", (event) => {
    const i = Math.floor((event.clientX - canvas.getBoundingClientRect().left) / cell);
    if (i >= 0 && i < n) readout.textContent = `step ${steps[i]}: ${gradientStateLabel(states[i])}`;
  });
  const present = [...new Set(states)];
  const legend = el(
    "div",
    { className: "vu-legend" },
    present.map((state) => [
      el("span", { className: "vu-swatch", style: { background: GRADIENT_STATE_COLORS[state] || "#9e9e9e" } }),
      el("span", { text: gradientStateLabel(state) }),
    ]),
    readout,
  );
  wrap.append(canvas, legend);
  return wrap;
}
