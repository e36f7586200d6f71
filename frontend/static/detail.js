// DOM of the detail panel: one variable's facts, diagnosis and charts, alone
// or overlaid across runs. No fetching.

import { SAMPLES_FLAG } from "./constants.js";
import { el, replace } from "./dom.js";
import { formatFraction, formatNumber, formatShape, formatStep } from "./format.js";
import { alignSeries, finiteOrNull } from "./scale.js";
import { gradientStrip, lineChart } from "./charts.js";
import { gradientBadge, nameText, statusBadge } from "./badges.js";
import { messageBox, withCode } from "./shell.js";

function fact(label, value) {
  return el("div", { className: "vu-fact" }, el("span", { className: "vu-fact-label", text: label }), el("span", { className: "vu-fact-value", text: value }));
}

/** The note shown when TensorBoard kept only a sample of the records. */
function downsampleNote(response) {
  if (!response?.downsampled) return null;
  const flag = response.samples_hint || SAMPLES_FLAG;
  return el(
    "div",
    { className: "vu-note" },
    `Charts show ${response.points} of ${response.logged} logged steps: TensorBoard keeps a sample of each tag. Start TensorBoard with `,
    el("code", { text: flag }),
    " to show all steps. Verdicts always use every step.",
  );
}

const METRICS = [
  { key: "delta_l2", title: "Update norm \u2016\u0394w\u2016" },
  { key: "relative_update", title: "Relative update \u2016\u0394w\u2016/\u2016w\u2016" },
  { key: "gradient_l2", title: "Gradient norm \u2016g\u2016" },
];

/** The title line both detail panels share: the name, what follows it, Close. */
function titleBar(name, middle, close) {
  return el(
    "div",
    { className: "vu-detail-title" },
    el("h3", { className: "vu-detail-name", title: name }, nameText(name)),
    ...middle,
    el("button", { className: "vu-button vu-button--flat", type: "button", text: "Close", on: { click: close } }),
  );
}

/** Header of the detail panel: name, badges and facts of a verdict row. */
function detailHeader(row, name, on) {
  return el(
    "div",
    { className: "vu-detail-head" },
    titleBar(name, [row ? statusBadge(row) : null, row ? gradientBadge(row.gradient) : null], on.close),
    row ? el("p", { className: `vu-diagnosis-full${row.problem ? " vu-diagnosis--problem" : ""}` }, withCode(row.diagnosis || "")) : null,
    row
      ? el(
          "div",
          { className: "vu-facts" },
          fact("shape", `${formatShape(row.shape)} ${row.dtype || ""}`),
          fact("trainable", row.trainable ? "yes" : "no"),
          fact("changed", `${row.changed_steps} of ${row.logged_steps} logged steps (${formatFraction(row.changed_fraction)})`),
          fact("first / last change", `${formatStep(row.first_update_step)} / ${formatStep(row.last_update_step)}`),
          fact("max relative update", formatNumber(row.max_relative_update)),
          fact("gradient steps", Object.entries(row.gradient_steps || {}).map(([k, v]) => `${k} ${v}`).join(", ")),
        )
      : null,
  );
}

function logToggle(state, on) {
  return el(
    "label",
    { className: "vu-check" },
    el("input", { type: "checkbox", checked: state.log, on: { change: (e) => on.log(e.target.checked) } }),
    "log scale",
  );
}

/**
 * The detail panel of one variable in one run: facts, diagnosis, charts of
 * update norm, relative update and gradient norm, and the gradient state.
 */
export function renderDetail(node, { row, name, series, response, state }, on) {
  node.hidden = false;
  const charts = el("div", { className: "vu-charts" });
  replace(node, detailHeader(row, name, on), el("div", { className: "vu-chart-tools" }, logToggle(state, on)), downsampleNote(response), charts);
  if (!series || !(series.step || []).length) {
    charts.append(messageBox("info", "No per-step values for this variable", "It has no records in the steps TensorBoard kept."));
    return;
  }
  for (const metric of METRICS) {
    lineChart(charts, {
      title: metric.title,
      data: [series.step, finiteOrNull(series[metric.key])],
      series: [{ label: metric.key, color: "#f57c00" }],
      log: state.log,
    });
  }
  if (Array.isArray(series.gradient_state)) gradientStrip(charts, series.step, series.gradient_state);
}

/** Loading and error placeholders for the detail panel. */
export function renderDetailMessage(node, name, box, on) {
  node.hidden = false;
  replace(node, detailHeader(null, name, on), box);
}

/**
 * Charts of one variable across runs, overlaid (one line per run).
 *
 * Args:
 *   responses: [{run, response, series}] from the series route, one per run
 *     (`series`: the run's entry of `by_index`, or undefined).
 */
export function renderCompareDetail(node, { name, responses, state, runColors }, on) {
  node.hidden = false;
  const charts = el("div", { className: "vu-charts" });
  replace(
    node,
    el(
      "div",
      { className: "vu-detail-head" },
      titleBar(name, [el("span", { className: "vu-dim", text: `across ${responses.length} runs` })], on.close),
    ),
    el("div", { className: "vu-chart-tools" }, logToggle(state, on)),
    // One note is enough: the runs share TensorBoard's sampling setting.
    downsampleNote(responses.find(({ response }) => response?.downsampled)?.response),
    charts,
  );
  // Each run's one series, asked for by that run's row index.
  const present = responses.filter(({ series }) => series);
  for (const metric of METRICS) {
    const data = alignSeries(present.map(({ series }) => ({ step: series.step, values: series[metric.key] })));
    lineChart(charts, {
      title: metric.title, data, log: state.log,
      series: present.map(({ run }) => ({ label: run, color: runColors.get(run) })),
    });
  }
}
