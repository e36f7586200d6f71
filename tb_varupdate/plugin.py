"""The `varupdate` TensorBoard plugin: routes of docs/HTTP_API.md and the loader.

TensorBoard imports this module at start-up (setup.py's `tensorboard_plugins`
entry point names `VarUpdateLoader`), so it must not import TensorFlow: an
import error here would break TensorBoard itself. Route handlers only parse
arguments and respond; `_*_impl` methods return plain data computed by
`tb_varupdate.records`.
"""

import gzip
import os
import posixpath

from werkzeug import wrappers

from tensorboard import errors
from tensorboard import plugin_util
from tensorboard.backend import http_util
from tensorboard.plugins import base_plugin

import tb_varupdate.frontend
from tb_varupdate import metadata as md
from tb_varupdate import records

TAB_NAME = "Variable Updates"

FRONTEND_DIR = os.path.dirname(os.path.abspath(tb_varupdate.frontend.__file__))

# Explicit types: guessing from the OS (Windows registries) can turn `.js`
# into text/plain, which browsers refuse to run as a module.
CONTENT_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".map": "application/json",
    ".txt": "text/plain",
    "": "text/plain",  # LICENSE and similar files without an extension.
}


class VarUpdatePlugin(base_plugin.TBPlugin):
    """Shows which variables never update during training, and why."""

    plugin_name = md.PLUGIN_NAME

    def __init__(self, context):
        """Creates the plugin.

        Args:
          context: a `base_plugin.TBContext`; only its data provider and
            sampling hints are used (the multiplexer is None under the Rust
            loader).
        """
        self._provider = context.data_provider
        hints = getattr(context, "sampling_hints", None) or {}
        self._cache = records.RecordCache(self._provider, samples=hints.get(md.PLUGIN_NAME))

    def get_plugin_apps(self):
        return {
            "/runs": self._serve_runs,
            "/variables": self._serve_variables,
            "/series": self._serve_series,
            "/heatmap": self._serve_heatmap,
            "/compare": self._serve_compare,
            "/index.js": self._serve_index,
            "/static/*": self._serve_static,
        }

    def is_active(self):
        # TensorBoard lists the plugin as active whenever the data provider
        # reports `varupdate` records, and only asks this otherwise: then
        # there is nothing to show.
        return False

    def clear_cache(self):
        """Forgets the parsed records, so the next request reads them again.

        The benchmarks call it to time requests that find nothing cached.
        """
        self._cache.clear()

    def frontend_metadata(self):
        return base_plugin.FrontendMetadata(
            es_module_path="/index.js", tab_name=TAB_NAME, disable_reload=False
        )

    # Route handlers: parse, call an _impl, respond.

    @wrappers.Request.application
    def _serve_runs(self, request):
        return _json(request, lambda: self._runs_impl(*_scope(request)))

    @wrappers.Request.application
    def _serve_variables(self, request):
        def impl():
            run, tag = _required(request, "run"), _required(request, "tag")
            return self._variables_impl(*_scope(request), run, tag)

        return _json(request, impl)

    @wrappers.Request.application
    def _serve_series(self, request):
        def impl():
            run, tag = _required(request, "run"), _required(request, "tag")
            variables = _required_list(request, "variable")
            return self._series_impl(*_scope(request), run, tag, variables)

        return _json(request, impl)

    @wrappers.Request.application
    def _serve_heatmap(self, request):
        def impl():
            run, tag = _required(request, "run"), _required(request, "tag")
            buckets = _bucket_count(request.args.get("buckets"))
            return self._heatmap_impl(*_scope(request), run, tag, buckets)

        return _json(request, impl)

    @wrappers.Request.application
    def _serve_compare(self, request):
        def impl():
            tag = _required(request, "tag")
            runs = _required_list(request, "run")
            return self._compare_impl(*_scope(request), tag, runs)

        return _json(request, impl)

    @wrappers.Request.application
    def _serve_index(self, request):
        return _static_file(request, "index.js")

    @wrappers.Request.application
    def _serve_static(self, request):
        # request.path includes any --path_prefix; cut at this route's own part.
        marker = "/plugin/%s/static/" % md.PLUGIN_NAME
        path = request.path
        relative = path[path.index(marker) + len(marker):] if marker in path else ""
        # Disk layout is URL layout: `static/x.js` is frontend/static/x.js.
        return _static_file(request, "static/" + relative if relative else "")

    # Implementations: plain data in, plain data out.

    def _runs_impl(self, ctx, experiment_id):
        return self._cache.runs_report(ctx, experiment_id)

    def _variables_impl(self, ctx, experiment_id, run, tag):
        tracker = self._cache.tracker(ctx, experiment_id, run, tag)
        # Encoded once per tracker (its records never change): a request
        # that finds the tracker cached only sends bytes.
        return tracker.memo("variables", lambda: _Gzipped.encode(tracker.verdicts()))

    def _series_impl(self, ctx, experiment_id, run, tag, variables):
        return records.series_report(self._cache.tracker(ctx, experiment_id, run, tag), variables)

    def _heatmap_impl(self, ctx, experiment_id, run, tag, buckets):
        tracker = self._cache.tracker(ctx, experiment_id, run, tag)
        return tracker.memo(
            ("heatmap", buckets), lambda: _Gzipped.encode(records.heatmap_report(tracker, buckets))
        )

    def _compare_impl(self, ctx, experiment_id, tag, runs):
        trackers = self._cache.trackers(ctx, experiment_id, runs, tag)
        # Runs are listed only when one has no tracker: under the Rust loader
        # each data provider call can cost ~40 ms, even a small one.
        if any(tracker is None for tracker in trackers.values()):
            known = {r.run_name for r in self._provider.list_runs(ctx, experiment_id=experiment_id)}
            unknown = [run for run in runs if run not in known]
            if unknown:
                raise errors.NotFoundError("no run %r in this logdir" % (unknown[0],))
        if all(tracker is None for tracker in trackers.values()):
            raise errors.NotFoundError("none of the runs %r has the tag %r" % (runs, tag))
        return records.compare_report(tag, trackers)


