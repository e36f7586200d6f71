// The heatmap pane: asks for the selected run's heatmap and hands it to the
// canvas (heatmap.js); follows the selected variable.

import { HEATMAP_BUCKETS } from "../constants.js";
import { el, replace } from "../dom.js";
import { createHeatmap } from "../heatmap.js";
import { matchesSelection } from "../model.js";
import { messageBox } from "../shell.js";

/** Creates the heatmap pane in `pane`; returns {show(), redraw()}. */
export function createHeatmapPane(pane, ctx) {
  const { store } = ctx;
  const message = el("div");
  const slot = el("div");
  replace(pane, message, slot);
  const heatmap = createHeatmap(slot, (variable) => ctx.openDetail(variable));
  store.subscribe(["variable"], (state) => heatmap.select(state.variable));

  async function show() {
    const current = store.get();
    let answer;
    try {
      // No more buckets than records: a bucket narrower than one logging
      // interval could only ever read "not logged".
      const info = ctx.runs().find((r) => r.run === current.run)?.tags?.find((t) => t.tag === current.tag);
      const buckets = Math.max(1, Math.min(HEATMAP_BUCKETS, info?.logged || HEATMAP_BUCKETS));
      answer = await ctx.latest("heatmap", ctx.client.heatmap(current.run, current.tag, buckets));
    } catch (err) {
      replace(message, messageBox("error", `Could not load the heatmap of "${current.run}"`, err.message));
      slot.hidden = true;
      return;
    }
    const now = store.get();
    if (answer.stale || !matchesSelection(answer.value, { run: now.run, tag: now.tag })) return;
    slot.hidden = false;
    const count = (answer.value.variables || []).length;
    replace(message, ctx.warnings.local(answer.value.warnings), count ? null : messageBox("info", "No variables tracked in this record"));
    heatmap.update(answer.value, now.variable);
    // Like `rendered` for the table: the canvas now holds this run's cells
    // (browser tests and benchmarks/dashboard.py wait for it).
    ctx.root.dataset.heatmapRendered = `${now.run}|${count}`;
  }

  /** Shows only a message (a run without records), until the next show(). */
  function notice(box) {
    replace(message, box);
    slot.hidden = true;
  }

  return { show, notice, redraw: () => heatmap.redraw() };
}
