"""Reads `varupdate` records through a TensorBoard data provider. No TensorFlow.

Only `list_runs`, `list_tensors` and `read_tensors` are used, so this works
under both loaders (`context.multiplexer` is None under the Rust one). The
plugin's routes and the CLI share these functions:

* `list_update_tags` and `read_verdicts` are what the CLI calls;
* `read_tracker` loads one tracker's kept records into a `Tracker`, and
  `verdict_report`, `series_report`, `heatmap_report` and `compare_report`
  turn trackers into the JSON documents of docs/HTTP_API.md;
* `relative_update`, `bucket_edges`, `bucket_max` and `json_safe` are pure
  NumPy/dict helpers that tests call without event files.

A malformed record never raises out of here: it is skipped and explained in
the report's `warnings`. Only an unknown run or tag raises
(`tensorboard.errors.NotFoundError`).
"""

import collections
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

# Trackers kept parsed in a `RecordCache`. A parsed tracker holds 4 float32
# columns per variable per record (~10 MB for 300 variables x 2,000 records),
# so this bounds the cache to a few hundred MB at worst.
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
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, np.generic):
        return json_safe(value.item())
    return value


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


def relative_update(delta_l2, value_l2):
    """Per-step relative update DELTA_L2 / VALUE_L2 (vectorised).

    Returns:
      float64 array: 0 where the delta is 0 (the variable did not change, even
      if its value is 0), NaN where the ratio is undefined (value 0 or
      non-finite, or a non-finite delta).
    """
    delta = np.asarray(delta_l2, dtype=np.float64)
    value = np.asarray(value_l2, dtype=np.float64)
    usable = np.isfinite(delta) & np.isfinite(value) & (value > 0)
    ratio = np.full(np.broadcast(delta, value).shape, np.nan)
    np.divide(delta, value, out=ratio, where=usable)
    ratio[delta == 0] = 0.0
    return ratio


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
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, np.newaxis]
    if len(steps) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros((values.shape[1], 0))
    starts, ends = bucket_edges(steps[0], steps[-1], buckets)
    which = np.searchsorted(starts, steps, side="right") - 1
    matrix = np.full((len(starts), values.shape[1]), np.nan)
    # fmax skips NaN, so a bucket is NaN only when none of its records has a
    # value; np.fmax.at accumulates per bucket without a Python loop.
    np.fmax.at(matrix, which, values)
    return starts, ends, matrix.T


class Tracker:
    """The kept records of one tracker (one updates tag), parsed.

    Attributes:
      run, tag: where the records come from.
      entries: the variables record's entries naming the rows, or None.
      steps: int64 [records] steps of the valid updates records, ascending.
      logged: int64 [records] their HEADER_LOGGED.
      num_rows: int64 [records] how many variable rows each has.
      columns: {column: float32 [records, variables]} of DELTA_L2,
        VALUE_L2 and GRAD_L2 (padding past num_rows is NaN).
      newest: the newest valid `metadata.Updates`, or None.
      warnings: messages about records that were skipped or doubtful.
    """

    SERIES_COLUMNS = (md.DELTA_L2, md.VALUE_L2, md.GRAD_L2)

    def __init__(self, run, tag, entries, steps, records, warnings):
        self.run = run
        self.tag = tag
        self.entries = entries
        self.warnings = list(warnings)
        self.steps = np.asarray(steps, dtype=np.int64)
        self.logged = np.asarray([u.logged for u in records], dtype=np.int64)
        self.num_rows = np.asarray([u.num_variables for u in records], dtype=np.int64)
        self.newest = records[-1] if records else None
        width = int(self.num_rows.max()) if len(records) else 0
        self.columns = {}
        for column in self.SERIES_COLUMNS:
            matrix = np.full((len(records), width), np.nan, dtype=np.float32)
            for index, updates in enumerate(records):
                matrix[index, : updates.num_variables] = updates.floats[:, column]
            self.columns[column] = matrix
        self._verdict_report = None

    @property
    def newest_step(self):
        return int(self.steps[-1]) if len(self.steps) else None

    def names(self):
        """Variable names by row index (only as many as there are entries)."""
        return [entry["name"] for entry in self.entries or ()]

    def present(self, index):
        """Boolean mask of the records that carry variable `index`.

        Records from before the variable was first tracked are left out.
        """
        mask = self.num_rows > index
        if self.entries is not None and index < len(self.entries):
            try:
                joined = int(self.entries[index]["joined"])
            except (TypeError, ValueError):
                joined = 0
            mask &= self.logged > joined
        return mask

    def verdicts(self):
        """The `variables` route's document for this tracker (computed once)."""
        if self._verdict_report is None:
            self._verdict_report = _verdict_report(self)
        return self._verdict_report


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


def _parse_updates_data(run, tag, data, warnings):
    by_step = {}
    failures = []
    for datum in data:
        try:
            updates = md.parse_updates(datum.numpy)
        except md.FormatError as err:
            failures.append((datum.step, err))
            continue
        # One record per step: a later one at the same step replaces it, as
        # the Rust loader does for a restarted run.
        by_step[int(datum.step)] = updates
    if failures:
        warnings.append(_describe_skipped(run, tag, "updates", failures, len(data)))
    steps = sorted(by_step)
    newest_bad = max((step for step, _ in failures), default=None)
    if steps and newest_bad is not None and newest_bad > steps[-1]:
        warnings.append(
            "%s %s: the newest updates record (step %d) is unreadable; verdicts are "
            "as of step %d." % (run, tag, newest_bad, steps[-1])
        )
    return steps, [by_step[step] for step in steps]


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


