"""Backend: time the plugin's routes take through a real TensorBoard server.

Each logdir holds real event files: `varupdate` records (int32 `[1 + V,
NUM_COLUMNS]` tensors built with `writers.reference.updates_record`, the
tracker's encoding) written with `tf.summary.write`, with synthetic but consistent
values: cumulative counters as the tracker keeps them, and variables that
never update, lose their gradient, stall half-way, update every 4th step,
update by tiny amounts, or are non-trainable statistics. Writing 2,000
variables x 10,000 steps through the tracker itself would take far longer
and measure the writer, not the backend.

A TensorBoard runs in-process with its default flags (so the plugin's
loader raises the kept records to `history.DEFAULT_SAMPLES`), under the
Python loader (`load_fast=false`) and the Rust one (`load_fast=true`), and
is asked over HTTP, with `Accept-Encoding: gzip` as a browser sends it.
"Cold" empties the plugin's parsed-record cache (`VarUpdatePlugin.clear_cache`)
before each request, so the request reads and parses records from the data
provider; "warm" repeats a request whose tracker is cached. Load time (the
server reading the event files) is reported apart and never inside a route's
time.

Logdirs are written once into a cache folder (`$VARUPDATE_BENCH_DIR`, else
`<tmp>/tb-varupdate-bench`) and reused while their spec (sizes, seed,
format version) matches.
"""

import gzip
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from tb_varupdate import plugin  # noqa: E402
from tb_varupdate.format import metadata as md  # noqa: E402
from tb_varupdate.format import variables as vr  # noqa: E402
from tb_varupdate.reader import buckets as buckets_lib  # noqa: E402
from tb_varupdate.reader import history  # noqa: E402
from tb_varupdate.writers import reference  # noqa: E402

TAG = md.updates_tag("model")
LOADERS = (("false", "Python"), ("true", "Rust"))
# Bump when the synthetic data changes, so cached logdirs are rewritten.
# 2: TRAINABLE (format version 3) set from each entry; version 1 logdirs had every variable not trainable.
GENERATOR_VERSION = 2
# Long enough for either loader to read a few GB on a busy 2-core machine.
LOAD_TIMEOUT_S = 900

WARM_GOAL_S = 0.1
COLD_GOAL_S = 1.0


def cache_dir():
    return os.environ.get("VARUPDATE_BENCH_DIR") or os.path.join(tempfile.gettempdir(), "tb-varupdate-bench")


# Synthetic records.

# Behaviour of variable i, by i % 100: the share of each kind in a model.
NEVER = "never updated, gradient present"  # 0, 1
DISCONNECTED = "never updated, no gradient"  # 2
STALLED = "stops half-way"  # 3, 4
ACCUMULATE = "changes every 4th step"  # 5..9
TINY = "tiny updates"  # 10
STATISTIC = "non-trainable statistic"  # 11..13
UPDATING = "updating"  # the rest


def behaviour(index):
    slot = index % 100
    if slot < 2:
        return NEVER
    if slot == 2:
        return DISCONNECTED
    if slot < 5:
        return STALLED
    if slot < 10:
        return ACCUMULATE
    if slot == 10:
        return TINY
    if slot < 14:
        return STATISTIC
    return UPDATING