class VarUpdateLoader(base_plugin.TBLoader):
    """Loads `VarUpdatePlugin` and raises TensorBoard's sample default for it.

    setup.py's entry point names this class, not the plugin: TensorBoard wraps
    a bare plugin class in a loader whose `fix_flags` does nothing.
    """

    def fix_flags(self, flags):
        # Runs before TensorBoard builds its loader (both the Python and the
        # Rust one read `samples_per_plugin`), so the charts get
        # records.DEFAULT_SAMPLES points instead of 10 (Python) or 100 (Rust).
        # setdefault: a user's `--samples_per_plugin varupdate=N` wins.
        samples = getattr(flags, "samples_per_plugin", None)
        if isinstance(samples, dict):
            samples.setdefault(md.PLUGIN_NAME, records.DEFAULT_SAMPLES)

    def load(self, context):
        return VarUpdatePlugin(context)


def _scope(request):
    return plugin_util.context(request.environ), plugin_util.experiment_id(request.environ)


class _Gzipped(bytes):
    """A JSON document, encoded and gzipped once to be sent many times.

    Compressing is most of what a cached answer costs (~70 ms for the ~7 MB
    heatmap of 10,000 variables); `Respond` unzips it for a client that does
    not accept gzip.
    """

    @classmethod
    def encode(cls, document):
        return cls(gzip.compress(records.encode_json(document), compresslevel=3, mtime=0))


def _json(request, compute):
    """Responds with compute()'s JSON, or `{"error": ...}` for a PublicError.

    compute() returns a document, or a `_Gzipped` one. TensorBoard's own
    handler would answer errors as text/plain; the dashboard and
    docs/HTTP_API.md expect JSON with the same status code.
    """
    try:
        body, code = compute(), 200
    except errors.PublicError as err:
        body, code = {"error": str(err)}, err.http_code
    if isinstance(body, _Gzipped):
        return http_util.Respond(request, bytes(body), "application/json", code=code, content_encoding="gzip")
    return http_util.Respond(request, records.encode_json(body), "application/json", code=code)


def _required(request, name):
    value = request.args.get(name)
    if not value:
        raise errors.InvalidArgumentError("query parameter %r is required" % name)
    return value


def _required_list(request, name):
    values = [value for value in request.args.getlist(name) if value]
    if not values:
        raise errors.InvalidArgumentError(
            "query parameter %r is required (repeat it for several)" % name
        )
    # Keep the caller's order, drop repeats.
    return list(dict.fromkeys(values))


def _bucket_count(text):
    if text is None or text == "":
        return records.DEFAULT_BUCKETS
    try:
        buckets = int(text)
    except ValueError as err:
        raise errors.InvalidArgumentError(
            "buckets must be an integer from 1 to %d. Received: buckets=%r"
            % (records.MAX_BUCKETS, text)
        ) from err
    if not 1 <= buckets <= records.MAX_BUCKETS:
        raise errors.InvalidArgumentError(
            "buckets must be from 1 to %d. Received: buckets=%d" % (records.MAX_BUCKETS, buckets)
        )
    return buckets


def safe_static_path(relative):
    """The absolute file path for `relative` under FRONTEND_DIR, or None.

    Rejects anything that could leave the folder or be read differently by
    another layer: `..` segments, backslashes, percent signs (already decoded
    once, so `%2e%2e` arrives here as `%2e` only if double-encoded), absolute
    paths and drive letters, and hidden files.
    """
    if not relative or "\\" in relative or "%" in relative or "\x00" in relative:
        return None
    if relative.startswith("/") or ":" in relative:
        return None
    parts = relative.split("/")
    if any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        return None
    if parts[-1] == "__init__.py" or parts[-1].endswith((".py", ".pyc")):
        return None
    path = os.path.realpath(os.path.join(FRONTEND_DIR, *parts))
    root = os.path.realpath(FRONTEND_DIR)
    if os.path.commonpath([path, root]) != root or not os.path.isfile(path):
        return None
    return path


def _static_file(request, relative):
    path = safe_static_path(relative)
    if path is None:
        return http_util.Respond(
            request, {"error": "Not found: no frontend file %r" % relative}, "application/json", code=404
        )
    extension = posixpath.splitext(relative)[1].lower()
    content_type = CONTENT_TYPES.get(extension, "application/octet-stream")
    with open(path, "rb") as handle:
        body = handle.read()
    return http_util.Respond(request, body, content_type)
