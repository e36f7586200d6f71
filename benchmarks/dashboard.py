"""Dashboard: time from opening the tab to the table, or the heatmap, drawn.

Headless Debian Chromium (driven by playwright, flags as in
tests/test_browser.py) opens TensorBoard, with all its own plugins, on its
Time Series dashboard, then clicks the "Variable Updates" tab. The run of
2,000 variables is the backend section's logdir (a) (the quick run writes a
shorter one), served by the Rust loader, which `tensorboard --logdir` picks
here. The dashboard remembers the run and the view (table or heatmap) in
localStorage, as after an earlier visit.

"Drawn" is the dashboard's own signal, the `data-rendered` (table) or
`data-heatmap-rendered` (heatmap) attribute of its root, which it sets once
the rows or the canvas cells are in place, plus the next painted frame: a
task queued from the following animation frame runs after that paint. Times
are taken in the page (click) and in the dashboard's iframe (signal) on the
same clock. "Backend cold" empties the plugin's cache just before the click;
"warm" opens the tab again on cached answers. Each page load is a fresh
browser context; the first load of a series is a dropped warm-up.
"""

import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import backend  # noqa: E402
import common  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
STATE_KEY = "tb-varupdate.state"
TAB_NAME = "Variable Updates"
GOAL_S = 1.0
TIMEOUT_S = 60

# Runs in every frame before its scripts. In the dashboard's iframe it stamps
# the first painted frame after each "drawn" attribute appears.
OBSERVER = """
(() => {
  localStorage.setItem(%(key)s, %(state)s);
  const marks = (window.__vuMarks = {});
  const stamp = () => performance.timeOrigin + performance.now();
  const watch = (root) => {
    marks.root = stamp();
    new MutationObserver((changes) => {
      for (const change of changes) {
        const name = change.attributeName;
        if (name in marks) continue;
        marks[name] = null;
        requestAnimationFrame(() => setTimeout(() => { marks[name] = stamp(); }, 0));
      }
    }).observe(root, { attributes: true, attributeFilter: ["data-rendered", "data-heatmap-rendered"] });
  };
  new MutationObserver((_, observer) => {
    const root = document.getElementById("varupdate-root");
    if (root) {
      observer.disconnect();
      watch(root);
    }
  }).observe(document, { childList: true, subtree: true });
})();
"""

# Clicks TensorBoard's tab for the plugin and returns the click's time.
CLICK_TAB = """
(name) => {
  const label = [...document.querySelectorAll(".plugin-name")].find((e) => e.textContent.trim() === name);
  if (!label) return null;
  const at = performance.timeOrigin + performance.now();
  label.click();
  return at;
}
"""

# Clicks the dashboard's own Heatmap tab (in its iframe).
CLICK_HEATMAP = """
() => {
  const at = performance.timeOrigin + performance.now();
  document.querySelector(".vu-tab[data-view=heatmap]").click();
  return at;
}
"""


def _wait(page, what, poll):
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        value = poll()
        if value:
            return value
        # Not time.sleep: playwright handles the page's events while it waits.
        page.wait_for_timeout(20)
    raise RuntimeError("timed out waiting for %s" % what)


def _dashboard_frame(page):
    def find():
        for frame in page.frames:
            if frame is not page.main_frame and frame.evaluate("'__vuMarks' in window && 'root' in window.__vuMarks"):
                return frame
        return None

    return _wait(page, "the dashboard's iframe", find)


def _mark(page, frame, name):
    return _wait(page, name, lambda: frame.evaluate("(name) => window.__vuMarks[name]", name))


