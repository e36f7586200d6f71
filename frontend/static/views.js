// DOM for the shell, run picker, banner, filters and messages. No fetching:
// app.js hands in data and callbacks. See detail.js and compare.js for the rest.

import { RUN_COLORS, STATUSES, STATUS_LABELS, VIEW_LABELS, VIEWS } from "./constants.js";
import { el, replace } from "./dom.js";
import { bannerLines, runProblemText } from "./format.js";

/** The page skeleton; returns references to the parts app.js fills. */
export function buildShell(root, on) {
  const refs = {};
  refs.runList = el("div", { className: "vu-runs", attrs: { role: "group", "aria-label": "Runs" } });
  refs.tagSelect = el("select", { className: "vu-select", attrs: { "aria-label": "Tracker tag" }, on: { change: (e) => on.tag(e.target.value) } });
  refs.refresh = el("button", { className: "vu-button", type: "button", text: "Refresh", title: "Reload data from TensorBoard", on: { click: on.refresh } });
  refs.status = el("span", { className: "vu-dim vu-updated", attrs: { "aria-live": "polite" } });
  const sidebar = el(
    "aside",
    { className: "vu-sidebar" },
    el("div", { className: "vu-side-head" }, el("h2", { className: "vu-side-title", text: "Runs" }), refs.refresh),
    el("div", { className: "vu-hint", text: "\u25c9 inspect one run \u00b7 \u2611 compare several" }),
    refs.runList,
    el("label", { className: "vu-field" }, el("span", { className: "vu-field-label", text: "Tracker" }), refs.tagSelect),
    refs.status,
  );
  refs.tabs = el("nav", { className: "vu-tabs", attrs: { role: "tablist" } });
  refs.tabButtons = {};
  for (const view of VIEWS) {
    const button = el("button", {
      className: "vu-tab", type: "button", dataset: { view }, text: VIEW_LABELS[view],
      attrs: { role: "tab" }, on: { click: () => on.view(view) },
    });
    refs.tabButtons[view] = button;
    refs.tabs.append(button);
  }
  refs.message = el("div", { className: "vu-message-slot", attrs: { "aria-live": "polite" } });
  refs.panes = {};
  for (const view of VIEWS) refs.panes[view] = el("section", { className: `vu-pane vu-pane--${view}`, dataset: { pane: view }, hidden: true });
  refs.detail = el("section", { className: "vu-detail", hidden: true, attrs: { "aria-label": "Variable detail" } });
  const main = el("main", { className: "vu-main" }, refs.tabs, refs.message, ...Object.values(refs.panes), refs.detail);
  replace(root, el("div", { className: "vu-app" }, sidebar, main));
  return refs;
}

/** Marks the active tab and shows only its pane. */
export function showView(refs, view) {
  for (const v of VIEWS) {
    refs.tabButtons[v].classList.toggle("vu-tab--active", v === view);
    refs.tabButtons[v].setAttribute("aria-selected", String(v === view));
    refs.panes[v].hidden = v !== view;
  }
}

/** A message box: kind is "error", "info" or "empty"; body lines are text or nodes. */
export function messageBox(kind, title, ...body) {
  return el(
    "div",
    { className: `vu-message vu-message--${kind}`, attrs: { role: kind === "error" ? "alert" : "status" } },
    el("div", { className: "vu-message-title", text: title }),
    body.map((line) => (typeof line === "string" ? el("p", {}, withCode(line)) : line)),
  );
}

/** Text with `backticked` parts set as code, built from text nodes only. */
export function withCode(text) {
  return text.split("`").map((part, i) => (i % 2 ? el("code", { text: part }) : part));
}

/** What to show when no run holds varupdate records yet. */
export function emptyLogdirMessage() {
  const code = [
    "import tb_varupdate",
    "tracker = tb_varupdate.VariableUpdateTracker(model)",
    "with tf.summary.create_file_writer(logdir).as_default():",
    "    for step, (x, y) in enumerate(dataset):",
    "        ...  # forward, gradients, optimizer step",
    "        tracker.log(step, gradients=zip(grads, model.trainable_variables))",
  ].join("\n");
  return messageBox(
    "empty",
    "No varupdate records yet",
    "Add `tracker.log(step)` to your training loop, after the optimizer step, so each step records how every variable changed:",
    el("pre", { className: "vu-code", text: code }),
    "With Keras, pass `callbacks=[tb_varupdate.keras.VariableUpdateCallback(log_dir)]` to `model.fit`. Then reload this page.",
  );
}

