// The compare pane: the variables x runs matrix of the ticked runs, its
// filters, and the overlaid charts of the variable picked in it (kept in the
// saved state as `compareVariable`).

import { renderCompare } from "../compare.js";
import { renderCompareDetail } from "../detail.js";
import { el, replace } from "../dom.js";
import { checkBox, filterBar } from "../filters.js";
import { createStateFilter } from "../match.js";
import { filterCompareRows } from "../rows.js";
import { compareKey } from "../state.js";
import { messageBox } from "../shell.js";

/** Creates the compare pane in `pane`; returns {show()}. */
export function createComparePane(pane, ctx) {
  const { store } = ctx;
  const state = store.get();
  const names = createStateFilter(ctx.workerUrl, store);
  let response = null;
  const disagree = checkBox("only rows where runs disagree", "", state.disagree, (value) => store.setState({ disagree: value }));
  const filters = filterBar(state, { label: "Filter compared variables", extras: [disagree.element], regexBox: false }, { filter: (c) => store.setState(c) });
  const slot = el("div");
  const detail = el("section", { className: "vu-detail", hidden: true });
  replace(pane, filters.element, slot, detail);

  const visible = () => store.get().view === "compare" && response;

  function draw() {
    if (!response) return;
    const current = store.get();
    const all = response.rows || [];
    filters.sync(current);
    disagree.box.checked = current.disagree;
    filters.setError(names.answer.error);
    filters.setNote(names.answer.note);
    const { rows } = filterCompareRows(all, { disagreeOnly: current.disagree, matches: names.answer.matches });
    disagree.caption.textContent = `only rows where runs disagree (${all.filter((r) => r.disagree).length})`;
    filters.setCount(rows.length, all.length);
    const scrollTop = slot.querySelector(".vu-compare-wrap")?.scrollTop ?? 0;
    renderCompare(slot, { response, rows, state: current, selected: current.compareVariable, runColors: ctx.runColors }, {
      cell: (variable) => {
        if (store.setState({ compareVariable: variable }).size === 0) showDetail(true);
      },
    });
    const wrap = slot.querySelector(".vu-compare-wrap");
    if (wrap) wrap.scrollTop = scrollTop;
  }


  async function showDetail(scroll = false) {
    const key = store.get().compareVariable;
    if (key == null || !response) {
      detail.hidden = true;
      return;
    }
    // Matched by name and occurrence, fetched by each run's own row index.
    const row = (response.rows || []).find((r) => compareKey(r) === key);
    const name = row ? row.variable : key;
    const runsShown = (response.runs || []).filter((run) => row?.statuses?.[run] && row?.indices?.[run] != null);
    const on = {
      close: () => store.setState({ compareVariable: null }),
      log: (log) => store.setState({ log }),
    };
    let responses;
    try {
      const answer = await ctx.latest(
        "compare-detail",
        Promise.all(runsShown.map(async (run) => {
          const index = row.indices[run];
          const one = await ctx.client.series(run, response.tag, [index]);
          return { run, response: one, series: one.by_index?.[String(index)] };
        })),
      );
      if (answer.stale || store.get().compareVariable !== key) return;
      responses = answer.value;
    } catch (err) {
      detail.hidden = false;
      replace(detail, messageBox("error", `Could not load the series of ${name}`, err.message));
      return;
    }
    renderCompareDetail(detail, { name, responses, state: store.get(), runColors: ctx.runColors }, on);
    if (scroll) detail.scrollIntoView({ block: "nearest" });
  }

  store.subscribe(["query", "regex"], async () => {
    if (visible() && (await names.refresh())) draw();
  });
  store.subscribe(["disagree"], () => visible() && draw());
  store.subscribe(["compareVariable"], () => {
    if (!visible()) return;
    draw();
    showDetail(true);
  });
  store.subscribe(["log"], () => visible() && showDetail(false));

  async function show() {
    const current = store.get();
    if (current.compare.length < 2) {
      replace(slot, messageBox("info", "Pick runs to compare", "Tick two or more runs in the list on the left."));
      detail.hidden = true;
      return;
    }
    let answer;
    try {
      answer = await ctx.latest("compare", ctx.client.compare(current.tag, current.compare));
    } catch (err) {
      replace(slot, messageBox("error", "Could not compare runs", err.message));
      return;
    }
    if (answer.stale) return;
    response = answer.value;
    names.setNames((response.rows || []).map((r) => r.variable));
    await names.refresh();
    draw();
    await showDetail(false);
  }

  return { show };
}