def open_tab(browser, url, state, clear_cache=None):
    """Opens the tab once in a fresh context.

    Returns:
      {"table" or "heatmap": seconds from the click on the tab to the view
      drawn, "frame": of which since the iframe started loading, "switch":
      for the table view, seconds from a click on Heatmap to the heatmap drawn}.
    """
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    try:
        context.add_init_script(OBSERVER % {"key": json.dumps(STATE_KEY), "state": json.dumps(state)})
        page = context.new_page()
        page.goto(url + "#timeseries")
        page.locator(".plugin-name", has_text=TAB_NAME).first.wait_for(timeout=TIMEOUT_S * 1000)
        if clear_cache is not None:
            clear_cache()
        clicked = page.evaluate(CLICK_TAB, TAB_NAME)
        if clicked is None:
            raise RuntimeError("TensorBoard shows no %r tab" % TAB_NAME)
        frame = _dashboard_frame(page)
        view = "heatmap" if "view=heatmap" in state else "table"
        drawn = _mark(page, frame, "data-heatmap-rendered" if view == "heatmap" else "data-rendered")
        origin = frame.evaluate("performance.timeOrigin")
        result = {view: (drawn - clicked) / 1e3, "frame": (drawn - origin) / 1e3}
        if view == "table":
            switched = frame.evaluate(CLICK_HEATMAP)
            result["switch"] = (_mark(page, frame, "data-heatmap-rendered") - switched) / 1e3
        errors = frame.evaluate("document.querySelectorAll('.vu-message--error').length")
        if errors:
            raise RuntimeError("the dashboard shows an error message")
        return result
    finally:
        context.close()


def _series(browser, url, state, loads, clear_cache):
    # The first load warms Chromium and TensorBoard's own page; dropped.
    results = [open_tab(browser, url, state, clear_cache) for _ in range(loads + 1)][1:]
    return {key: [r[key] for r in results] for key in results[0]}


def _cell(times):
    return "%s (%s - %s)" % (common.ms(statistics.median(times)), common.ms(min(times)), common.ms(max(times)))


def run(quick):
    from playwright import sync_api  # pylint: disable=import-outside-toplevel

    variables, steps = (2000, 200) if quick else (2000, 10000)
    loads = 3 if quick else 7
    path, wrote, size = backend.logdir_for("one_run_%dx%d" % (variables, steps), {"run": (variables, steps)})
    common.progress("dashboard: loading %d variables x %d steps" % (variables, steps))
    measured = {}
    with backend.Server(path, "true", {"run": steps - 1}, all_plugins=True) as server:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                for view, state in (("table", "run=run"), ("heatmap", "run=run&view=heatmap")):
                    for cache, clear in (("cold", server.plugin.clear_cache), ("warm", None)):
                        common.progress("dashboard: %s, backend %s, %d page loads" % (view, cache, loads))
                        measured[view, cache] = _series(browser, server.url, state, loads, clear)
            finally:
                browser.close()
    rows, targets = [], []
    for view in ("table", "heatmap"):
        for cache in ("cold", "warm"):
            times = measured[view, cache]
            rows.append(("open tab -> %s drawn" % view, cache, _cell(times[view]), _cell(times["frame"])))
            median = statistics.median(times[view])
            targets.append(common.Target(
                "dashboard: open tab -> %s drawn, %d variables, backend %s" % (view, variables, cache),
                common.ms(median), "< 1 s", median < GOAL_S))
    for cache in ("cold", "warm"):
        switch = measured["table", cache]["switch"]
        rows.append(("table shown, click Heatmap -> heatmap drawn", cache, _cell(switch), ""))
    body = "\n\n".join([
        __doc__.split("\n\n", 1)[1].strip(),
        "%d variables x %d steps (%s); median (min - max) of %d page loads each:" % (
            variables, steps, backend.describe_logdir(path, wrote, size), loads),
        common.table(("", "backend", "from the click", "of which in the dashboard's iframe"), rows),
        "\"Of which in the dashboard's iframe\" starts when TensorBoard begins loading the iframe: "
        "the rest is TensorBoard switching tabs and creating it. For \"click Heatmap\", cold "
        "means the heatmap's records were not read yet: opening the table reads only each "
        "tracker's newest records.",
    ])
    return common.Section("Dashboard", body, targets)


if __name__ == "__main__":
    sys.exit(common.main_for(run))
