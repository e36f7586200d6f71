"""`RecordCache`: parsed tags kept between requests, with what was computed from them.

`service` reads through one `RecordCache`: it asks `reading` for what is not
cached yet (the newest records of many runs in one call, a tag's history on
first use) and keeps each tag's records, verdicts, history, heatmap values and
a few encoded documents (`Entry.memoized`) until a newer record arrives. It
builds no document itself: that is `reports`' job, called by `service`.
"""

import collections
import threading

from tb_varupdate.format import metadata as md
from tb_varupdate.reader import buckets as buckets_lib
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


class Entry:
    """One cached tag: its records and what was computed from them, under one lock."""

    def __init__(self, records):
        self.records = records
        self.lock = threading.Lock()
        self.verdicts = None
        self.history = records.history
        self.values = None
        self.memo = collections.OrderedDict()
        self.pinned = {}

    def verdicts_document(self):
        """The `variables` document of these records, computed once."""
        with self.lock:
            if self.verdicts is None:
                self.verdicts = reports.verdicts_report(self.records)
            return self.verdicts

    def history_of(self, source):
        """The kept records' `History`, read on first use."""
        # Under the entry's lock: a second request for the same history waits
        # for the first read instead of repeating it.
        with self.lock:
            if self.history is None:
                self.history = reading.read_history(source, self.records)
            return self.history

    def heatmap_values(self, source):
        """(History, heatmap values) of these records, computed once."""
        history = self.history_of(source)
        with self.lock:
            if self.values is None:
                self.values = reports.heatmap_values(self.records, history)
            return history, self.values

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
        # Held while a heatmap document is computed (`service.heatmap`).
        self.heatmaps = threading.BoundedSemaphore(HEATMAP_WORKERS)

    def source(self, ctx, experiment_id):
        """The `reading.Source` of one request."""
        return reading.Source(self._provider, ctx, experiment_id, self._samples, self._thorough)

    def clear(self):
        """Forgets every parsed tag: the next request reads the records again."""
        with self._lock:
            self._entries.clear()

    # Reading, cached.

    def entries(self, source, runs, tag, listing=None):
        """{run: Entry, or None where the run has no updates tag `tag`}; misses read together.

        Args:
          listing: `source.list_tensors` of these runs and the tag's two tags,
            where already read (a `reading.Scan`'s).
        """
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
                    found[run] = None if records is None else Entry(records)
                    if records is not None:
                        self._entries[keys[run]] = found[run]
                while len(self._entries) > self._size:
                    self._entries.popitem(last=False)
        return {run: found[run] for run in runs}

    def entry(self, source, run, tag):
        """The `Entry` of one tag.

        Raises:
          errors.NotFoundError: unknown run or tag, or a variables tag was named.
        """
        series = reading.tag_series(source, run, tag)
        reading.check_updates_tag(tag, series[tag])
        return self.entries(source, [run], tag, {run: series})[run]

    def records(self, ctx, experiment_id, run, tag):
        """The `reading.TagRecords` of one tag, cached.

        Raises:
          errors.NotFoundError: unknown run or tag, or a variables tag was named.
        """
        return self.entry(self.source(ctx, experiment_id), run, tag).records

    def records_of(self, ctx, experiment_id, runs, tag):
        """{run: TagRecords, or None where the run has no updates tag `tag`}."""
        entries = self.entries(self.source(ctx, experiment_id), runs, tag)
        return {run: entry and entry.records for run, entry in entries.items()}
