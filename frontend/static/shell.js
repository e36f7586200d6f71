// DOM of the page skeleton, the run picker and messages. No fetching: app.js
// hands in data and callbacks; each pane (panes/) draws its own view.

import { VIEW_LABELS, VIEWS } from "./constants.js";
import { el, replace } from "./dom.js";
import { runProblemText } from "./format.js";
import { nameText, problemBadge } from "./badges.js";

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

/**
 * The run picker: a radio to inspect a run, a checkbox to compare it.
 *
 * Args:
 *   runColors: Map run -> colour (a Map: a run may be called `__proto__`).
 */
export function renderRunPicker(refs, runs, state, runColors, on) {
  const items = runs.map((run) => {
    const problems = runProblemText(run);
    const color = runColors.get(run.run);
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
      el("span", { className: "vu-run-name", title: run.run, on: { click: () => on.run(run.run) } }, nameText(run.run)),
      problemBadge(problems ? Number(problems) : 0, { small: true }),
    );
  });
  replace(refs.runList, items.length ? items : el("div", { className: "vu-dim", text: "No runs" }));
  const run = runs.find((r) => r.run === state.run);
  const tags = run ? run.tags || [] : [];
  replace(refs.tagSelect, tags.map((t) => el("option", { value: t.tag, selected: t.tag === state.tag, text: t.tag })));
  refs.tagSelect.disabled = tags.length < 2;
}

/**
 * Folded warnings of a route. Warnings of the runs route are shown above
 * every view; a view repeats only the ones that are new to it.
 *
 * Returns:
 *   {global(warnings) -> node|null, local(warnings) -> node|null}.
 */
export function createWarnings() {
  let seen = new Set();
  function box(warnings) {
    if (!warnings.length) return null;
    const title = `${warnings.length} record${warnings.length === 1 ? " was" : "s were"} skipped`;
    // Folded: the reasons matter when a run looks wrong, not on every visit.
    return el(
      "details",
      { className: "vu-message vu-message--info vu-warnings" },
      el("summary", { className: "vu-message-title", text: title }),
      warnings.map((w) => el("p", { text: String(w) })),
    );
  }
  return {
    global(warnings) {
      if (!Array.isArray(warnings)) return null;
      seen = new Set(warnings.map(String));
      return box(warnings);
    },
    local(warnings) {
      if (!Array.isArray(warnings)) return null;
      return box(warnings.filter((w) => !seen.has(String(w))));
    },
  };
}
