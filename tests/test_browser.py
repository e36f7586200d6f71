"""End to end: TensorBoard in-process with the plugin, the dashboard in Chromium.

Runs are trained by real tiny TensorFlow models and written by the real
`VariableUpdateTracker`:

* "rebinding": `w_new = w - lr * g` makes a new tensor and leaves the variable
  `dense/kernel` untouched, the classic silent bug;
* "fixed": the same model trained with `optimizer.apply_gradients`.

Both also track a variable named like an HTML tag, which must show as text,
and "fixed" a non-trainable variable that never changes (shown quietly). A
"wide" run of 2,000 variables (records written directly with
`writers.reference.updates_record`) checks that the table stays fast.

Screenshots of each view go to test-artifacts/; with UPDATE_SCREENSHOT=1 the
view of a few demo runs is also saved as docs/screenshot.png (the README's).
"""

import contextlib
import json
import os
import pathlib
import re
import shutil
import time

import numpy as np
import pytest

sync_api = pytest.importorskip("playwright.sync_api")

from tb_varupdate.format import metadata as md  # noqa: E402
from tb_varupdate.format import variables as vr  # noqa: E402
from tb_varupdate.writers import reference  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
ROOT = pathlib.Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
XSS_NAME = "<img src=x onerror=window.__xss=1>"
LONG_NAME = "encoder/" + "a_very_long_block_name_" * 8 + "/kernel"
STEPS = 60
# Fewer samples than steps, so the detail view must say it was downsampled.
SAMPLES = 20
WIDE_VARIABLES = 2000

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium at %s" % CHROMIUM)


def _train(logdir, run, rebinding):
    """Trains y = x @ kernel + bias for STEPS steps with the tracker logging each one."""
    import tensorflow as tf

    from tb_varupdate.writers.tf.tracker import VariableUpdateTracker

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(32, 3)), tf.float32)
    y = x @ tf.constant([[1.0], [-2.0], [0.5]]) + 0.3
    kernel = tf.Variable(tf.fill([3, 1], 0.1), name="dense/kernel")
    bias = tf.Variable(tf.zeros([1]), name="dense/bias")
    scale = tf.Variable(1.0, name=XSS_NAME)
    variables = [kernel, bias, scale]
    if not rebinding:
        variables.append(tf.Variable(tf.zeros([4]), trainable=False, name="batch_norm/moving_mean"))
        variables.append(tf.Variable(tf.zeros([2]), trainable=False, name=LONG_NAME))
    tracker = VariableUpdateTracker(variables, name="model", on_stuck="ignore")
    optimizer = tf.keras.optimizers.SGD(0.05)
    writer = tf.summary.create_file_writer(os.path.join(logdir, run))
    trainable = [kernel, bias, scale]
    with writer.as_default():
        for step in range(STEPS):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean((scale * (x @ kernel) + bias - y) ** 2)
            grads = tape.gradient(loss, trainable)
            if rebinding:
                # The bug under test: a new tensor, the variable never changes.
                new_kernel = kernel - 0.05 * grads[0]  # noqa: F841
                bias.assign_sub(0.05 * grads[1])
                scale.assign_sub(0.05 * grads[2])
            else:
                optimizer.apply_gradients(zip(grads, trainable))
            tracker.log(step, gradients=zip(grads, trainable))
    writer.close()


def _write_wide(logdir, run="wide", count=WIDE_VARIABLES, steps=5):
    """`count` variables in 40 layers, every 50th never changing, written as real records."""
    import tensorflow as tf

    entries = [
        {"name": "net/block_%02d/layer_%04d/kernel" % (i % 40, i), "shape": [16, 16],
         "dtype": "float32", "trainable": True, "joined": 0}
        for i in range(count)
    ]
    names_json, digest = vr.encode_variables(entries)
    stuck = np.arange(count) % 50 == 0
    writer = tf.summary.create_file_writer(os.path.join(logdir, run))
    with writer.as_default():
        tf.summary.write(md.variables_tag("model"), tf.constant(names_json), 0,
                         metadata=md.create_summary_metadata(md.KIND_VARIABLES))
        for step in range(steps):
            ints = np.zeros((count, md.NUM_COLUMNS), np.int64)
            floats = np.zeros((count, md.NUM_COLUMNS), np.float64)
            changed = np.where(stuck, 0, step + 1)
            ints[:, md.CHANGED_STEPS] = changed
            ints[:, md.FIRST_UPDATE_STEP] = np.where(stuck, -1, 0)
            ints[:, md.LAST_UPDATE_STEP] = np.where(stuck, -1, step)
            ints[:, md.LOGS_AT_LAST_UPDATE] = np.where(stuck, 0, step + 1)
            ints[:, md.GRAD_PRESENT_STEPS] = step + 1
            ints[:, md.FIRST_NON_FINITE_STEP] = -1
            ints[:, md.ROWS_CHANGED] = -1
            ints[:, md.TRAINABLE] = 1
            floats[:, md.DELTA_L2] = np.where(stuck, 0.0, 1e-3 * (1 + np.arange(count) % 7))
            floats[:, md.VALUE_L2] = 1.0
            floats[:, md.GRAD_L2] = 0.5
            floats[:, md.MAX_RELATIVE_UPDATE] = floats[:, md.DELTA_L2]
            record = reference.updates_record({"logged": step + 1, "names_hash": digest, "every_n": 1}, ints, floats)
            tf.summary.write(md.updates_tag("model"), tf.constant(record), step,
                             metadata=md.create_summary_metadata(md.KIND_UPDATES))
    writer.close()