def _read_tracker(provider, ctx, experiment_id, run, tag, samples, updates_series):
    warnings = []
    try:
        kind = md.parse_plugin_content(updates_series.plugin_content)
    except md.FormatError as err:
        return Tracker(run, tag, None, [], [], ["%s %s: skipped: %s" % (run, tag, err)])
    if kind != md.KIND_UPDATES:
        raise errors.NotFoundError(
            "%r holds variable names, not updates; ask for the tracker's updates tag "
            "(the same tag without %r)" % (tag, md.VARIABLES_TAG_SUFFIX)
        )
    vtag = tag + md.VARIABLES_TAG_SUFFIX
    data = provider.read_tensors(
        ctx,
        experiment_id=experiment_id,
        plugin_name=md.PLUGIN_NAME,
        downsample=downsample_count(samples),
        run_tag_filter=provider_lib.RunTagFilter(runs=[run], tags=[tag]),
    ).get(run, {}).get(tag, [])
    # Variables records are few (one per change of the variable set) and any
    # of them may be the one whose hash matches, so read all that were kept.
    variables_data = provider.read_tensors(
        ctx,
        experiment_id=experiment_id,
        plugin_name=md.PLUGIN_NAME,
        downsample=KEEP_ALL_SAMPLES,
        run_tag_filter=provider_lib.RunTagFilter(runs=[run], tags=[vtag]),
    ).get(run, {}).get(vtag, [])
    steps, records = _parse_updates_data(run, tag, data, warnings)
    newest = records[-1] if records else None
    entries = _choose_entries(run, tag, variables_data, newest, warnings)
    if entries is not None and records:
        too_wide = [step for step, u in zip(steps, records) if u.num_variables > len(entries)]
        if too_wide:
            warnings.append(
                "%s %s: %d updates records have more rows than the %d named variables "
                "(first at step %d); their extra rows are not shown."
                % (run, tag, len(too_wide), len(entries), too_wide[0])
            )
    return Tracker(run, tag, entries, steps, records, warnings)


def read_tracker(provider, ctx, experiment_id, run, tag, samples=None):
    """Loads one tracker's kept records.

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
    return _read_tracker(provider, ctx, experiment_id, run, tag, samples, updates_series)


def scan_tags(provider, ctx, experiment_id):
    """All updates tags per run, with warnings about tags that cannot be read.

    Returns:
      ({run: {tag: TensorTimeSeries}}, [warning, ...]); runs sorted by name.
    """
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
    """Parsed trackers keyed by (experiment, run, tag, newest step and time).

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
        key = (
            experiment_id, run, tag,
            updates_series.max_step, updates_series.max_wall_time,
            getattr(variables_series, "max_step", None),
            getattr(variables_series, "max_wall_time", None),
        )
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        # Read outside the lock: two threads may both read a new tracker,
        # which costs time but never serves wrong data.
        tracker = _read_tracker(
            self._provider, ctx, experiment_id, run, tag, self._samples, updates_series
        )
        with self._lock:
            self._entries[key] = tracker
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return tracker

    def runs_report(self, ctx, experiment_id):
        """The `runs` route's document."""
        found, warnings = scan_tags(self._provider, ctx, experiment_id)
        vtags = {}
        if found:
            listing = self._provider.list_tensors(
                ctx, experiment_id=experiment_id, plugin_name=md.PLUGIN_NAME
            )
            vtags = {
                run: {tag: listing[run].get(tag + md.VARIABLES_TAG_SUFFIX) for tag in tags}
                for run, tags in found.items()
            }
        runs = []
        for run, tags in found.items():
            entries = []
            for tag in sorted(tags):
                tracker = self.tracker(ctx, experiment_id, run, tag, tags[tag], vtags[run][tag])
                report = tracker.verdicts()
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
    logged = int(tracker.newest.logged) if tracker.newest is not None else 0
    points = len(tracker.steps)
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
        {"samples_hint": SAMPLES_HINT, "series": series, "warnings": list(tracker.warnings)}
    )
    return json_safe(document)


def heatmap_report(tracker, buckets=DEFAULT_BUCKETS):
    """The `heatmap` route's document: largest relative update per bucket.

    Rows follow the `variables` route's order (problems first).
    """
    report = tracker.verdicts()
    names = tracker.names()
    width = tracker.columns[md.DELTA_L2].shape[1]
    # Verdict order when there are verdicts, else row order; only rows that
    # some kept record carries and that have a name.
    order = [row["variable"] for row in report["rows"]] or names
    row_of = {name: index for index, name in reversed(list(enumerate(names)))}
    indices = [row_of[name] for name in order if row_of[name] < width]
    order = [names[index] for index in indices]
    relative = relative_update(
        tracker.columns[md.DELTA_L2][:, indices], tracker.columns[md.VALUE_L2][:, indices]
    )
    for position, index in enumerate(indices):
        relative[~tracker.present(index), position] = np.nan
    starts, ends, matrix = bucket_max(tracker.steps, relative, buckets)
    document = {
        "run": tracker.run,
        "tag": tracker.tag,
        "variables": order,
        "bucket_start": starts.tolist(),
        "bucket_end": ends.tolist(),
        "values": round_significant(matrix, HEATMAP_DIGITS).tolist(),
    }
    document.update(_points(tracker))
    document["warnings"] = list(report["warnings"])
    return json_safe(document)


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
