// The variables x steps heatmap, drawn on a canvas: 2,000 rows x 100 buckets
// is 200,000 cells, far too many DOM nodes but one cheap canvas pass.

import { NO_CHANGE_COLOR, RAMP } from "./constants.js";
import { cssVar, el, replace } from "./dom.js";
import { formatNumber } from "./format.js";
import { cellAt, cellPixels, heatmapLayout, legendTicks, logDomain, rowAt } from "./scale.js";

/** The colour legend: the log ramp with decade ticks, then the two special colours. */
function legend(domain) {
  const stops = RAMP.map((c, i) => `${c} ${(100 * i) / (RAMP.length - 1)}%`).join(", ");
  const ticks = legendTicks(domain);
  return el(
    "div",
    { className: "vu-legend" },
    el("span", { className: "vu-legend-title", text: "Relative update \u2016\u0394w\u2016/\u2016w\u2016 (log)" }),
    domain
      ? el(
          "span",
          { className: "vu-legend-ramp-wrap" },
          el("span", { className: "vu-legend-ramp", style: { background: `linear-gradient(to right, ${stops})` } }),
          el("span", { className: "vu-legend-ticks" }, ticks.map((t) => el("span", { style: { left: `${t.t * 100}%` }, text: t.label }))),
        )
      : el("span", { className: "vu-dim", text: "no non-zero updates" }),
    el("span", { className: "vu-swatch", style: { background: NO_CHANGE_COLOR } }),
    el("span", { text: "no change" }),
    el("span", { className: "vu-swatch vu-swatch--empty" }),
    el("span", { text: "not logged" }),
  );
}

/**
 * Creates the heatmap in `container`.
 *
 * Args:
 *   onOpen: called with a variable's row index (the answer's `indices`) when
 *     its row is clicked: names are no key, two variables may share one.
 *
 * Returns:
 *   {update(data, selected), redraw()}; `data` is the heatmap route's answer.
 */