def entries(count):
    """The variables record: layers of a kernel and a bias, some statistics."""
    out = []
    for index in range(count):
        kind = behaviour(index)
        block = "model/block_%02d/layer_%05d" % (index // 100, index)
        if kind == STATISTIC:
            name, shape, trainable = block + "/moving_mean", [64], False
        elif index % 2:
            name, shape, trainable = block + "/bias", [64], True
        else:
            name, shape, trainable = block + "/kernel", [64, 64], True
        out.append({"name": name, "shape": shape, "dtype": "float32", "trainable": trainable, "joined": 0})
    return out


class RecordMaker:
    """Builds one tracker's successive updates records, counters consistent."""

    def __init__(self, count, steps, seed):
        import numpy as np

        self.np = np
        rng = np.random.default_rng(seed)
        self.rng = rng
        kinds = [behaviour(i) for i in range(count)]
        self.kinds = np.array(kinds)
        self.count = count
        self.stall_step = steps // 2
        self.value = rng.uniform(1.0, 30.0, count)
        # Typical relative update per variable: 1e-4 .. 1e-2, tiny ones 1e-8.
        self.base_rel = 10.0 ** rng.uniform(-4, -2, count)
        self.base_rel[self.kinds == TINY] = 1e-8
        self.base_grad = 10.0 ** rng.uniform(-3, 0, count)
        self.changed = np.zeros(count, np.int64)
        self.first = np.full(count, -1, np.int64)
        self.last = np.full(count, -1, np.int64)
        self.logs_at_last = np.zeros(count, np.int64)
        self.grad_present = np.zeros(count, np.int64)
        self.grad_none = np.zeros(count, np.int64)
        self.max_rel = np.zeros(count)
        self.entries = entries(count)
        self.trainable = np.array([entry["trainable"] for entry in self.entries], dtype=np.int64)
        self.names_json, self.digest = vr.encode_variables(self.entries)

    def record(self, step):
        np = self.np
        kinds, rng = self.kinds, self.rng
        logged = step + 1
        changes = np.isin(kinds, (UPDATING, TINY, STATISTIC))
        changes |= (kinds == STALLED) & (step < self.stall_step)
        changes |= (kinds == ACCUMULATE) & (step % 4 == 3)
        rel = self.base_rel * (1.0 + 0.3 * rng.standard_normal(self.count)) ** 2 / (1.0 + step / 2000.0)
        before = self.value
        delta = np.where(changes, rel * before, 0.0)
        after = before + np.where(changes, 0.5 * delta * rng.standard_normal(self.count), 0.0)
        self.value = after
        self.max_rel = np.maximum(self.max_rel, delta / np.maximum(before, after))
        grad = self.base_grad * np.exp(0.2 * rng.standard_normal(self.count))
        grad = np.where(kinds == DISCONNECTED, md.GRAD_NONE, grad)
        grad = np.where(kinds == STATISTIC, md.GRAD_NOT_GIVEN, grad)
        self.grad_present += grad > 0
        self.grad_none += kinds == DISCONNECTED
        self.changed += changes
        self.first = np.where(changes & (self.first < 0), step, self.first)
        self.last = np.where(changes, step, self.last)
        self.logs_at_last = np.where(changes, logged, self.logs_at_last)

        ints = np.zeros((self.count, md.NUM_COLUMNS), np.int64)
        floats = np.zeros((self.count, md.NUM_COLUMNS))
        ints[:, md.CHANGED_STEPS] = self.changed
        ints[:, md.FIRST_UPDATE_STEP] = self.first
        ints[:, md.LAST_UPDATE_STEP] = self.last
        ints[:, md.LOGS_AT_LAST_UPDATE] = self.logs_at_last
        ints[:, md.GRAD_PRESENT_STEPS] = self.grad_present
        ints[:, md.GRAD_NONE_STEPS] = self.grad_none
        ints[:, md.FIRST_NON_FINITE_STEP] = -1
        ints[:, md.ROWS_CHANGED] = -1
        if hasattr(md, "TRAINABLE"):  # format version 3
            ints[:, md.TRAINABLE] = self.trainable
        floats[:, md.DELTA_L2] = delta
        if hasattr(md, "DELTA_MAX_ABS"):  # format version 1 only
            floats[:, md.DELTA_MAX_ABS] = 0.05 * delta
        floats[:, md.VALUE_L2] = after
        floats[:, md.GRAD_L2] = grad
        floats[:, md.MAX_RELATIVE_UPDATE] = self.max_rel
        return reference.updates_record({"logged": logged, "names_hash": self.digest, "every_n": 1}, ints, floats)


def write_run(run_dir, count, steps, seed):
    """Writes one run: the variables record, then `steps` updates records."""
    import tensorflow as tf

    maker = RecordMaker(count, steps, seed)
    writer = tf.summary.create_file_writer(run_dir, max_queue=100)
    updates_meta = md.create_summary_metadata(md.KIND_UPDATES)
    with writer.as_default():
        tf.summary.write(md.variables_tag("model"), tf.constant(maker.names_json), 0,
                         metadata=md.create_summary_metadata(md.KIND_VARIABLES))
        for step in range(steps):
            tf.summary.write(TAG, maker.record(step), step, metadata=updates_meta)
    writer.close()


def logdir_for(name, runs):
    """A cached logdir of `runs` ({run name: (variables, steps)}); writes it if missing.

    Returns:
      (path, seconds spent writing it now or None if reused, bytes on disk).
    """
    path = os.path.join(cache_dir(), name)
    spec = {
        "generator": GENERATOR_VERSION, "format": md.FORMAT_VERSION, "columns": md.NUM_COLUMNS,
        "runs": {run: list(size) for run, size in sorted(runs.items())},
    }
    spec_file = os.path.join(path, "spec.json")
    try:
        with open(spec_file) as handle:
            reused = json.load(handle) == spec
    except (OSError, ValueError):
        reused = False
    took = None
    if not reused:
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        started = time.perf_counter()
        for seed, (run, (count, steps)) in enumerate(sorted(runs.items())):
            common.progress("backend: writing %s/%s (%d variables x %d steps)" % (name, run, count, steps))
            write_run(os.path.join(path, run), count, steps, seed)
        took = time.perf_counter() - started
        with open(spec_file, "w") as handle:
            json.dump(spec, handle)
    size = sum(
        os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files
    )
    return path, took, size


# A TensorBoard in-process.


class Server:
    """TensorBoard with the plugin's loader, serving `logdir` on a free port.

    Attributes:
      url: TensorBoard's base URL.
      plugin: the `VarUpdatePlugin` it loaded.
      load_seconds: from building the server to every run's updates tag
        reaching `last_steps[run]` in the data provider.
    """

    def __init__(self, logdir, load_fast, last_steps, all_plugins=False):
        """Starts TensorBoard and waits until it has read the logdir.

        Args:
          logdir: the logdir.
          load_fast: "false" (Python loader) or "true" (Rust loader).
          last_steps: {run: the step of its last updates record}.
          all_plugins: load TensorBoard's own plugins too, as the
            `tensorboard` command does (the dashboard benchmark needs its UI).
        """
        from tensorboard import default
        from tensorboard import program
        from tensorboard.plugins.core import core_plugin

        bench = self
        self.plugin = None
        self._provider = None

        class Loader(plugin.VarUpdateLoader):
            def load(self, context):
                bench._provider = context.data_provider
                bench.plugin = super().load(context)
                return bench.plugin

        made = []

        def make_server(app, flags):
            made.append(program.WerkzeugServer(app, flags))
            return made[-1]

        plugins = default.get_static_plugins() if all_plugins else [core_plugin.CorePluginLoader()]
        self._made = made
        self._board = program.TensorBoard(plugins=plugins + [Loader()], server_class=make_server)
        self._board.configure(logdir=logdir, host="127.0.0.1", port=0, load_fast=load_fast,
                              reload_interval=0, reload_task="blocking")
        started = time.perf_counter()
        server = self._board._make_server()
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        try:
            self._wait_until_loaded(last_steps)
        except BaseException:
            self.close()
            raise
        self.load_seconds = time.perf_counter() - started
        self.url = server.get_url()
        parsed = urllib.parse.urlparse(self.url)
        self._host, self._port, self._prefix = parsed.hostname, parsed.port, parsed.path

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _wait_until_loaded(self, last_steps):
        from tensorboard import context

        # Asked of the data provider, not of the plugin, so polling neither
        # fills nor depends on the plugin's cache. The Python loader has read
        # everything already ("blocking"); the Rust one serves while reading.
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while True:
            listing = self._provider.list_tensors(
                context.RequestContext(), experiment_id="", plugin_name=md.PLUGIN_NAME)
            steps = {run: tags[TAG].max_step for run, tags in listing.items() if TAG in tags}
            if all(steps.get(run) == last for run, last in last_steps.items()):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("TensorBoard did not load the logdir in %ds: %r" % (LOAD_TIMEOUT_S, steps))
            time.sleep(0.05)

    def get(self, route):
        """GETs a plugin route as a browser does (gzip accepted).

        Returns:
          (seconds until the whole answer arrived, bytes sent, parsed JSON).
        """
        connection = http.client.HTTPConnection(self._host, self._port, timeout=600)
        started = time.perf_counter()
        connection.request("GET", self._prefix + "data/plugin/varupdate/" + route,
                           headers={"Accept-Encoding": "gzip", "Accept": "application/json"})
        response = connection.getresponse()
        body = response.read()
        took = time.perf_counter() - started
        connection.close()
        sent = len(body)
        if response.getheader("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if response.status != 200:
            raise RuntimeError("%s answered %d: %s" % (route, response.status, body[:300]))
        return took, sent, json.loads(body)

    def cold(self, route, repeats):
        """Median seconds of `route` with the plugin's cache emptied before each request."""
        times = []
        for _ in range(repeats):
            self.plugin.clear_cache()
            times.append(self.get(route)[0])
        return statistics.median(times)

    def warm(self, route, repeats):
        """Median seconds of `route` once its tracker is cached, and the bytes sent."""
        _, sent, _ = self.get(route)
        return statistics.median(self.get(route)[0] for _ in range(repeats)), sent

    def close(self):
        for server in self._made:
            server.shutdown()
            server.server_close()
        self._thread.join(timeout=10)
        # The Rust data server exits when its stdin closes.
        stdin = getattr(getattr(self._board, "_ingester", None), "_stdin_handle", None)
        if stdin is not None:
            stdin.close()


def _query(run=None, runs=(), **extra):
    params = [("tag", TAG)]
    if run is not None:
        params.append(("run", run))
    params += [("run", r) for r in runs]
    params += list(extra.items())
    return urllib.parse.urlencode(params)


def _routes(run_names, variables_run):
    """(label, route) of what the dashboard asks: its variables, heatmap and compare."""
    return [
        ("variables", "variables?" + _query(variables_run)),
        ("heatmap", "heatmap?" + _query(variables_run, buckets=buckets_lib.DEFAULT_BUCKETS)),
        ("compare (%d run%s)" % (len(run_names), "" if len(run_names) == 1 else "s"),
         "compare?" + _query(runs=run_names)),
    ]


def _sizes(quick):
    if quick:
        return {"a": (300, 600), "b": (4, 50, 300), "vars": (10, 100, 300), "steps": (100, 300),
                "cold": 2, "warm": 3}
    # (b) has 2,000 steps: the plugin keeps 2,000 records a tracker, so its
    # routes read what a longer run's would, and only the load would grow.
    return {"a": (2000, 10000), "b": (20, 200, 2000), "vars": (10, 100, 1000, 10000),
            "steps": (100, 1000, 10000), "cold": 5, "warm": 10}


# Largest run written for the scaling tables: 10,000 variables x 10,000
# steps would be ~5.6 GB of records.
MAX_SCALING_BYTES = 1 << 30


def _size(sent):
    return "%.0f kB" % (sent / 1e3) if sent < 1e6 else "%.1f MB" % (sent / 1e6)


def describe_logdir(path, wrote, size):
    return "%s: %.2f GB on disk, %s" % (
        os.path.basename(path), size / 1e9,
        "written in %s" % common.ms(wrote) if wrote is not None else "reused from the cache")


def _routes_section(sizes):
    variables, steps = sizes["a"]
    run_count, b_variables, b_steps = sizes["b"]
    datasets = [
        ("(a)", "1 run x %d variables x %d steps" % (variables, steps),
         "one_run_%dx%d" % (variables, steps), {"run": (variables, steps)}),
        ("(b)", "%d runs x %d variables x %d steps" % (run_count, b_variables, b_steps),
         "runs_%dx%dx%d" % (run_count, b_variables, b_steps),
         {"run_%02d" % i: (b_variables, b_steps) for i in range(run_count)}),
    ]
    rows, loads, targets, notes = [], [], [], []
    for short, label, name, runs in datasets:
        path, wrote, size = logdir_for(name, runs)
        notes.append(describe_logdir(path, wrote, size))
        run_names = sorted(runs)
        last_steps = {run: steps - 1 for run, (_, steps) in runs.items()}
        for load_fast, loader in LOADERS:
            common.progress("backend: %s %s, %s loader: loading" % (short, label, loader))
            with Server(path, load_fast, last_steps) as server:
                loads.append(("%s %s" % (short, label), loader, common.ms(server.load_seconds)))
                for route_label, route in _routes(run_names, run_names[0]):
                    common.progress("backend: %s, %s loader: %s" % (short, loader, route_label))
                    cold = server.cold(route, sizes["cold"])
                    warm, sent = server.warm(route, sizes["warm"])
                    rows.append(("%s %s" % (short, label), loader, route_label, common.ms(cold), common.ms(warm), _size(sent)))
                    what = "backend %s %s, %s loader" % (route_label.split(" ")[0], short, loader)
                    targets.append(common.Target(what + ", warm", common.ms(warm), "< 100 ms", warm < WARM_GOAL_S))
                    targets.append(common.Target(what + ", cold", common.ms(cold), "< 1 s", cold < COLD_GOAL_S))
    body = "\n\n".join([
        "Medians of %d cold and %d warm requests. (a)'s `compare` compares its one run; (b)'s "
        "`variables` and `heatmap` ask for its first run and `compare` for all of them." % (sizes["cold"], sizes["warm"]),
        common.table(("logdir", "loader", "route", "cold", "warm", "answer (gzip)"), rows),
        "Load (server start until every run's last step is served; not in the times above):",
        common.table(("logdir", "loader", "load"), loads),
        "\n".join("- " + note for note in notes),
    ])
    return body, targets


def _scaling_cells(sizes):
    cells, skipped = {}, []
    for count in sizes["vars"]:
        for steps in sizes["steps"]:
            if (1 + count) * md.NUM_COLUMNS * 4 * steps > MAX_SCALING_BYTES:
                skipped.append((count, steps))
            else:
                cells["v%05d_s%05d" % (count, steps)] = (count, steps)
    return cells, skipped


def _scaling_section(sizes):
    cells, skipped = _scaling_cells(sizes)
    name = "scaling_%s_x_%s" % ("-".join(map(str, sizes["vars"])), "-".join(map(str, sizes["steps"])))
    path, wrote, size = logdir_for(name, cells)
    last_steps = {run: steps - 1 for run, (_, steps) in cells.items()}
    measured = {}
    loads = []
    for load_fast, loader in LOADERS:
        common.progress("backend scaling, %s loader: loading" % loader)
        with Server(path, load_fast, last_steps) as server:
            loads.append("%s loader %s" % (loader, common.ms(server.load_seconds)))
            for run, (count, steps) in sorted(cells.items()):
                common.progress("backend scaling, %s loader: %d variables x %d steps" % (loader, count, steps))
                for route_label, route in _routes([run], run)[:2]:
                    cold = server.cold(route, sizes["cold"])
                    warm, _ = server.warm(route, sizes["warm"])
                    measured[loader, route_label, count, steps] = (cold, warm)
    header = ["variables \\ steps"] + ["%d" % steps for steps in sizes["steps"]]
    parts = ["Cold / warm medians, one run per cell, all cells in one logdir."]
    for route_label in ("variables", "heatmap"):
        for _, loader in LOADERS:
            rows = []
            for count in sizes["vars"]:
                row = [count]
                for steps in sizes["steps"]:
                    cell = measured.get((loader, route_label, count, steps))
                    row.append("%s / %s" % (common.ms(cell[0]), common.ms(cell[1])) if cell else "skipped")
                rows.append(row)
            parts.append("`%s` route, %s loader:\n\n%s" % (route_label, loader, common.table(header, rows)))
    note = "%s; load: %s." % (describe_logdir(path, wrote, size), ", ".join(loads))
    if skipped:
        note += " Not measured: %s variables x steps (more than %.0f GB of records each)." % (
            ", ".join("%d x %d" % cell for cell in skipped), MAX_SCALING_BYTES / 1e9)
    parts.append(note)
    parts.append(_shape(measured, sizes))
    return "\n\n".join(parts), measured


def _shape(measured, sizes):
    """The sentences on how the times grow, with the numbers they rest on."""
    def cell(loader, route, count, steps, which):
        found = measured.get((loader, route, count, steps))
        return common.ms(found[which]) if found else "n/a"

    few, many = sizes["vars"][0], sizes["vars"][-1]
    short, long_ = sizes["steps"][0], sizes["steps"][-1]
    middle = sizes["vars"][-2]
    mid_steps = sizes["steps"][-2]
    upto = [measured[key][0] for key in measured
            if key[0] == "Rust" and key[1] == "variables" and key[2] <= middle]
    return "\n".join([
        "- `variables` reads only the newest record of a tracker, so under the Rust loader its cold "
        "time does not grow with steps (%d variables: %s at %d steps, %s at %d). Up to %d variables "
        "it is about one round trip to the data server, %s to %s (that server answers some small "
        "reads only after ~40 ms); beyond, the verdicts, computed per variable, dominate: %s at %d "
        "variables (%d steps). The Python loader's data provider converts every kept record before "
        "it keeps the newest, so there it grows with variables x kept records (%d variables: %s at "
        "%d steps, %s at %d)." % (
            middle, cell("Rust", "variables", middle, short, 0), short,
            cell("Rust", "variables", middle, long_, 0), long_,
            middle, common.ms(min(upto)), common.ms(max(upto)),
            cell("Rust", "variables", many, mid_steps, 0), many, mid_steps,
            middle, cell("Python", "variables", middle, short, 0), short,
            cell("Python", "variables", middle, long_, 0), long_),
        "- `heatmap` reads the history: min(steps, %d kept records, %d MiB of records), so cold it "
        "grows about linearly with variables x kept records (Rust, %d variables: %s at %d steps, "
        "%s at %d; %d variables x %d steps: %s), and no longer with steps past that limit (%d "
        "records at %d variables)."
        % (
            history.DEFAULT_SAMPLES, history.MAX_HISTORY_BYTES >> 20,
            middle, cell("Rust", "heatmap", middle, short, 0), short,
            cell("Rust", "heatmap", middle, long_, 0), long_,
            many, mid_steps, cell("Rust", "heatmap", many, mid_steps, 0),
            history.history_count(None, many), many),
        "- Warm, both send an answer encoded and gzipped once, so they grow with variables only "
        "(the answer's size), not with steps (Rust, heatmap: %s at %d variables, %s at %d; %d steps)."
        % (cell("Rust", "heatmap", few, mid_steps, 1), few, cell("Rust", "heatmap", many, mid_steps, 1), many, mid_steps),
    ])


def run(quick):
    sizes = _sizes(quick)
    started = time.perf_counter()
    routes_body, targets = _routes_section(sizes)
    scaling_body, _ = _scaling_section(sizes)
    body = "\n\n".join([
        __doc__.split("\n\n", 1)[1].strip(),
        "### Routes\n\n" + routes_body,
        "### Scaling with variables and steps\n\n" + scaling_body,
        "(%s in all, writing logdirs included)" % common.ms(time.perf_counter() - started),
    ])
    return common.Section("Backend", body, targets)


if __name__ == "__main__":
    sys.exit(common.main_for(run))
