"""The `varupdate` TensorBoard plugin: routes of docs/HTTP_API.md and the loader.

TensorBoard imports this module at start-up (setup.py's `tensorboard_plugins`
entry point names `VarUpdateLoader`), so it must not import TensorFlow: an
import error here would break TensorBoard itself. This module only routes:
each handler parses its query and asks `reader.service` for the document,
through one `RecordCache`, as `tb-varupdate check` does.
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
from tb_varupdate.format import metadata as md
from tb_varupdate.reader import buckets as buckets_lib
from tb_varupdate.reader import cache as cache_lib
from tb_varupdate.reader import history
from tb_varupdate.reader import jsonutil
from tb_varupdate.reader import service
from tb_varupdate.verdicts import vocabulary as vocabulary_lib

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

# Every route only reads.
ALLOWED_METHODS = ("GET", "HEAD")


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
        self._cache = cache_lib.RecordCache(self._provider, samples=hints.get(md.PLUGIN_NAME))

    def get_plugin_apps(self):
        routes = {
            "/runs": self._serve_runs,
            "/variables": self._serve_variables,
            "/series": self._serve_series,
            "/heatmap": self._serve_heatmap,
            "/compare": self._serve_compare,
            "/vocabulary": self._serve_vocabulary,
            "/index.js": self._serve_index,
            "/static/*": self._serve_static,
            # Anything else under the plugin (`static/`, `app.js`, typos):
            # a JSON 404 like every other error, not TensorBoard's text one.
            "/*": self._serve_unknown,
        }
        return {path: _only_reads(app) for path, app in routes.items()}

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

    # Route handlers: parse the query, ask `service`, respond.

    @wrappers.Request.application
    def _serve_runs(self, request):
        return _json(request, lambda: service.runs(self._cache, *_scope(request)))

    @wrappers.Request.application
    def _serve_variables(self, request):
        def impl():
            run, tag = _required(request, "run"), _required(request, "tag")
            # Encoded once per tag (its records never change): a request that
            # finds the tag cached only sends bytes.
            return service.variables(self._cache, *_scope(request), run, tag, encode=_Gzipped.encode)

        return _json(request, impl)

    @wrappers.Request.application
    def _serve_series(self, request):
        def impl():
            run, tag = _required(request, "run"), _required(request, "tag")
            # A variable may be called "": only a missing parameter is an error.
            # `index` reaches a variable by its row, the one way to tell two
            # variables of one name apart.
            variables = list(dict.fromkeys(request.args.getlist("variable")))
            indices = [_index(text) for text in dict.fromkeys(request.args.getlist("index"))]
            if not variables and not indices:
                raise errors.InvalidArgumentError(
                    "query parameter 'variable' or 'index' is required (repeat them for several)"
                )
            return service.series(self._cache, *_scope(request), run, tag, variables, indices)

        return _json(request, impl)

    @wrappers.Request.application
    def _serve_heatmap(self, request):
        def impl():
            run, tag = _required(request, "run"), _required(request, "tag")
            buckets = _bucket_count(request.args.get("buckets"))
            return service.heatmap(self._cache, *_scope(request), run, tag, buckets, encode=_Gzipped.encode)

        return _json(request, impl)

    @wrappers.Request.application
    def _serve_compare(self, request):
        def impl():
            tag = _required(request, "tag")
            runs = _required_list(request, "run")
            return service.compare(self._cache, *_scope(request), tag, runs)

        return _json(request, impl)

    @wrappers.Request.application
    def _serve_vocabulary(self, request):
        return _json(request, _vocabulary)

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

    @wrappers.Request.application
    def _serve_unknown(self, request):
        marker = "/plugin/%s/" % md.PLUGIN_NAME
        path = request.path
        relative = path[path.index(marker) + len(marker):] if marker in path else path
        return _error(request, errors.NotFoundError(
            "no route %r; docs/HTTP_API.md lists them (frontend files are under static/)" % relative
        ))


class VarUpdateLoader(base_plugin.TBLoader):
    """Loads `VarUpdatePlugin` and raises TensorBoard's sample default for it.

    setup.py's entry point names this class, not the plugin: TensorBoard wraps
    a bare plugin class in a loader whose `fix_flags` does nothing.
    """

    def fix_flags(self, flags):
        # Runs before TensorBoard builds its loader (both the Python and the
        # Rust one read `samples_per_plugin`), so the charts get
        # history.DEFAULT_SAMPLES points instead of 10 (Python) or 100 (Rust).
        # setdefault: a user's `--samples_per_plugin varupdate=N` wins.
        samples = getattr(flags, "samples_per_plugin", None)
        if isinstance(samples, dict):
            samples.setdefault(md.PLUGIN_NAME, history.DEFAULT_SAMPLES)

    def load(self, context):
        return VarUpdatePlugin(context)


def _vocabulary():
    # The words, labels and order of statuses and gradients: the dashboard's
    # one source of truth (`vocabulary.vocabulary`), so it restates no rule.
    return vocabulary_lib.vocabulary()


def _scope(request):
    return plugin_util.context(request.environ), plugin_util.experiment_id(request.environ)


def _only_reads(app):
    """`app`, answering 405 with a JSON error to any method but GET and HEAD."""

    def guarded(environ, start_response):
        method = environ.get("REQUEST_METHOD", "GET").upper()
        if method in ALLOWED_METHODS:
            return app(environ, start_response)
        request = wrappers.Request(environ)
        response = http_util.Respond(
            request,
            jsonutil.encode_json({"error": "Method not allowed: %s; every route of this plugin "
                                           "answers GET and HEAD only" % method}),
            "application/json", code=405, headers=[("Allow", ", ".join(ALLOWED_METHODS))],
        )
        return response(environ, start_response)

    return guarded


class _Gzipped(bytes):
    """A JSON document, encoded and gzipped once to be sent many times.

    Compressing is most of what a cached answer costs (~70 ms for the ~7 MB
    heatmap of 10,000 variables); `Respond` unzips it for a client that does
    not accept gzip.
    """

    @classmethod
    def encode(cls, document):
        return cls(gzip.compress(jsonutil.encode_json(document), compresslevel=3, mtime=0))


def _error(request, err):
    return http_util.Respond(
        request, jsonutil.encode_json({"error": str(err)}), "application/json", code=err.http_code
    )


def _json(request, compute):
    """Responds with compute()'s JSON, or `{"error": ...}` for a PublicError.

    compute() returns a document, or a `_Gzipped` one. TensorBoard's own
    handler would answer errors as text/plain; the dashboard and
    docs/HTTP_API.md expect JSON with the same status code.
    """
    try:
        body = compute()
    except errors.PublicError as err:
        return _error(request, err)
    if isinstance(body, _Gzipped):
        return http_util.Respond(request, bytes(body), "application/json", content_encoding="gzip")
    return http_util.Respond(request, jsonutil.encode_json(body), "application/json")


def _required(request, name):
    value = request.args.get(name)
    if not value:
        raise errors.InvalidArgumentError("query parameter %r is required" % name)
    return value


def _required_list(request, name, allow_empty=False):
    values = [value for value in request.args.getlist(name) if value or allow_empty]
    if not values:
        raise errors.InvalidArgumentError(
            "query parameter %r is required (repeat it for several)" % name
        )
    # Keep the caller's order, drop repeats.
    return list(dict.fromkeys(values))


def _index(text):
    """A row index from the query: ASCII digits only, at most 9 of them."""
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise errors.InvalidArgumentError(
            "index must be a variable's row index (the variables route's `index`), in ASCII digits. "
            "Received: index=%r" % text
        )
    return int(text)


def _bucket_count(text):
    if text is None or text == "":
        return buckets_lib.DEFAULT_BUCKETS
    # ASCII digits only: int() would also take " 5", "1_000", "٣" and "５".
    if not (text.isascii() and text.isdigit()) or len(text) > 6:
        raise errors.InvalidArgumentError(
            "buckets must be an integer from 1 to %d, in ASCII digits. Received: buckets=%r"
            % (buckets_lib.MAX_BUCKETS, text)
        )
    buckets = int(text)
    if not 1 <= buckets <= buckets_lib.MAX_BUCKETS:
        raise errors.InvalidArgumentError(
            "buckets must be from 1 to %d. Received: buckets=%d" % (buckets_lib.MAX_BUCKETS, buckets)
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
        return _error(request, errors.NotFoundError("no frontend file %r" % relative))
    extension = posixpath.splitext(relative)[1].lower()
    content_type = CONTENT_TYPES.get(extension, "application/octet-stream")
    with open(path, "rb") as handle:
        body = handle.read()
    return http_util.Respond(request, body, content_type)
