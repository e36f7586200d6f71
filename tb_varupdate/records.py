"""Reads `varupdate` records through a TensorBoard data provider. No TensorFlow.

Only `list_runs`, `list_tensors` and `read_tensors` are used, so this works
under both loaders (`context.multiplexer` is None under the Rust one). The
plugin's routes and the CLI share these functions:

* `list_update_tags` and `read_verdicts` are what the CLI calls;
* `read_tracker` loads one tracker into a `Tracker`: its newest records at
  once (all the verdicts need), the other kept records on first use;
  `RecordCache` keeps trackers between requests and reads those of many runs
  in one call; `Tracker.verdicts`, `series_report`, `heatmap_report` and
  `compare_report` turn trackers into the JSON documents of docs/HTTP_API.md;
* `relative_update`, `bucket_edges`, `bucket_max`, `json_safe` and
  `encode_json` are pure NumPy/dict helpers that tests call without event
  files.

A malformed record never raises out of here: it is skipped and explained in
the report's `warnings`. Only an unknown run or tag raises
(`tensorboard.errors.NotFoundError`).
"""

import collections
import json
import math
import threading

import numpy as np

from tensorboard import errors
from tensorboard.data import provider as provider_lib

from tb_varupdate import analysis
from tb_varupdate import metadata as md

# How many samples per tag the plugin asks TensorBoard to keep when the user
# gave no `--samples_per_plugin varupdate=N` (see `plugin.VarUpdateLoader`).
# Verdicts never depend on it (the newest record alone is exact); it only sets
# the detail of the charts. 2,000 records give the heatmap's default 100
# buckets ~20 records each and its maximum 1,000 buckets ~2 each, while the
# memory TensorBoard holds stays bounded: a record is 56 bytes per variable,
# so a 300-variable tracker keeps ~34 MB (TensorBoard's own default of 10
# would leave the charts with 10 points).
DEFAULT_SAMPLES = 2000

# `--samples_per_plugin varupdate=0` means "keep all", but
# `read_tensors(downsample=0)` returns nothing, so 0 becomes this count, which
# no run reaches (both loaders return everything they kept when asked for
# more than that).
KEEP_ALL_SAMPLES = 2**31 - 1

DEFAULT_BUCKETS = 100
# A heatmap is drawn one column per bucket; more than 1,000 columns is more
# than a screen shows and makes the JSON of a 300-variable model ~3 MB.
MAX_BUCKETS = 1000

# Trackers kept parsed in a `RecordCache`. A tracker whose history was read
# holds 3 float32 columns per variable per record (~7 MB for 300 variables x
# 2,000 records, at most ~22 MB: see MAX_HISTORY_BYTES), so this bounds the
# cache to a few hundred MB in practice, ~0.7 GB at worst.
CACHE_SIZE = 32

# Significant digits sent: float32 holds ~7; a heatmap colour needs far fewer.
SERIES_DIGITS = 7
HEATMAP_DIGITS = 4

# A user who wants every record in the charts passes this to TensorBoard.
SAMPLES_HINT = "--samples_per_plugin=%s=0" % md.PLUGIN_NAME


def downsample_count(samples):
    """The `downsample` argument for `read_tensors` from a sample setting.

    Args:
      samples: the `--samples_per_plugin` value for this plugin; None when
        unknown (DEFAULT_SAMPLES), 0 for "keep all".

    Returns:
      A positive int.
    """
    if samples is None:
        return DEFAULT_SAMPLES
    samples = int(samples)
    if samples < 0:
        raise ValueError("samples must be >= 0 (0 keeps all). Received: samples=%d" % samples)
    return samples or KEEP_ALL_SAMPLES


def json_safe(value):
    """`value` with NaN and Inf floats (also inside lists and dicts) as None.

    TensorBoard's `Respond` would send them as the strings "NaN" and
    "Infinity"; docs/HTTP_API.md promises `null`.
    """
    # Exact types first: a verdicts document of 2,000 variables holds ~60,000
    # values, and most are str, int or bool.
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float or isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, np.generic):
        return json_safe(value.item())
    return value


def encode_json(document):
    """`document` as compact JSON bytes, NaN and Inf sent as null (see `json_safe`).

    The plugin answers with these bytes, so TensorBoard's `Respond` does not
    walk the document again (its `Cleanse` pass) before encoding it.
    """
    try:
        text = json.dumps(document, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError):
        # A NaN or a NumPy scalar somewhere: the exact pass, only when needed.
        text = json.dumps(json_safe(document), allow_nan=False, separators=(",", ":"))
    return text.encode("ascii")