def _write_unreadable(logdir, run="unreadable"):
    """A run whose only updates record has the wrong dtype: listed, but with no readable records."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(os.path.join(logdir, run))
    with writer.as_default():
        tf.summary.write(md.updates_tag("model"), tf.zeros([2, md.NUM_COLUMNS], tf.float32), 0,
                         metadata=md.create_summary_metadata(md.KIND_UPDATES))
    writer.close()


@contextlib.contextmanager
def _serve(logdir, **flags):
    """A TensorBoard of its own over `logdir` (Python loader); yields its URL."""
    from tensorboard import default, program

    from tb_varupdate import plugin

    made = []

    def make_server(app, server_flags):
        # Kept to shut the server down; launch() does not return it.
        made.append(program.WerkzeugServer(app, server_flags))
        return made[-1]

    board = program.TensorBoard(
        plugins=default.get_static_plugins() + [plugin.VarUpdateLoader()], server_class=make_server
    )
    board.configure(logdir=str(logdir), host="127.0.0.1", port=0, load_fast="false",
                    reload_interval=0, reload_task="blocking", **flags)
    url = board.launch()
    try:
        yield url
    finally:
        made[-1].shutdown()
        made[-1].server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("logs")
    _train(str(logdir), "rebinding", rebinding=True)
    _train(str(logdir), "fixed", rebinding=False)
    _write_wide(str(logdir))
    _write_unreadable(str(logdir))
    with _serve(logdir, samples_per_plugin={"varupdate": SAMPLES}) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.errors = errors
    yield page
    context.close()


def _shot(target, name):
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    target.screenshot(path=str(path))
    return path


def _open(page, server, state=""):
    """Opens the tab (optionally with a remembered state) and returns its frame."""
    if state:
        page.add_init_script("localStorage.setItem('tb-varupdate.state', %s)" % json.dumps(state))
    page.goto(server + "#varupdate")
    deadline = time.time() + 30
    while time.time() < deadline:
        for frame in page.frames:
            try:
                if frame.query_selector("#varupdate-root"):
                    return frame
            except sync_api.Error:
                pass
        page.wait_for_timeout(100)
    raise AssertionError("the dashboard's iframe never rendered #varupdate-root")


def _has_route(route):
    from tensorboard.plugins import base_plugin

    from tb_varupdate import plugin

    return route in plugin.VarUpdatePlugin(base_plugin.TBContext()).get_plugin_apps()


def _row(frame, variable):
    return frame.locator(".vu-row[data-variable=%s]" % json.dumps(variable))


def test_tab_lists_runs_and_flags_the_rebound_variable(page, server):
    frame = _open(page, server, "run=rebinding")
    assert page.get_by_text("Variable Updates").first.is_visible()
    kernel = _row(frame, "dense/kernel")
    kernel.wait_for()
    assert frame.locator(".vu-run").evaluate_all("els => els.map(e => e.dataset.run)") == ["fixed", "rebinding", "unreadable", "wide"]
    assert frame.locator(".vu-banner-line").first.inner_text() == "1 of 3 trainable variables never updated"
    # Problems first, in red, with the diagnosis naming the rebinding bug.
    first = frame.locator(".vu-row[data-variable]").first
    assert first.get_attribute("data-variable") == "dense/kernel"
    assert "vu-row--never" in kernel.get_attribute("class")
    color = kernel.locator(".vu-name").evaluate("e => getComputedStyle(e).color")
    assert color == "rgb(211, 47, 47)"
    assert "v = v - lr * g" in kernel.locator(".vu-diagnosis").get_attribute("title")
    assert kernel.locator(".vu-badge").first.inner_text() == "never updated"
    kernel.click()
    frame.locator(".vu-main > .vu-detail .uplot").first.wait_for()
    _shot(page, "overview.png")
    assert page.errors == []


def test_html_in_a_variable_name_is_text(page, server):
    frame = _open(page, server, "run=rebinding")
    row = _row(frame, XSS_NAME)
    row.wait_for()
    assert row.locator(".vu-name").inner_text() == XSS_NAME
    assert frame.locator(".vu-root img, .vu-app img").count() == 0
    row.click()
    frame.locator(".vu-detail-name").wait_for()
    assert frame.locator(".vu-detail-name").inner_text() == XSS_NAME
    frame.get_by_role("tab", name="Heatmap").click()
    frame.locator(".vu-heatmap-canvas").wait_for()
    assert frame.locator("img").count() == 0
    assert frame.evaluate("window.__xss") is None
    assert page.evaluate("window.__xss") is None


def test_filter_sort_and_group(page, server):
    frame = _open(page, server, "run=fixed")
    _row(frame, "dense/kernel").wait_for()
    names = lambda: frame.locator(".vu-row[data-variable]").evaluate_all("els => els.map(e => e.dataset.variable)")  # noqa: E731
    # The frozen, non-trainable variable is quiet, not an error.
    frozen = _row(frame, "batch_norm/moving_mean")
    assert frozen.locator(".vu-badge").first.inner_text() == "frozen"
    assert "vu-row--problem" not in frozen.get_attribute("class")
    assert frame.locator(".vu-banner").get_attribute("class").endswith("vu-banner--ok")

    search = frame.get_by_label("Filter variables by name")
    search.fill("DENSE")
    assert sorted(names()) == ["dense/bias", "dense/kernel"]
    frame.locator(".vu-check", has_text="regex").locator("input").check()
    search.fill("dense/(kern")
    assert "Invalid regular expression" in frame.locator(".vu-filter-error").inner_text()
    search.fill("^dense/k")
    assert names() == ["dense/kernel"]
    assert frame.locator(".vu-filter-error").is_hidden()
    search.fill("")

    frame.locator("button[data-sort=variable]").click()
    assert names() == sorted(names())
    frame.locator("button[data-sort=variable]").click()
    assert names() == sorted(names(), reverse=True)
    frame.get_by_label("Status filter").select_option("never_updated")
    assert sorted(names()) == sorted(["batch_norm/moving_mean", LONG_NAME])
    frame.get_by_label("Status filter").select_option("")

    frame.locator(".vu-check", has_text="group by layer").locator("input").check()
    group = frame.locator(".vu-row--group[data-group=dense]")
    assert group.inner_text().replace("\n", " ").startswith("\u25be dense 2 variables")
    group.click()
    assert "dense/kernel" not in names()
    _shot(page, "overview-grouped.png")
    group.click()
    assert "dense/kernel" in names()
    assert page.errors == []


def test_long_names_are_cut_with_the_full_name_on_hover(page, server):
    frame = _open(page, server, "run=fixed")
    cell = _row(frame, LONG_NAME).locator(".vu-name")
    cell.wait_for()
    assert cell.get_attribute("title") == LONG_NAME
    assert cell.evaluate("e => e.scrollWidth > e.clientWidth && getComputedStyle(e).textOverflow === 'ellipsis'")
    row_height = _row(frame, LONG_NAME).evaluate("e => e.getBoundingClientRect().height")
    assert row_height == _row(frame, "dense/bias").evaluate("e => e.getBoundingClientRect().height")


def test_a_deep_link_in_the_host_url_selects_run_and_view(page, server):
    page.goto(server + "#varupdate&p.varupdate.run=fixed&p.varupdate.view=heatmap")
    frame = None
    for _ in range(300):
        frame = next((f for f in page.frames if f.query_selector("#varupdate-root")), None)
        if frame:
            break
        page.wait_for_timeout(100)
    assert frame is not None, "the dashboard never rendered"
    frame.locator(".vu-run--selected[data-run=fixed]").wait_for()
    frame.locator(".vu-pane--heatmap .vu-heatmap-canvas").wait_for()
    assert frame.get_by_label("Inspect fixed").is_checked()


def test_detail_charts_and_downsampling_note(page, server):
    frame = _open(page, server, "run=rebinding")
    _row(frame, "dense/bias").click()
    detail = frame.locator(".vu-main > .vu-detail")
    detail.locator(".uplot").first.wait_for()
    assert detail.locator(".uplot").count() == 3
    assert detail.locator(".vu-chart-title", has_text="Gradient state").count() == 1
    assert "--samples_per_plugin=varupdate=0" in detail.locator(".vu-note").inner_text()
    assert "Charts show %d of %d logged steps" % (SAMPLES, STEPS) in detail.locator(".vu-note").inner_text()
    # Hovering a chart shows the step and the value under the cursor.
    over = detail.locator(".u-over").nth(1)
    box = over.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    tip = detail.locator(".vu-chart").nth(1).locator(".vu-tooltip")
    tip.wait_for()
    assert re.match(r"step \d+\nrelative_update: [0-9.e+-]+", tip.inner_text())
    _shot(page, "detail.png")
    detail.get_by_text("log scale").click()
    detail.locator(".uplot").first.wait_for()
    assert not detail.get_by_role("checkbox").is_checked()
    assert page.errors == []


def test_heatmap_hover_and_click_open_detail(page, server):
    frame = _open(page, server, "run=rebinding&view=heatmap")
    canvas = frame.locator(".vu-heatmap-canvas")
    canvas.wait_for()
    frame.locator(".vu-legend", has_text="no change").wait_for()
    frame.locator("#varupdate-root[data-heatmap-rendered='rebinding|3']").wait_for()
    # Row 0's cells (the never-updated kernel) are painted in the "no change" red.
    pixel = canvas.evaluate("c => [...c.getContext('2d').getImageData(c.width - 5, 5, 1, 1).data]")
    assert pixel == [229, 57, 53, 255]
    box = canvas.bounding_box()
    # Row 0 is the problem variable (rows follow the variables route's order).
    page.mouse.move(box["x"] + box["width"] - 5, box["y"] + 5)
    tip = frame.locator(".vu-heatmap > .vu-tooltip")
    tip.wait_for()
    assert tip.inner_text().startswith("dense/kernel\nstep")
    assert "no change (0)" in tip.inner_text()
    _shot(page, "heatmap.png")
    page.mouse.click(box["x"] + box["width"] - 5, box["y"] + 5)
    frame.locator(".vu-detail-name", has_text="dense/kernel").wait_for()
    assert page.errors == []


def test_compare_runs_highlights_disagreement_and_overlays(page, server):
    frame = _open(page, server, "view=compare")
    frame.get_by_label("Compare wide").uncheck()
    frame.get_by_label("Compare unreadable").uncheck()
    table = frame.locator(".vu-compare")
    table.wait_for()
    kernel = table.locator("tr[data-variable=%s]" % json.dumps("dense/kernel"))
    assert "vu-disagree" in kernel.get_attribute("class")
    assert kernel.locator("td[data-run=rebinding]").inner_text() == "never updated"
    assert kernel.locator("td[data-run=fixed]").inner_text() == "updating"
    frame.locator(".vu-check", has_text="only rows where runs disagree").locator("input").check()
    rows = table.locator("tbody tr").evaluate_all("els => els.map(e => e.dataset.variable)")
    assert "dense/kernel" in rows and "dense/bias" not in rows
    kernel.locator("td[data-run=rebinding]").click()
    overlay = frame.locator(".vu-pane--compare .vu-detail")
    overlay.locator(".uplot").first.wait_for()
    legend = overlay.locator(".uplot").first.locator(".u-legend .u-label").all_inner_texts()
    assert legend == ["step", "fixed", "rebinding"]
    _shot(page, "compare.png")
    assert page.errors == []


def test_two_thousand_variables_render_virtualised(page, server):
    # How fast is measured in benchmarks/dashboard.py, not timed here.
    frame = _open(page, server, "run=fixed")
    _row(frame, "dense/kernel").wait_for()
    frame.get_by_label("Inspect wide").check()
    frame.locator(".vu-row[data-variable^='net/']").first.wait_for()
    assert frame.locator(".vu-pane--overview .vu-count").inner_text() == "2000 variables"
    assert frame.locator(".vu-banner-line").first.inner_text() == "40 of 2000 trainable variables never updated"
    # Virtualised: only the rows in view exist.
    assert frame.locator(".vu-row[data-variable]").count() < 80
    body = frame.locator(".vu-vlist")
    body.evaluate("e => { e.scrollTop = e.scrollHeight; e.dispatchEvent(new Event('scroll')); }")
    last = frame.locator(".vu-row[data-variable]").last
    assert last.get_attribute("data-variable").startswith("net/block_")
    frame.get_by_role("tab", name="Heatmap").click()
    frame.locator("#varupdate-root[data-heatmap-rendered='wide|2000']").wait_for()
    _shot(page, "heatmap-wide.png")
    assert page.errors == []


def test_reload_keeps_selection_and_scroll(page, server):
    frame = _open(page, server, "run=wide")
    frame.locator(".vu-row[data-variable^='net/']").first.wait_for()
    body = frame.locator(".vu-vlist")
    body.evaluate("e => { e.scrollTop = 3520; e.dispatchEvent(new Event('scroll')); }")
    name = frame.locator(".vu-row[data-variable^='net/']").nth(10).get_attribute("data-variable")
    _row(frame, name).click()
    frame.locator(".vu-main > .vu-detail .uplot").first.wait_for()
    assert frame.locator(".vu-main > .vu-detail .vu-detail-name").inner_text() == name
    frame.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    page_scroll = frame.evaluate("window.scrollY")
    assert page_scroll > 0
    runs_requests = []
    page.on("request", lambda r: runs_requests.append(r.url) if r.url.endswith("/data/plugin/varupdate/runs") else None)
    # TensorBoard's own reload button broadcasts experimental.DataReloaded.
    page.locator("app-header-reload button, button[aria-label*=Reload i]").first.click()
    page.wait_for_timeout(1500)
    assert runs_requests, "the dashboard did not refetch on TensorBoard's reload"
    assert frame.evaluate("window.scrollY") == page_scroll
    # The dashboard's own button (the sidebar stays in view while scrolled).
    frame.get_by_role("button", name="Refresh").click()
    page.wait_for_timeout(800)
    assert len(runs_requests) >= 2
    assert frame.get_by_label("Inspect wide").is_checked()
    assert body.evaluate("e => e.scrollTop") == 3520
    assert frame.locator(".vu-main > .vu-detail .vu-detail-name").inner_text() == name
    assert frame.evaluate("window.scrollY") == page_scroll


def test_backend_errors_and_an_empty_logdir_read_clearly(page, server, tmp_path):
    page.route("**/data/plugin/varupdate/heatmap*", lambda route: route.fulfill(
        status=500, content_type="application/json", body=json.dumps({"error": "the heatmap broke"})))
    page.route("**/data/plugin/varupdate/series*", lambda route: route.abort())
    frame = _open(page, server, "run=rebinding&view=heatmap")
    error = frame.locator(".vu-message--error")
    error.wait_for()
    assert "The server answered 500 for" in error.inner_text()
    assert "the heatmap broke" in error.inner_text()
    frame.get_by_role("tab", name="Overview").click()
    _row(frame, "dense/kernel").click()
    frame.locator(".vu-detail .vu-message--error", has_text="Could not reach TensorBoard").wait_for()
    _shot(page, "errors.png")

    page.unroute("**/data/plugin/varupdate/heatmap*")
    page.route("**/data/plugin/varupdate/runs", lambda route: route.fulfill(
        status=200, content_type="application/json", body=json.dumps({"runs": [], "warnings": []})))
    frame.get_by_role("button", name="Refresh").click()
    empty = frame.locator(".vu-message--empty")
    empty.wait_for()
    assert "No varupdate records yet" in empty.inner_text()
    assert "tracker.log(step)" in empty.inner_text()
    _shot(page, "empty.png")


def test_a_run_without_readable_records_explains_itself(page, server):
    frame = _open(page, server, "run=unreadable")
    banner = frame.locator(".vu-banner--empty")
    banner.wait_for()
    assert banner.locator(".vu-banner-line").inner_text() == "No variables tracked in this record."
    # The backend's reason is shown once, not once per route that reported it.
    skipped = frame.locator(".vu-message", has_text="was skipped")
    assert skipped.count() == 1
    skipped.locator("summary").click()
    assert "must be int32" in skipped.inner_text()
    assert frame.locator(".vu-table-empty").inner_text() == "No variables tracked."
    _shot(page, "unreadable.png")
    assert page.errors == []


def test_works_under_a_path_prefix(browser, tmp_path):
    _write_wide(str(tmp_path), run="prefixed", count=3, steps=2)
    with _serve(tmp_path, path_prefix="/under/here") as url:
        context = browser.new_context()
        page = context.new_page()
        failed = []
        # Only the plugin's own requests: TensorBoard itself fetches its fonts from
        # /font-roboto/ whatever the prefix, which fails here and is not ours.
        # The vocabulary route may not exist yet: the dashboard then uses its own copy.
        optional = () if _has_route("/vocabulary") else ("/data/plugin/varupdate/vocabulary",)
        page.on("response", lambda r: failed.append(r.url) if r.status >= 400 and "varupdate" in r.url
                and not (optional and r.url.endswith(optional)) else None)
        ours = []
        page.on("request", lambda r: ours.append(r.url) if "/data/plugin/varupdate/" in r.url else None)
        try:
            assert url.endswith("/under/here/")
            frame = _open(page, url)
            frame.locator(".vu-row[data-variable^='net/']").first.wait_for()
            assert failed == []
            assert ours and all(u.startswith(url + "data/plugin/varupdate/") for u in ours)
        finally:
            context.close()


def test_demo_runs_in_the_tab_and_the_readme_screenshot(browser, tmp_path):
    """A few demo scenarios as a newcomer sees them; docs/screenshot.png comes from here."""
    import sys

    sys.path.insert(0, str(ROOT))
    from demo import run_all, scenarios

    chosen = [s for s in scenarios.SCENARIOS if s.name in (
        "seed1_rebinding", "seed2_apply_gradients", "keras_frozen_and_unused", "dead_relu")]
    assert run_all.run(str(tmp_path), chosen, out=open(os.devnull, "w")) == []
    with _serve(tmp_path) as url:
        context = browser.new_context(viewport={"width": 1440, "height": 640})
        page = context.new_page()
        try:
            frame = _open(page, url, "run=keras_frozen_and_unused/train")
            unused = _row(frame, "net/aux/kernel")
            unused.wait_for()
            assert unused.locator(".vu-badge").first.inner_text() == "never updated"
            assert "not connected to the loss" in unused.locator(".vu-diagnosis").get_attribute("title")
            _shot(page, "demo.png")
            if os.environ.get("UPDATE_SCREENSHOT") == "1":
                shutil.copy(ARTIFACTS / "demo.png", ROOT / "docs" / "screenshot.png")
            unused.click()
            frame.locator(".vu-main > .vu-detail .uplot").first.wait_for()
        finally:
            context.close()


def test_dark_mode_follows_the_host(browser, server):
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, color_scheme="dark")
    page = context.new_page()
    try:
        frame = _open(page, server, "run=rebinding")
        _row(frame, "dense/kernel").wait_for()
        background = lambda: frame.evaluate("getComputedStyle(document.body).backgroundColor")  # noqa: E731
        assert page.evaluate("document.body.classList.contains('dark-mode')")
        assert background() == "rgb(48, 48, 48)"
        _shot(page, "overview-dark.png")
        page.evaluate("document.body.classList.remove('dark-mode')")
        page.wait_for_function("() => true")
        frame.wait_for_function("getComputedStyle(document.body).backgroundColor === 'rgb(255, 255, 255)'")
    finally:
        context.close()


# Hostile names and patterns (#13 items 15-16): each costs only itself.

# `(a+)+b` over 40 a's backtracks ~2**40 times: hours on the page's thread.
CATASTROPHIC_NAME = "a" * 40
RTL_NAME = "layer/\u202egnp.exe"  # a right-to-left override inside a name
# Two folders deep: one file name may not pass 255 bytes.
LONG_RUN = "sweep_" + "very_long_experiment_name_" * 6 + "/trial_" + "with_a_long_description_" * 6


def _write_named(logdir, run, names, zero=(), zero_rows=()):
    """A run whose trainable variables `names` all update every step, except `zero` (value and delta 0).

    `zero_rows`: row indices that do not update either (for names that repeat).
    """
    import tensorflow as tf

    entries = [{"name": n, "shape": [4], "dtype": "float32", "trainable": True, "joined": 0} for n in names]
    names_json, digest = vr.encode_variables(entries)
    stuck = np.array([n in zero or i in zero_rows for i, n in enumerate(names)])
    writer = tf.summary.create_file_writer(os.path.join(logdir, run))
    with writer.as_default():
        tf.summary.write(md.variables_tag("model"), tf.constant(names_json), 0,
                         metadata=md.create_summary_metadata(md.KIND_VARIABLES))
        for step in range(3):
            ints = np.zeros((len(names), md.NUM_COLUMNS), np.int64)
            floats = np.zeros((len(names), md.NUM_COLUMNS), np.float64)
            ints[:, md.CHANGED_STEPS] = np.where(stuck, 0, step + 1)
            ints[:, md.FIRST_UPDATE_STEP] = np.where(stuck, -1, 0)
            ints[:, md.LAST_UPDATE_STEP] = np.where(stuck, -1, step)
            ints[:, md.LOGS_AT_LAST_UPDATE] = np.where(stuck, 0, step + 1)
            ints[:, md.GRAD_NONE_STEPS] = np.where(stuck, step + 1, 0)
            ints[:, md.GRAD_PRESENT_STEPS] = np.where(stuck, 0, step + 1)
            ints[:, md.FIRST_NON_FINITE_STEP] = -1
            ints[:, md.ROWS_CHANGED] = -1
            ints[:, md.TRAINABLE] = 1
            floats[:, md.DELTA_L2] = np.where(stuck, 0.0, 1e-3)
            floats[:, md.VALUE_L2] = np.where(stuck, 0.0, 1.0)
            floats[:, md.GRAD_L2] = np.where(stuck, md.GRAD_NONE, 0.5)
            floats[:, md.MAX_RELATIVE_UPDATE] = np.where(stuck, np.nan, 1e-3)
            record = reference.updates_record({"logged": step + 1, "names_hash": digest, "every_n": 1,
                                        "logs_at_last_finite_grads": step + 1}, ints, floats)
            tf.summary.write(md.updates_tag("model"), tf.constant(record), step,
                             metadata=md.create_summary_metadata(md.KIND_UPDATES))
    writer.close()


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("hostile")
    names = [CATASTROPHIC_NAME, RTL_NAME, "dense/bias", "dense/kernel"]
    _write_named(str(logdir), "hostile", names, zero=("dense/bias",))
    _write_named(str(logdir), "__proto__", names)
    _write_named(str(logdir), LONG_RUN, names, zero=("dense/kernel",))
    with _serve(logdir) as url:
        yield url


def _frame_of(page):
    for _ in range(300):
        frame = next((f for f in page.frames if f.query_selector("#varupdate-root")), None)
        if frame:
            return frame
        page.wait_for_timeout(100)
    raise AssertionError("the dashboard never rendered")


def test_a_catastrophic_regex_in_a_deep_link_does_not_block_the_tab(page, hostile_server):
    page.goto(hostile_server + "#varupdate&p.varupdate.run=hostile&p.varupdate.query=%28a%2B%29%2Bb&p.varupdate.regex=1")
    frame = _frame_of(page)
    # The page answers while the pattern runs (a blocked thread would not
    # evaluate anything until the regex gave up, hours later).
    started = time.monotonic()
    assert frame.evaluate("() => 1 + 1") == 2
    assert time.monotonic() - started < 5
    note = frame.locator(".vu-pane--overview .vu-filter-note")
    note.wait_for(timeout=20000)
    assert "took longer than" in note.inner_text() and "plain text" in note.inner_text()
    # The fallback is a substring match: no name contains "(a+)+b".
    assert frame.locator(".vu-table-empty").inner_text() == "No variable matches the filter."
    # A sane pattern afterwards filters as usual, and the note goes.
    frame.get_by_label("Filter variables by name").fill("^dense/")
    frame.locator(".vu-row[data-variable='dense/bias']").wait_for()
    assert frame.locator(".vu-filter-note").count() == 0
    assert page.errors == []


def test_names_are_isolated_and_a_zero_bias_reads_the_same_everywhere(page, hostile_server):
    frame = _open(page, hostile_server, "run=hostile")
    rtl = frame.locator(".vu-row[data-variable=%s]" % json.dumps(RTL_NAME, ensure_ascii=False))
    rtl.wait_for()
    # The override stays inside the name: the badge after it is not reordered.
    assert rtl.locator(".vu-name bdi").evaluate("e => getComputedStyle(e).unicodeBidi") == "isolate"
    assert rtl.locator(".vu-name").evaluate("e => getComputedStyle(e).unicodeBidi") == "isolate"
    assert frame.locator(".vu-run[data-run=hostile] .vu-run-name bdi").count() == 1
    # A zero bias that never trains: relative update 0 in the table, as in the heatmap's "no change".
    bias = _row(frame, "dense/bias")
    assert bias.locator(".vu-num").nth(3).inner_text() == "0"
    rtl.click()
    frame.locator(".vu-detail-name bdi").wait_for()
    assert frame.locator(".vu-detail-name bdi").inner_text() == RTL_NAME
    assert page.errors == []


def test_proto_run_has_a_colour_and_long_run_names_stay_in_the_compare_legend(page, hostile_server):
    frame = _open(page, hostile_server, "view=compare")
    table = frame.locator(".vu-compare")
    table.wait_for()
    swatches = table.locator("thead .vu-swatch").evaluate_all("els => els.map(e => e.style.background)")
    assert len(swatches) == 3 and all(swatches), swatches  # `__proto__` included
    assert frame.locator(".vu-run[data-run=__proto__] .vu-compare-box").evaluate("e => e.style.accentColor") != ""
    header = table.locator("th .vu-th-run").last
    assert header.evaluate("e => e.getBoundingClientRect().width") <= 200
    table.locator("tr[data-variable='dense/kernel'] td[data-run=hostile]").click()
    chart = frame.locator(".vu-pane--compare .vu-detail .vu-chart").first
    chart.locator(".u-legend").wait_for()
    legend = chart.locator(".u-legend")
    chart_width = chart.evaluate("e => e.getBoundingClientRect().width")
    assert legend.evaluate("e => e.getBoundingClientRect().width") <= chart_width + 2  # sub-pixel rounding
    assert frame.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    _shot(page, "compare-hostile.png")
    assert page.errors == []


# Issue #21: names are no keys. A variable called "", and two called "x" (row 1
# never updates, row 2 does), each open as themselves in the table and heatmap.


@pytest.fixture(scope="module")
def same_name_server(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("same_name")
    _write_named(str(logdir), "dupes", ["", "x", "x"], zero_rows=(1,))
    # The same names, all updating: compare meets each "x" with its own.
    _write_named(str(logdir), "dupes_fixed", ["", "x", "x"])
    with _serve(logdir) as url:
        yield url


def _wait_detail(frame, status):
    """Waits for the detail panel to show a variable of `status`, with its charts."""
    detail = frame.locator(".vu-main > .vu-detail")
    detail.locator(".vu-detail-head .vu-badge", has_text=status).first.wait_for()
    detail.locator(".uplot").first.wait_for()
    return detail.locator(".vu-detail-head .vu-badge").first.inner_text()


def test_an_empty_name_and_two_of_one_name_open_as_themselves(page, same_name_server):
    frame = _open(page, same_name_server, "run=dupes")
    rows = frame.locator(".vu-row[data-index]")
    rows.first.wait_for()
    found = rows.evaluate_all("els => els.map(e => [e.dataset.variable, e.dataset.index])")
    assert sorted(found) == [["", "0"], ["x", "1"], ["x", "2"]]
    frame.locator(".vu-row[data-index='0']").click()
    assert frame.locator(".vu-main > .vu-detail .vu-detail-name").inner_text() == '""'
    assert _wait_detail(frame, "updating") == "updating"
    frame.locator(".vu-row[data-index='1']").click()
    frame.locator(".vu-row--selected[data-index='1']").wait_for()
    assert _wait_detail(frame, "never updated") == "never updated"
    frame.locator(".vu-row[data-index='2']").click()
    frame.locator(".vu-row--selected[data-index='2']").wait_for()
    assert _wait_detail(frame, "updating") == "updating"
    # The heatmap: row 0 is the never-updated "x" (problems first), painted "no change" red.
    frame.get_by_role("tab", name="Heatmap").click()
    canvas = frame.locator(".vu-heatmap-canvas")
    frame.locator("#varupdate-root[data-heatmap-rendered='dupes|3']").wait_for()
    pixel = canvas.evaluate("c => [...c.getContext('2d').getImageData(c.width - 5, 5, 1, 1).data]")
    assert pixel == [229, 57, 53, 255]
    box = canvas.bounding_box()
    page.mouse.click(box["x"] + box["width"] - 5, box["y"] + 5)
    frame.locator(".vu-main > .vu-detail .vu-detail-name", has_text="x").wait_for()
    assert _wait_detail(frame, "never updated") == "never updated"
    assert page.errors == []


def test_compare_keeps_two_variables_of_one_name_apart(page, same_name_server):
    frame = _open(page, same_name_server, "view=compare")
    table = frame.locator(".vu-compare")
    table.wait_for()
    rows = table.locator("tbody tr").evaluate_all("els => els.map(e => e.dataset.variable)")
    assert sorted(rows) == ["", "x", "x"]
    # The disagreeing "x" (never updated in dupes) comes first.
    first = table.locator("tbody tr").first
    assert first.get_attribute("data-variable") == "x"
    assert first.locator("td[data-run=dupes]").inner_text() == "never updated"
    assert first.locator("td[data-run=dupes_fixed]").inner_text() == "updating"
    first.locator("td[data-run=dupes]").click()
    overlay = frame.locator(".vu-pane--compare .vu-detail")
    overlay.locator(".uplot").first.wait_for()
    legend = overlay.locator(".uplot").first.locator(".u-legend .u-label").all_inner_texts()
    assert legend == ["step", "dupes", "dupes_fixed"]
    assert "vu-row--selected" in first.get_attribute("class")
    assert table.locator("tbody tr.vu-row--selected").count() == 1
    assert page.errors == []


def _write_diverged(logdir, run="ddp_diverged", steps=12):
    """Version 4 records (a PyTorch tracker under torch.distributed): `out.bias` differs between ranks from step 9."""
    import tensorflow as tf

    names = ["hidden.weight", "out.bias"]
    entries = [{"name": n, "shape": [2], "dtype": "float32", "trainable": True, "joined": 0, "role": "parameter"}
               for n in names]
    names_json, digest = vr.encode_variables(entries)
    writer = tf.summary.create_file_writer(os.path.join(logdir, run))
    with writer.as_default():
        tf.summary.write(md.variables_tag("model"), tf.constant(names_json), 0,
                         metadata=md.create_summary_metadata(md.KIND_VARIABLES, md.REPLICAS_VERSION))
        for step in range(steps):
            ints = np.zeros((len(names), md.NUM_COLUMNS), np.int64)
            floats = np.zeros((len(names), md.NUM_COLUMNS), np.float64)
            ints[:, md.CHANGED_STEPS] = step + 1
            ints[:, md.LAST_UPDATE_STEP] = step
            ints[:, md.LOGS_AT_LAST_UPDATE] = step + 1
            ints[:, md.GRAD_PRESENT_STEPS] = step + 1
            ints[:, md.FIRST_NON_FINITE_STEP] = -1
            ints[:, md.ROWS_CHANGED] = -1
            ints[:, md.TRAINABLE] = 1
            floats[:, md.DELTA_L2] = 0.01
            floats[:, md.VALUE_L2] = 1.0
            floats[:, md.GRAD_L2] = 0.5
            floats[:, md.MAX_RELATIVE_UPDATE] = 0.01
            record = reference.updates_record({"logged": step + 1, "names_hash": digest, "every_n": 1}, ints, floats)
            extra = np.zeros((1 + len(names), 2), np.int32)
            checked = step >= 9
            extra[1:, 0] = np.asarray([0.0, 0.25] if checked else [np.nan, np.nan], np.float32).view(np.int32)
            extra[1:, 1] = [-1, 9 if checked else -1]
            tf.summary.write(md.updates_tag("model"), tf.constant(np.concatenate([record, extra], 1)), step,
                             metadata=md.create_summary_metadata(md.KIND_UPDATES, md.REPLICAS_VERSION))
    writer.close()


def test_replicas_diverged_is_a_problem_in_the_tab(browser, tmp_path):
    _write_diverged(str(tmp_path))
    with _serve(tmp_path) as url:
        context = browser.new_context(viewport={"width": 1440, "height": 1000})
        page = context.new_page()
        try:
            frame = _open(page, url, "run=ddp_diverged")
            bias = _row(frame, "out.bias")
            bias.wait_for()
            assert frame.locator(".vu-row[data-variable]").first.get_attribute("data-variable") == "out.bias"
            assert bias.locator(".vu-badge").first.inner_text() == "replicas diverged"
            assert "first seen at step 9" in bias.locator(".vu-diagnosis").get_attribute("title")
            assert _row(frame, "hidden.weight").locator(".vu-badge").first.inner_text() == "updating"
            assert frame.locator(".vu-banner-line").first.inner_text() == "1 of 2 trainable variables differ between ranks"
            options = frame.get_by_label("Status filter").locator("option").all_inner_texts()
            assert "replicas diverged" in options
        finally:
            context.close()
