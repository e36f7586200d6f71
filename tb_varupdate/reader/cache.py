"""`RecordCache`: parsed tags kept between requests, with their encoded documents.

The plugin's routes and `tb-varupdate check` read through one `RecordCache`:
it asks `reading` for what is not cached yet (the newest records of many runs
in one call, a tag's history on first use), hands plain data to `reports`,
and keeps each tag's verdicts, history, heatmap values and a few encoded
documents until a newer record arrives.
"""

import collections
import threading

from tb_varupdate.reader import buckets as buckets_lib
from tb_varupdate.format import metadata as md
from tb_varupdate.reader import reading
from tb_varupdate.reader import reports

# Tags kept parsed. A tag whose history was read holds 3 float32 columns per
# variable per record plus one of heatmap values (~13 MB for 300 variables x
# 2,000 records, at most ~26 MB: see history.MAX_HISTORY_BYTES), so this
# bounds the cache to a few hundred MB in practice, ~0.8 GB at worst.
CACHE_SIZE = 32

# Encoded documents kept per tag (see `_Entry.memoized`) besides the pinned
# ones: a few heatmap bucket counts.
MEMO_SIZE = 4

# Documents every dashboard asks for: never pushed out of the memo by a
# client cycling through bucket counts (which made the dashboard's own
# heatmap recompute, ~145 ms at 2,000 x 2,000, for every other client).
PINNED = ("variables", ("heatmap", buckets_lib.DEFAULT_BUCKETS))

# Heatmaps computed at once. Each bucket count not seen before costs a pass
# over the tag's kept records and an encoding proportional to the answer; a
# client sending many different counts queues behind itself here instead of
# taking the other request threads' share of the interpreter.
HEATMAP_WORKERS = 1


class _Entry:
    """One cached tag: its records and what was computed from them, under one lock."""

    def __init__(self, records):
        self.records = records
        self.lock = threading.Lock()
        self.verdicts = None
        self.history = records.history
        self.values = None
        self.memo = collections.OrderedDict()
        self.pinned = {}


    def memoized(self, key, compute):
        """`compute()`, computed once per `key` for this entry.

        An entry's records never change (newer records make a new entry), so
        a document built from them, even encoded, can be sent again as is.
        Keeps the PINNED keys and the MEMO_SIZE most recently used others.
        """
        with self.lock:
            if key in self.pinned:
                return self.pinned[key]
            if key in self.memo:
                self.memo.move_to_end(key)
                return self.memo[key]
        # Computed outside the lock: compute() may read the history.
        value = compute()
        with self.lock:
            if key in PINNED:
                self.pinned[key] = value
                return value
            self.memo[key] = value
            while len(self.memo) > MEMO_SIZE:
                self.memo.popitem(last=False)
        return value