def nan_to_none(matrix):
    """`matrix.tolist()` with None for NaN and Inf, without a Python pass per cell."""
    matrix = np.asarray(matrix, dtype=np.float64)
    cells = matrix.astype(object)
    cells[~np.isfinite(matrix)] = None
    return cells.tolist()


def round_significant(values, digits):
    """`values` rounded to `digits` significant digits (NaN, Inf and 0 kept).

    Float32 measurements widened to float64 print as 0.10000000149011612;
    rounding to what float32 holds (7 digits) or what a colour shows (4)
    halves the JSON without losing information.
    """
    values = np.asarray(values, dtype=np.float64)
    magnitude = np.abs(values)
    usable = np.isfinite(values) & (magnitude > 0)
    exponent = np.floor(np.log10(np.where(usable, magnitude, 1.0)))
    scale = 10.0 ** (digits - 1 - exponent)
    return np.where(usable, np.round(values * scale) / scale, values)


def relative_update(delta_l2, value_l2, dtype=np.float64):
    """`analysis.relative_update`: the one formula of the table, heatmap and charts.

    The heatmap asks for float32, which its four significant digits do not
    notice, to halve the memory it sweeps.
    """
    return analysis.relative_update(delta_l2, value_l2, dtype)


def bucket_edges(first_step, last_step, buckets):
    """Splits the steps first_step..last_step into at most `buckets` ranges.

    Every range holds at least one step, so fewer buckets come back when the
    run has fewer steps than `buckets`.

    Returns:
      (starts, ends): int64 arrays of inclusive first and last steps.
    """
    span = int(last_step) - int(first_step) + 1
    count = max(min(int(buckets), span), 1)
    bounds = int(first_step) + (np.arange(count + 1, dtype=np.int64) * span) // count
    return bounds[:-1], bounds[1:] - 1


def bucket_max(steps, values, buckets):
    """The largest value per variable in each step bucket.

    Args:
      steps: ascending int array [records].
      values: float array [records, variables]; NaN where a record says
        nothing about a variable (not tracked yet, or undefined).
      buckets: the largest number of buckets wanted.

    Returns:
      (starts, ends, matrix): bucket edges as in `bucket_edges` and a float64
      array [variables, buckets] holding NaN where no record of the bucket
      had a value for the variable.
    """
    steps = np.asarray(steps, dtype=np.int64)
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)
    if values.ndim == 1:
        values = values[:, np.newaxis]
    if len(steps) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros((values.shape[1], 0))
    starts, ends = bucket_edges(steps[0], steps[-1], buckets)
    # Steps ascend, so each bucket's records are one contiguous slice:
    # `first` is where each bucket's slice begins, empty when it equals the
    # next bucket's. fmax skips NaN, so a bucket is NaN only when none of its
    # records has a value; reduceat takes each slice's max in one pass.
    which = np.searchsorted(starts, steps, side="right") - 1
    first = np.searchsorted(which, np.arange(len(starts)))
    filled = first < np.append(first[1:], len(steps))
    matrix = np.full((len(starts), values.shape[1]), np.nan)
    matrix[filled] = np.fmax.reduceat(values, first[filled], axis=0)
    return starts, ends, matrix.T


# The columns of the updates records that the series and heatmap routes draw.
SERIES_COLUMNS = (md.DELTA_L2, md.VALUE_L2, md.GRAD_L2)

# A history read asks TensorBoard for at most this many bytes of records.
# The Rust loader's gRPC client refuses an answer over 256 MiB (the read
# fails outright), and reading dominates a first heatmap or chart: ~3 ms a
# MB through the Rust loader on 2 cores, so 96 MiB keeps the first heatmap
# of a 2,000-variable tracker near 0.4 s and its tab under 1 s. Only trackers
# of more than ~900 variables get fewer records than DEFAULT_SAMPLES (2,000
# variables: 898 records of 112 KB, still ~9 per default heatmap bucket and
# about a chart's width in points); `points` and `downsampled` say so. A
# cached tracker holds 3/14 of what it read (at most ~22 MB) as columns.
MAX_HISTORY_BYTES = 96 * 2**20

# Encoded documents a tracker keeps (see `Tracker.memo`): the variables route
# and a few heatmap bucket counts.
MEMO_SIZE = 4

# float32 NaN as the int32 bit pattern the updates records hold.
_NAN_BITS = int(np.float32(np.nan).view(np.int32))