export function createHeatmap(container, onOpen) {
  const legendSlot = el("div");
  const canvas = el("canvas", { className: "vu-heatmap-canvas", attrs: { role: "img" } });
  const tooltip = el("div", { className: "vu-tooltip", hidden: true });
  const scroller = el("div", { className: "vu-heatmap-scroll" }, canvas);
  const axis = el("div", { className: "vu-heatmap-axis" });
  // The tooltip lives outside the scroller so that a short heatmap does not clip it.
  const frame = el("div", { className: "vu-heatmap" }, scroller, tooltip);
  replace(container, legendSlot, frame, axis);
  let data = null;
  // The cells as an image, one pixel each, built once per answer (hovering
  // redraws the canvas, and only the highlight changes).
  const cells = document.createElement("canvas");
  let layout = null;
  let domain = null;
  let selected = null;
  let hoverRow = null;

  function draw() {
    if (!data) return;
    const width = Math.max(320, scroller.clientWidth - 2);
    const names = data.variables || [];
    const buckets = (data.bucket_start || []).length;
    layout = heatmapLayout(names.length, buckets, width);
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.max(1, Math.round(layout.height * ratio));
    canvas.style.width = `${width}px`;
    canvas.style.height = `${layout.height}px`;
    canvas.setAttribute("aria-label", `Relative update of ${names.length} variables over ${buckets} step buckets`);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.fillStyle = cssVar("--vu-empty-cell", "#eeeeee");
    ctx.fillRect(layout.left, 0, width - layout.left, layout.height);
    const { rowHeight, colWidth, left } = layout;
    if (cells.width && cells.height) {
      // One pixel per cell, stretched without smoothing: one draw call,
      // however many cells (transparent ones show the empty colour).
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(cells, left, 0, buckets * colWidth, names.length * rowHeight);
    }
    // A 1px gap between rows, only when rows are tall enough to spare it.
    if (rowHeight >= 8) {
      ctx.fillStyle = cssVar("--vu-empty-cell", "#eeeeee");
      for (let r = 1; r <= names.length; r++) ctx.fillRect(left, r * rowHeight - 1, width - left, 1);
    }
    const highlight = (r, color) => {
      if (r === null || r < 0) return;
      ctx.strokeStyle = color;
      ctx.lineWidth = 1.5;
      ctx.strokeRect(left + 0.75, r * rowHeight + 0.75, width - left - 1.5, Math.max(1, rowHeight - 1.5));
    };
    const selectedRow = (data.indices || []).indexOf(selected);
    highlight(selectedRow, cssVar("--vu-accent", "#f57c00"));
    highlight(hoverRow, cssVar("--vu-text", "#212121"));
    if (layout.showLabels) {
      ctx.font = `12px ${cssVar("--vu-font", "sans-serif")}`;
      ctx.textBaseline = "middle";
      names.forEach((name, r) => {
        ctx.fillStyle = r === selectedRow ? cssVar("--vu-accent", "#f57c00") : cssVar("--vu-text", "#212121");
        ctx.fillText(fitText(ctx, name, left - 10), 4, r * rowHeight + rowHeight / 2);
      });
    }
    const first = data.bucket_start?.[0];
    const last = data.bucket_end?.[buckets - 1];
    replace(
      axis,
      el("span", { style: { marginLeft: `${layout.left}px` }, text: first === undefined ? "" : `step ${first}` }),
      el("span", { text: last === undefined ? "" : `step ${last}` }),
    );
  }

  canvas.addEventListener("mousemove", (event) => {
    if (!layout) return;
    const rect = canvas.getBoundingClientRect();
    const x = event.clientX - rect.left;
    const y = event.clientY - rect.top;
    const row = rowAt(y, layout);
    const cell = cellAt(x, y, layout);
    if (row !== hoverRow) {
      hoverRow = row;
      draw();
    }
    if (row === null) {
      tooltip.hidden = true;
      return;
    }
    const name = data.variables[row];
    const lines = [name];
    if (cell) {
      const value = data.values[row]?.[cell.col];
      const start = data.bucket_start[cell.col];
      const end = data.bucket_end[cell.col];
      lines.push(start === end ? `step ${start}` : `steps ${start}\u2013${end}`);
      lines.push(value === null || value === undefined ? "not logged" : value === 0 ? "no change (0)" : `relative update ${formatNumber(value)}`);
    }
    replace(tooltip, ...lines.map((line, i) => el("div", { className: i ? "" : "vu-tooltip-title", text: line })));
    tooltip.hidden = false;
    const box = frame.getBoundingClientRect();
    tooltip.style.left = `${Math.min(event.clientX - box.left + 14, box.width - 260)}px`;
    tooltip.style.top = `${event.clientY - box.top + 14}px`;
  });
  canvas.addEventListener("mouseleave", () => {
    tooltip.hidden = true;
    hoverRow = null;
    draw();
  });
  canvas.addEventListener("click", (event) => {
    if (!layout) return;
    const row = rowAt(event.clientY - canvas.getBoundingClientRect().top, layout);
    if (row !== null && data.indices) onOpen(data.indices[row]);
  });

  return {
    update(next, selectedIndex) {
      data = next;
      selected = selectedIndex;
      domain = logDomain(next.values || []);
      const rows = (next.values || []).length;
      const cols = (next.bucket_start || []).length;
      cells.width = cols;
      cells.height = rows;
      if (rows && cols) cells.getContext("2d").putImageData(new ImageData(cellPixels(next.values, cols, domain), cols, rows), 0, 0);
      replace(legendSlot, legend(domain));
      draw();
    },
    select(index) {
      selected = index;
      draw();
    },
    redraw: draw,
  };
}

/** The longest prefix of `text` that fits `width`, with an ellipsis if cut. */
function fitText(ctx, text, width) {
  if (ctx.measureText(text).width <= width) return text;
  let lo = 0;
  let hi = text.length;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (ctx.measureText(text.slice(0, mid) + "\u2026").width <= width) lo = mid;
    else hi = mid - 1;
  }
  return text.slice(0, lo) + "\u2026";
}