class RecordCache:
    """Parsed tags keyed by (experiment, run, tag, newest step and time).

    A new step or a rewritten file changes the key, so stale entries are never
    served; the least recently used entry goes when there are more than `size`.
    Safe to share between TensorBoard's request threads. `thorough`: see
    `reading.Source`.
    """

    def __init__(self, provider, samples=None, size=CACHE_SIZE, thorough=False):
        self._provider = provider
        self._samples = samples
        self._thorough = thorough
        self._size = size
        self._entries = collections.OrderedDict()
        self._lock = threading.Lock()
        self._heatmaps = threading.BoundedSemaphore(HEATMAP_WORKERS)

    def source(self, ctx, experiment_id):
        """The `reading.Source` of one request."""
        return reading.Source(self._provider, ctx, experiment_id, self._samples, self._thorough)

    def clear(self):
        """Forgets every parsed tag: the next request reads the records again."""
        with self._lock:
            self._entries.clear()

    # Reading, cached.

    def _cached(self, source, runs, tag, listing=None):
        """{run: _Entry, or None where the run has no updates tag `tag`}; misses read together."""
        vtag = tag + md.VARIABLES_TAG_SUFFIX
        if listing is None:
            listing = source.list_tensors(runs=list(runs), tags=[tag, vtag])
        found, missing, keys = {}, {}, {}
        for run in runs:
            series = listing.get(run, {})
            if tag not in series:
                found[run] = None
                continue
            updates_series, variables_series = series[tag], series.get(vtag)
            keys[run] = (
                source.experiment_id, run, tag,
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
            # Read outside the lock: two threads may both read a new tag,
            # which costs time but never serves wrong data.
            read = reading.read_tags(source, tag, missing)
            with self._lock:
                for run, records in read.items():
                    found[run] = None if records is None else _Entry(records)
                    if records is not None:
                        self._entries[keys[run]] = found[run]
                while len(self._entries) > self._size:
                    self._entries.popitem(last=False)
        return {run: found[run] for run in runs}

    def _entry(self, source, run, tag):
        series = reading.tag_series(source, run, tag)
        reading.check_updates_tag(tag, series[tag])
        return self._cached(source, [run], tag, {run: series})[run]

    def records(self, ctx, experiment_id, run, tag):
        """The `reading.TagRecords` of one tag, cached.

        Raises:
          errors.NotFoundError: unknown run or tag, or a variables tag was named.
        """
        return self._entry(self.source(ctx, experiment_id), run, tag).records

    def records_of(self, ctx, experiment_id, runs, tag):
        """{run: TagRecords, or None where the run has no updates tag `tag`}."""
        entries = self._cached(self.source(ctx, experiment_id), runs, tag)
        return {run: entry and entry.records for run, entry in entries.items()}

    @staticmethod
    def _verdicts(entry):
        with entry.lock:
            if entry.verdicts is None:
                entry.verdicts = reports.verdicts_report(entry.records)
            return entry.verdicts

    def _history(self, source, entry):
        # Under the entry's lock: a second request for the same history waits
        # for the first read instead of repeating it.
        with entry.lock:
            if entry.history is None:
                entry.history = reading.read_history(source, entry.records)
            return entry.history

    def history(self, ctx, experiment_id, run, tag):
        """(TagRecords, History) of one tag; the history is read on first use."""
        source = self.source(ctx, experiment_id)
        entry = self._entry(source, run, tag)
        return entry.records, self._history(source, entry)

    # The route documents.

    def verdicts(self, ctx, experiment_id, run, tag, encode=None):
        """The `variables` document of one tag (`encode(document)` once, if given)."""
        entry = self._entry(self.source(ctx, experiment_id), run, tag)
        if encode is None:
            return self._verdicts(entry)
        return entry.memoized("variables", lambda: encode(self._verdicts(entry)))

    def check(self, ctx, experiment_id, run_filter=None):
        """Every readable tag's verdicts: what the `runs` route and `tb-varupdate check` show.

        Args:
          run_filter: optional predicate on run names; runs it rejects are not read.

        Returns:
          (scan, {(run, tag): (TagRecords, verdicts document)}).
        """
        source = self.source(ctx, experiment_id)
        scan = reading.scan(source)
        if run_filter is not None:
            scan = reading.Scan(
                scan.listing,
                {run: tags for run, tags in scan.updates.items() if run_filter(run)},
                tuple(item for item in scan.unreadable if run_filter(item[0])),
                tuple(w for item, w in zip(scan.unreadable, scan.warnings) if run_filter(item[0])),
            )
        found = {}
        for tag in sorted({tag for tags in scan.updates.values() for tag in tags}):
            runs = [run for run in scan.updates if tag in scan.updates[run]]
            for run, entry in self._cached(source, runs, tag, scan.listing).items():
                found[run, tag] = (entry.records, self._verdicts(entry))
        return scan, found

    def runs(self, ctx, experiment_id):
        """The `runs` route's document, with the tags that gave no verdicts listed."""
        scan, found = self.check(ctx, experiment_id)
        document = reports.runs_report(scan, {key: verdicts for key, (_, verdicts) in found.items()})
        unreadable = [{"run": run, "tag": tag, "reason": reason} for run, tag, reason in scan.unreadable]
        for (run, tag), (records, verdicts) in sorted(found.items()):
            reason = reports.unreadable_reason(records, verdicts)
            if reason is not None:
                unreadable.append({"run": run, "tag": tag, "reason": reason})
        document["unreadable"] = sorted(unreadable, key=lambda item: (item["run"], item["tag"]))
        return document

    def series(self, ctx, experiment_id, run, tag, variables, indices=()):
        """The `series` route's document (`reports.series_report`)."""
        records, history = self.history(ctx, experiment_id, run, tag)
        return reports.series_report(records, history, variables, indices)

    def heatmap(self, ctx, experiment_id, run, tag, buckets=buckets_lib.DEFAULT_BUCKETS, encode=None):
        """The `heatmap` route's document (`encode(document)` once per bucket count, if given)."""
        source = self.source(ctx, experiment_id)
        entry = self._entry(source, run, tag)

        def compute():
            with self._heatmaps:
                history = self._history(source, entry)
                verdicts = self._verdicts(entry)
                with entry.lock:
                    if entry.values is None:
                        entry.values = reports.heatmap_values(entry.records, history)
                    values = entry.values
                document = reports.heatmap_report(entry.records, verdicts, history, values, buckets)
                return document if encode is None else encode(document)

        return entry.memoized(("heatmap", buckets), compute)

    def compare(self, ctx, experiment_id, tag, runs):
        """The `compare` route's document.

        Raises:
          errors.NotFoundError: an unknown run, or none of the runs has `tag`.
        """
        source = self.source(ctx, experiment_id)
        entries = self._cached(source, runs, tag)
        # Runs are listed only when one has no tag: under the Rust loader
        # each data provider call can cost ~40 ms, even a small one.
        if any(entry is None for entry in entries.values()):
            known = source.run_names()
            if any(run not in known for run in runs) or all(entry is None for entry in entries.values()):
                # A list: the "none of the runs" wording of several runs.
                reading.raise_unknown(source, list(runs), tag, known)
        verdicts = {run: entry and self._verdicts(entry) for run, entry in entries.items()}
        return reports.compare_report(tag, verdicts)