/** The run picker: a radio to inspect a run, a checkbox to compare it. */
export function renderRunPicker(refs, runs, state, on) {
  const items = runs.map((run, i) => {
    const problems = runProblemText(run);
    const color = RUN_COLORS[i % RUN_COLORS.length];
    return el(
      "div",
      { className: `vu-run${run.run === state.run ? " vu-run--selected" : ""}`, dataset: { run: run.run } },
      el("input", {
        type: "radio", name: "vu-run", checked: run.run === state.run, title: "Inspect this run",
        attrs: { "aria-label": `Inspect ${run.run}` }, on: { change: () => on.run(run.run) },
      }),
      el("input", {
        type: "checkbox", checked: state.compare.includes(run.run), title: "Compare this run",
        className: "vu-compare-box", style: { accentColor: color },
        attrs: { "aria-label": `Compare ${run.run}` }, on: { change: (e) => on.compare(run.run, e.target.checked) },
      }),
      el("span", { className: "vu-run-name", title: run.run, text: run.run, on: { click: () => on.run(run.run) } }),
      problems ? el("span", { className: "vu-badge vu-status--never_updated vu-badge--small", title: "problem variables", text: problems }) : null,
    );
  });
  replace(refs.runList, items.length ? items : el("div", { className: "vu-dim", text: "No runs" }));
  const run = runs.find((r) => r.run === state.run);
  const tags = run ? run.tags || [] : [];
  replace(refs.tagSelect, tags.map((t) => el("option", { value: t.tag, selected: t.tag === state.tag, text: t.tag })));
  refs.tagSelect.disabled = tags.length < 2;
}

/** The overview banner: "3 of 42 trainable variables never updated", chips filter. */
export function renderBanner(node, response, onStatus) {
  const { tone, lines } = bannerLines(response.summary);
  const step = response.step ?? null;
  const logged = response.logged ?? null;
  const facts = [];
  if (step !== null) facts.push(`latest step ${step}`);
  if (logged !== null) facts.push(`${logged} logged record${logged === 1 ? "" : "s"}`);
  const nonTrainable = (response.summary?.variables ?? 0) - (response.summary?.trainable ?? 0);
  if (nonTrainable > 0) facts.push(`${nonTrainable} non-trainable`);
  replace(
    node,
    el(
      "div",
      { className: `vu-banner vu-banner--${tone}`, attrs: { role: "status" } },
      el(
        "div",
        { className: "vu-banner-lines" },
        lines.map((line) =>
          line.status && line.status !== "updating"
            ? el("button", {
                type: "button", className: `vu-banner-line vu-banner-line--${line.status}`, title: "Show only these",
                text: line.text, dataset: { status: line.status }, on: { click: () => onStatus(line.status) },
              })
            : el("div", { className: "vu-banner-line", text: line.text }),
        ),
      ),
      el("div", { className: "vu-banner-facts", text: facts.join(" \u00b7 ") }),
    ),
  );
}

/** The filter bar of the overview. */
export function filterBar(state, on) {
  const regexBox = el("input", { type: "checkbox", checked: state.regex, on: { change: (e) => on.filter({ regex: e.target.checked }) } });
  const statusSelect = el(
    "select",
    { className: "vu-select", attrs: { "aria-label": "Status filter" }, on: { change: (e) => on.filter({ status: e.target.value }) } },
    [["", "All statuses"], ["problems", "Problems"], ["warnings", "Problems and warnings"], ...STATUSES.map((s) => [s, STATUS_LABELS[s]])].map(
      ([value, label]) => el("option", { value, selected: state.status === value, text: label }),
    ),
  );
  const input = el("input", {
    className: "vu-input", type: "search", placeholder: "Filter variables (substring or regex)", value: state.query,
    attrs: { "aria-label": "Filter variables by name" }, on: { input: (e) => on.filter({ query: e.target.value }) },
  });
  const groupBox = el("input", { type: "checkbox", checked: state.group, on: { change: (e) => on.filter({ group: e.target.checked }) } });
  const error = el("div", { className: "vu-filter-error", attrs: { role: "alert" }, hidden: true });
  const count = el("span", { className: "vu-dim vu-count" });
  const bar = el(
    "div",
    { className: "vu-filters" },
    input,
    el("label", { className: "vu-check", title: "Treat the filter as a regular expression" }, regexBox, "regex"),
    statusSelect,
    el("label", { className: "vu-check", title: "Group variables by layer path" }, groupBox, "group by layer"),
    count,
  );
  return {
    element: el("div", {}, bar, error),
    setError(message) {
      error.hidden = !message;
      error.textContent = message || "";
    },
    setCount(shown, total) {
      count.textContent = shown === total ? `${total} variables` : `${shown} of ${total} variables`;
    },
    setStatus(value) {
      statusSelect.value = value;
    },
    // The compare view edits the same name filter; show its current text.
    sync(current) {
      if (input.value !== current.query) input.value = current.query;
      regexBox.checked = current.regex;
    },
  };
}