def history_count(samples, rows):
    """How many records a history read asks for.

    Args:
      samples: the plugin's `--samples_per_plugin` value (None: default).
      rows: variable rows of the tracker's newest record.

    Returns:
      `downsample_count(samples)`, or fewer when that many records of
      `rows` variables would exceed MAX_HISTORY_BYTES (at least 1).
    """
    record_bytes = (1 + max(int(rows), 0)) * md.NUM_COLUMNS * 4
    return max(1, min(downsample_count(samples), MAX_HISTORY_BYTES // record_bytes))


class History:
    """A tracker's kept updates records as columns: what the charts draw.

    Attributes:
      steps: int64 [records] ascending; one record per step (a later record
        at the same step replaces an earlier one, as the Rust loader does for
        a restarted run).
      logged: int64 [records] their HEADER_LOGGED.
      num_rows: int64 [records] how many variable rows each has.
      columns: {column: float32 [records, width]} of SERIES_COLUMNS, NaN past
        a record's num_rows.
      newest: the newest readable record as a `metadata.Updates`, or None.
      warnings: messages about records that could not be read.
    """

    def __init__(self, steps, logged, num_rows, columns, newest, warnings):
        self.steps = steps
        self.logged = logged
        self.num_rows = num_rows
        self.columns = columns
        self.newest = newest
        self.warnings = warnings


def _is_updates_array(array):
    # The checks of `metadata.parse_updates`, without the copies it makes of
    # each record: a history holds up to DEFAULT_SAMPLES of them.
    return (
        isinstance(array, np.ndarray)
        and array.dtype == np.int32
        and array.ndim == 2
        and array.shape[1] == md.NUM_COLUMNS
        and array.shape[0] >= 1
    )


def _updates_error(array):
    """The FormatError `metadata.parse_updates` words for an unreadable record."""
    try:
        md.parse_updates(array)
    except md.FormatError as err:
        return err
    return md.FormatError("not an updates record. Received: %r" % (array,))


def _read_history(run, tag, data):
    """A `History` from the TensorDatum list of an updates tag."""
    by_step = {}
    failures = []
    for datum in data:
        if not _is_updates_array(datum.numpy):
            failures.append((datum.step, _updates_error(datum.numpy)))
            continue
        # One record per step: a later one at the same step replaces it, as
        # the Rust loader does for a restarted run.
        by_step[int(datum.step)] = datum.numpy
    warnings = []
    if failures:
        warnings.append(_describe_skipped(run, tag, "updates", failures, len(data)))
    steps = sorted(by_step)
    newest_bad = max((step for step, _ in failures), default=None)
    if steps and newest_bad is not None and newest_bad > steps[-1]:
        warnings.append(
            "%s %s: the newest updates record (step %d) is unreadable; verdicts are "
            "as of step %d." % (run, tag, newest_bad, steps[-1])
        )
    arrays = [by_step[step] for step in steps]
    count = len(arrays)
    num_rows = np.fromiter((array.shape[0] - 1 for array in arrays), np.int64, count)
    logged = np.fromiter((array[0, md.HEADER_LOGGED] for array in arrays), np.int64, count)
    width = int(num_rows.max()) if count else 0
    # One copy of the three drawn columns per record into [column, record,
    # variable]; the integer counters stay behind (verdicts read the newest
    # record only).
    block = np.full((len(SERIES_COLUMNS), count, width), _NAN_BITS, dtype=np.int32)
    for index, array in enumerate(arrays):
        block[:, index, : array.shape[0] - 1] = array[1:, SERIES_COLUMNS].T
    floats = block.view(np.float32)
    columns = {column: floats[position] for position, column in enumerate(SERIES_COLUMNS)}
    newest = md.parse_updates(arrays[-1]) if arrays else None
    return History(np.asarray(steps, dtype=np.int64), logged, num_rows, columns, newest, warnings)


class Tracker:
    """One tracker (one updates tag): its newest record and, on demand, the rest.

    Verdicts need only the newest record (its counters are cumulative), so
    that is what a tracker is built from; the series and heatmap routes ask
    for the history of kept records, read on first use and then kept.

    Attributes:
      run, tag: where the records come from.
      entries: the variables record's entries naming the rows, or None.
      newest: the newest valid `metadata.Updates`, or None.
      newest_step: its step, or None.
      warnings: messages about the records the verdicts come from.
      steps, logged, num_rows, columns: those of `history()` (reading one of
        them reads the history).
    """

    SERIES_COLUMNS = SERIES_COLUMNS

    def __init__(self, run, tag, entries, newest_step, newest, warnings, history=None, load_history=None):
        """Creates a tracker.

        Args:
          run, tag, entries, newest_step, newest, warnings: see the class.
          history: the `History`, when it was read already.
          load_history: a function returning the `History`, called on first
            use when `history` is None.
        """
        self.run = run
        self.tag = tag
        self.entries = entries
        self.newest_step = newest_step
        self.newest = newest
        self.warnings = list(warnings)
        self._history = history
        self._load_history = load_history
        # Guards the history and the memo; a second request for the history
        # of the same tracker waits for the first read instead of repeating it.
        self._lock = threading.Lock()
        self._memo = collections.OrderedDict()
        self._verdict_report = None

    def history(self):
        """The kept records as columns (a `History`), read once."""
        with self._lock:
            if self._history is None:
                if self._load_history is None:
                    self._history = _read_history(self.run, self.tag, [])
                else:
                    self._history = self._load_history()
            return self._history

    @property
    def steps(self):
        return self.history().steps

    @property
    def logged(self):
        return self.history().logged

    @property
    def num_rows(self):
        return self.history().num_rows

    @property
    def columns(self):
        return self.history().columns

    def names(self):
        """Variable names by row index (only as many as there are entries)."""
        return [entry["name"] for entry in self.entries or ()]

    def present(self, index):
        """Boolean mask of the history's records that carry variable `index`.

        Records from before the variable was first tracked are left out.
        """
        history = self.history()
        mask = history.num_rows > index
        if self.entries is not None and index < len(self.entries):
            mask &= history.logged > _joined(self.entries[index])
        return mask

    def presence(self):
        """Boolean [records, width] of `present(i)` for every row i at once."""
        history = self.history()
        width = history.columns[md.DELTA_L2].shape[1]
        # Rows without an entry have no `joined` to check: the smallest int
        # lets every record through.
        joined = np.full(width, np.iinfo(np.int64).min, dtype=np.int64)
        for index, entry in enumerate((self.entries or [])[:width]):
            joined[index] = _joined(entry)
        mask = history.num_rows[:, np.newaxis] > np.arange(width)[np.newaxis, :]
        mask &= history.logged[:, np.newaxis] > joined[np.newaxis, :]
        return mask

    def history_warnings(self):
        """`warnings`, then those of the history that are not among them."""
        warnings = list(self.warnings)
        warnings += [warning for warning in self.history().warnings if warning not in warnings]
        return warnings

    def verdicts(self):
        """The `variables` route's document for this tracker (computed once)."""
        if self._verdict_report is None:
            self._verdict_report = _verdict_report(self)
        return self._verdict_report

    def memo(self, key, compute):
        """`compute()`, computed once per `key` for this tracker.

        A tracker's records never change (newer records make a new tracker),
        so a document built from them, even encoded, can be sent again as is.
        Keeps the MEMO_SIZE most recently used keys.
        """
        with self._lock:
            if key in self._memo:
                self._memo.move_to_end(key)
                return self._memo[key]
        # Computed outside the lock: compute() may read the history.
        value = compute()
        with self._lock:
            self._memo[key] = value
            while len(self._memo) > MEMO_SIZE:
                self._memo.popitem(last=False)
        return value


def _joined(entry):
    try:
        return int(entry["joined"])
    except (TypeError, ValueError, KeyError):
        return 0


def _verdict_report(tracker):
    warnings = list(tracker.warnings)
    rows = []
    if tracker.newest is not None and tracker.entries is not None:
        try:
            rows = analysis.verdicts(tracker.entries, tracker.newest, tracker.newest_step)
        except (md.FormatError, TypeError, ValueError, KeyError, IndexError) as err:
            # A variables record with the right keys but wrong types ends up
            # here too: no verdict beats a wrong one.
            warnings.append(
                "%s %s: no verdicts, the records do not fit together: %s"
                % (tracker.run, tracker.tag, err)
            )
            rows = []
    return json_safe(
        {
            "run": tracker.run,
            "tag": tracker.tag,
            "step": tracker.newest_step,
            "logged": tracker.newest.logged if tracker.newest is not None else 0,
            "summary": analysis.summarize(rows),
            "rows": rows,
            "warnings": warnings,
        }
    )


def _describe_skipped(run, tag, what, failures, total):
    steps = ", ".join(str(step) for step, _ in failures[:5])
    if len(failures) > 5:
        steps += ", ..."
    return "%s %s: skipped %d of %d %s records (steps %s): %s" % (
        run, tag, len(failures), total, what, steps, failures[0][1],
    )


def _choose_entries(run, tag, variables_data, newest, warnings):
    parsed = []
    failures = []
    for datum in variables_data:
        try:
            entries, digest = md.parse_variables(datum.numpy)
        except md.FormatError as err:
            failures.append((datum.step, err))
            continue
        parsed.append((int(datum.step), entries, digest))
    if failures:
        warnings.append(_describe_skipped(run, tag, "variables", failures, len(variables_data)))
    if not parsed:
        if newest is not None:
            warnings.append(
                "%s %s: no readable variables record (tag %s), so the rows cannot be "
                "named; the tracker writes one whenever its variable set changes."
                % (run, tag, tag + md.VARIABLES_TAG_SUFFIX)
            )
        return None
    parsed.sort(key=lambda item: item[0])
    if newest is None:
        return parsed[-1][1]
    for _, entries, digest in reversed(parsed):
        if digest == newest.names_hash:
            return entries
    warnings.append(
        "%s %s: no kept variables record matches the updates records (names_hash %d, "
        "newest variables record has %d); names come from the newest variables record "
        "by row position and may be wrong. Was the run restarted with another model "
        "under the same tracker name?" % (run, tag, newest.names_hash, parsed[-1][2])
    )
    return parsed[-1][1]


def _series_metadata(provider, ctx, experiment_id, run, tag):
    """The TensorTimeSeries of an updates tag and its variables tag.

    Raises:
      errors.NotFoundError: no such run, or no such varupdate tag in it.
    """
    vtag = tag + md.VARIABLES_TAG_SUFFIX
    listing = provider.list_tensors(
        ctx,
        experiment_id=experiment_id,
        plugin_name=md.PLUGIN_NAME,
        run_tag_filter=provider_lib.RunTagFilter(runs=[run], tags=[tag, vtag]),
    )
    series = listing.get(run, {})
    if tag not in series:
        runs = {r.run_name for r in provider.list_runs(ctx, experiment_id=experiment_id)}
        if run not in runs:
            raise errors.NotFoundError("no run %r in this logdir" % (run,))
        raise errors.NotFoundError(
            "run %r has no varupdate tag %r; the runs route lists the tags" % (run, tag)
        )
    return series[tag], series.get(vtag)


def _check_updates_tag(tag, updates_series):
    """Raises NotFoundError when `tag` holds variables records, not updates.

    Returns:
      The FormatError of a plugin content this version cannot read, else None.
    """
    try:
        kind = md.parse_plugin_content(updates_series.plugin_content)
    except md.FormatError as err:
        return err
    if kind != md.KIND_UPDATES:
        raise errors.NotFoundError(
            "%r holds variable names, not updates; ask for the tracker's updates tag "
            "(the same tag without %r)" % (tag, md.VARIABLES_TAG_SUFFIX)
        )
    return None


def _read_data(provider, ctx, experiment_id, runs, tags, downsample):
    return provider.read_tensors(
        ctx,
        experiment_id=experiment_id,
        plugin_name=md.PLUGIN_NAME,
        downsample=downsample,
        run_tag_filter=provider_lib.RunTagFilter(runs=runs, tags=tags),
    )


def _newest_tracker(run, tag, updates_data, variables_data, load_history):
    """A tracker from the newest updates and variables records, or None.

    None when they do not simply fit together (unreadable, or a names_hash
    that differs): `_full_tracker` then reads every kept record, to find
    the newest that fits and to explain the others.
    """
    if not updates_data or not variables_data:
        return None
    datum = updates_data[-1]
    try:
        newest = md.parse_updates(datum.numpy)
        entries, digest = md.parse_variables(variables_data[-1].numpy)
    except md.FormatError:
        return None
    if digest != newest.names_hash or newest.num_variables > len(entries):
        return None
    return Tracker(run, tag, entries, int(datum.step), newest, [], load_history=load_history)


def _full_tracker(provider, ctx, experiment_id, run, tag, samples, rows):
    """A tracker from all kept records, with the history read on the way."""
    vtag = tag + md.VARIABLES_TAG_SUFFIX
    data = _read_data(provider, ctx, experiment_id, [run], [tag], history_count(samples, rows))
    history = _read_history(run, tag, data.get(run, {}).get(tag, []))
    # Variables records are few (one per change of the variable set) and any
    # of them may be the one whose hash matches, so read all that were kept.
    variables_data = _read_data(
        provider, ctx, experiment_id, [run], [vtag], KEEP_ALL_SAMPLES
    ).get(run, {}).get(vtag, [])
    warnings = list(history.warnings)
    entries = _choose_entries(run, tag, variables_data, history.newest, warnings)
    if entries is not None and len(history.steps):
        too_wide = history.steps[history.num_rows > len(entries)]
        if len(too_wide):
            warnings.append(
                "%s %s: %d updates records have more rows than the %d named variables "
                "(first at step %d); their extra rows are not shown."
                % (run, tag, len(too_wide), len(entries), too_wide[0])
            )
    newest_step = int(history.steps[-1]) if len(history.steps) else None
    return Tracker(run, tag, entries, newest_step, history.newest, warnings, history=history)


def _read_trackers(provider, ctx, experiment_id, tag, updates_series, samples=None):
    """Trackers of `tag` in several runs, their newest records read in one call.

    Args:
      updates_series: {run: TensorTimeSeries of `tag`}.

    Returns:
      {run: Tracker, or None for a run whose `tag` holds variables records}.
    """
    trackers = {}
    readable = []
    for run, series in updates_series.items():
        try:
            error = _check_updates_tag(tag, series)
        except errors.NotFoundError:
            trackers[run] = None
            continue
        if error is not None:
            trackers[run] = Tracker(run, tag, None, None, None, ["%s %s: skipped: %s" % (run, tag, error)])
        else:
            readable.append(run)
    if not readable:
        return trackers
    # Both tags of every run in one read: the Rust loader answers each small
    # read after ~40 ms however little it holds, so a read per run or per
    # tag would add up over 20 runs.
    vtag = tag + md.VARIABLES_TAG_SUFFIX
    newest = _read_data(provider, ctx, experiment_id, readable, [tag, vtag], 1)
    for run in readable:
        by_tag = newest.get(run, {})
        updates_data = by_tag.get(tag, [])
        shape = np.shape(updates_data[-1].numpy) if updates_data else ()
        rows = shape[0] - 1 if len(shape) == 2 else 0
        load = _history_loader(provider, ctx, experiment_id, run, tag, samples, rows)
        trackers[run] = _newest_tracker(run, tag, updates_data, by_tag.get(vtag, []), load) or _full_tracker(
            provider, ctx, experiment_id, run, tag, samples, rows
        )
    return trackers


def _history_loader(provider, ctx, experiment_id, run, tag, samples, rows):
    def load():
        data = _read_data(provider, ctx, experiment_id, [run], [tag], history_count(samples, rows))
        return _read_history(run, tag, data.get(run, {}).get(tag, []))

    return load


def read_tracker(provider, ctx, experiment_id, run, tag, samples=None):
    """Loads one tracker: its newest records now, the others when asked for.

    Args:
      provider: a `tensorboard.data.provider.DataProvider`.
      ctx: the request context (`tensorboard.context.RequestContext`).
      experiment_id: the experiment id ("" for a plain logdir).
      run, tag: the run and the tracker's updates tag.
      samples: the plugin's `--samples_per_plugin` value (None: default).

    Returns:
      A `Tracker`.

    Raises:
      errors.NotFoundError: unknown run or tag, or a variables tag was named.
    """
    updates_series, _ = _series_metadata(provider, ctx, experiment_id, run, tag)
    _check_updates_tag(tag, updates_series)
    return _read_trackers(provider, ctx, experiment_id, tag, {run: updates_series}, samples)[run]


def _scan(provider, ctx, experiment_id):
    listing = provider.list_tensors(ctx, experiment_id=experiment_id, plugin_name=md.PLUGIN_NAME)
    found = {}
    warnings = []
    for run in sorted(listing):
        for tag in sorted(listing[run]):
            try:
                kind = md.parse_plugin_content(listing[run][tag].plugin_content)
            except md.FormatError as err:
                warnings.append("%s %s: skipped: %s" % (run, tag, err))
                continue
            if kind == md.KIND_UPDATES:
                found.setdefault(run, {})[tag] = listing[run][tag]
    return listing, found, warnings


def scan_tags(provider, ctx, experiment_id):
    """All updates tags per run, with warnings about tags that cannot be read.

    Returns:
      ({run: {tag: TensorTimeSeries}}, [warning, ...]); runs sorted by name.
    """
    _, found, warnings = _scan(provider, ctx, experiment_id)
    return found, warnings


def list_update_tags(provider, ctx, experiment_id):
    """{run: [updates tag, ...]} with runs and tags sorted.

    Only tags whose plugin content parses as a supported "updates" record.
    """
    found, _ = scan_tags(provider, ctx, experiment_id)
    return {run: sorted(tags) for run, tags in found.items()}


def read_verdicts(provider, ctx, experiment_id, run, tag, samples=None):
    """The `variables` route's document: verdicts from the newest record.

    Returns:
      dict with run, tag, step, logged, summary, rows and warnings.

    Raises:
      errors.NotFoundError: unknown run or tag.
    """
    return read_tracker(provider, ctx, experiment_id, run, tag, samples).verdicts()


class RecordCache:
    """Trackers keyed by (experiment, run, tag, newest step and time).

    A new step or a rewritten file changes the key, so stale entries are never
    served; the least recently used entry goes when there are more than `size`.
    Safe to share between TensorBoard's request threads.
    """

    def __init__(self, provider, samples=None, size=CACHE_SIZE):
        self._provider = provider
        self._samples = samples
        self._size = size
        self._entries = collections.OrderedDict()
        self._lock = threading.Lock()

    def tracker(self, ctx, experiment_id, run, tag, updates_series=None, variables_series=None):
        """Like `read_tracker`, cached. The series arguments skip a listing."""
        if updates_series is None:
            updates_series, variables_series = _series_metadata(
                self._provider, ctx, experiment_id, run, tag
            )
        _check_updates_tag(tag, updates_series)
        series = {tag: updates_series}
        if variables_series is not None:
            series[tag + md.VARIABLES_TAG_SUFFIX] = variables_series
        return self.trackers(ctx, experiment_id, [run], tag, {run: series})[run]

    def trackers(self, ctx, experiment_id, runs, tag, listing=None):
        """Trackers of `tag` in `runs`, cached; those not cached are read together.

        Args:
          runs: run names.
          listing: `list_tensors` of this plugin covering `runs` (read when None).

        Returns:
          {run: Tracker, or None where the run has no updates tag `tag`}.
        """
        vtag = tag + md.VARIABLES_TAG_SUFFIX
        if listing is None:
            listing = self._provider.list_tensors(
                ctx,
                experiment_id=experiment_id,
                plugin_name=md.PLUGIN_NAME,
                run_tag_filter=provider_lib.RunTagFilter(runs=list(runs), tags=[tag, vtag]),
            )
        found = {}
        missing = {}
        keys = {}
        for run in runs:
            series = listing.get(run, {})
            if tag not in series:
                found[run] = None
                continue
            updates_series, variables_series = series[tag], series.get(vtag)
            keys[run] = (
                experiment_id, run, tag,
                updates_series.max_step, updates_series.max_wall_time,
                getattr(variables_series, "max_step", None),
                getattr(variables_series, "max_wall_time", None),
            )
            with self._lock:
                if keys[run] in self._entries:
                    self._entries.move_to_end(keys[run])
                    found[run] = self._entries[keys[run]]
                    continue
            missing[run] = updates_series
        if missing:
            # Read outside the lock: two threads may both read a new tracker,
            # which costs time but never serves wrong data.
            read = _read_trackers(self._provider, ctx, experiment_id, tag, missing, self._samples)
            with self._lock:
                for run, tracker in read.items():
                    if tracker is not None:
                        self._entries[keys[run]] = tracker
                while len(self._entries) > self._size:
                    self._entries.popitem(last=False)
            found.update(read)
        return {run: found[run] for run in runs}

    def clear(self):
        """Forgets every parsed tracker: the next request reads the records again."""
        with self._lock:
            self._entries.clear()

    def runs_report(self, ctx, experiment_id):
        """The `runs` route's document."""
        listing, found, warnings = _scan(self._provider, ctx, experiment_id)
        trackers = {}
        for tag in sorted({tag for tags in found.values() for tag in tags}):
            runs = [run for run in found if tag in found[run]]
            for run, tracker in self.trackers(ctx, experiment_id, runs, tag, listing).items():
                trackers[run, tag] = tracker
        runs = []
        for run, tags in found.items():
            entries = []
            for tag in sorted(tags):
                report = trackers[run, tag].verdicts()
                warnings.extend(report["warnings"])
                entry = {
                    "tag": tag,
                    "last_step": report["step"],
                    "logged": report["logged"],
                }
                entry.update(report["summary"])
                entries.append(entry)
            runs.append({"run": run, "tags": entries})
        return {"runs": runs, "warnings": warnings}


def _variable_index(tracker, name):
    names = tracker.names()
    if name not in names:
        raise errors.NotFoundError(
            "no variable %r in %s %s; the variables route lists them" % (name, tracker.run, tracker.tag)
        )
    return names.index(name)


def _points(tracker):
    history = tracker.history()
    logged = int(tracker.newest.logged) if tracker.newest is not None else 0
    if len(history.logged):
        # The history may have been read after newer records arrived.
        logged = max(logged, int(history.logged[-1]))
    points = len(history.steps)
    return {"logged": logged, "points": points, "downsampled": points < logged}


def series_report(tracker, variables):
    """The `series` route's document.

    Args:
      tracker: a `Tracker`.
      variables: variable names.

    Raises:
      errors.NotFoundError: a name that the tracker does not know.
    """
    series = {}
    for name in variables:
        index = _variable_index(tracker, name)
        mask = tracker.present(index)
        column = {
            key: round_significant(matrix[mask, index], SERIES_DIGITS)
            for key, matrix in tracker.columns.items()
        }
        grad = column[md.GRAD_L2]
        series[name] = {
            "step": tracker.steps[mask].tolist(),
            "delta_l2": column[md.DELTA_L2].tolist(),
            "value_l2": column[md.VALUE_L2].tolist(),
            "relative_update": round_significant(
                relative_update(column[md.DELTA_L2], column[md.VALUE_L2]), SERIES_DIGITS
            ).tolist(),
            # Negative values are GRAD_* sentinels, told apart by gradient_state.
            "gradient_l2": np.where(grad >= 0, grad, np.nan).tolist(),
            "gradient_state": md.grad_state(grad).tolist(),
        }
    document = {"run": tracker.run, "tag": tracker.tag}
    document.update(_points(tracker))
    document.update(
        {"samples_hint": SAMPLES_HINT, "series": series, "warnings": tracker.history_warnings()}
    )
    return json_safe(document)


def heatmap_report(tracker, buckets=DEFAULT_BUCKETS):
    """The `heatmap` route's document: largest relative update per bucket.

    Rows follow the `variables` route's order (problems first).
    """
    report = tracker.verdicts()
    history = tracker.history()
    names = tracker.names()
    width = history.columns[md.DELTA_L2].shape[1]
    # Verdict order when there are verdicts, else row order; only rows that
    # some kept record carries and that have a name.
    order = [row["variable"] for row in report["rows"]] or names
    row_of = {name: index for index, name in reversed(list(enumerate(names)))}
    indices = [row_of[name] for name in order if row_of[name] < width]
    order = [names[index] for index in indices]
    # Whole columns first, rows picked from the bucketed matrix last: it is
    # far smaller than the records (2,000 x 100 cells against 2,000 x 2,000).
    relative = relative_update(
        history.columns[md.DELTA_L2], history.columns[md.VALUE_L2], dtype=np.float32
    )
    relative[~tracker.presence()] = np.nan
    starts, ends, matrix = bucket_max(history.steps, relative, buckets)
    document = {
        "run": tracker.run,
        "tag": tracker.tag,
        "variables": order,
        "bucket_start": starts.tolist(),
        "bucket_end": ends.tolist(),
        # NaN already None: json_safe over 200,000 cells would cost more
        # than the rest of the route.
        "values": nan_to_none(round_significant(matrix[indices], HEATMAP_DIGITS)),
    }
    document.update(_points(tracker))
    document["warnings"] = report["warnings"] + [
        warning for warning in history.warnings if warning not in report["warnings"]
    ]
    return document


def compare_report(tag, trackers):
    """The `compare` route's document.

    Args:
      tag: the updates tag compared.
      trackers: {run: Tracker or None}; None for a run without the tag.

    Returns:
      Rows matched by variable name; rows where runs disagree first, then
      the most severe, then by name.
    """
    runs = list(trackers)
    warnings = []
    by_run = {}
    for run, tracker in trackers.items():
        if tracker is None:
            warnings.append("%s: has no tag %r" % (run, tag))
            by_run[run] = {}
            continue
        report = tracker.verdicts()
        warnings.extend(report["warnings"])
        by_run[run] = {row["variable"]: row for row in report["rows"]}
    names = []
    for run in runs:
        names.extend(name for name in by_run[run] if name not in names)
    rows = []
    for name in names:
        found = [by_run[run][name] for run in runs if name in by_run[run]]
        statuses = {run: by_run[run][name]["status"] if name in by_run[run] else None for run in runs}
        gradients = {run: by_run[run][name]["gradient"] if name in by_run[run] else None for run in runs}
        rows.append(
            {
                "variable": name,
                "trainable": any(row["trainable"] for row in found),
                "statuses": statuses,
                "gradients": gradients,
                "disagree": len(set(statuses.values())) > 1,
                "_severity": max(row["severity"] for row in found),
            }
        )
    rows.sort(key=lambda row: (not row["disagree"], -row["_severity"], row["variable"]))
    for row in rows:
        del row["_severity"]
    return {"tag": tag, "runs": runs, "rows": rows, "warnings": warnings}
