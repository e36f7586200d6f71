"""The reader in one import, for scripts and callers written before the split.

The reader lives in small modules, one job each (docs/ARCHITECTURE.md):
`reading` (data-provider I/O, plain immutable data), `history` (kept records
as columns), `buckets` (heatmap step buckets), `reports` (the route
documents), `cache` (the LRU with its encoded-document memo) and `jsonutil`.
This module only names their public parts; new code imports those modules.
"""

from tensorboard import context as _context

from tb_varupdate.reader import cache as _cache
from tb_varupdate.reader import reading as _reading
from tb_varupdate.reader import reports as _reports
from tb_varupdate.reader.buckets import DEFAULT_BUCKETS, MAX_BUCKETS, bucket_edges, bucket_max  # noqa: F401
from tb_varupdate.reader.cache import CACHE_SIZE, MEMO_SIZE, RecordCache  # noqa: F401
from tb_varupdate.reader.history import (  # noqa: F401
    DEFAULT_SAMPLES, KEEP_ALL_SAMPLES, MAX_HISTORY_BYTES, SERIES_COLUMNS, downsample_count,
    history_count, relative_update,
)
from tb_varupdate.reader.jsonutil import encode_json, json_safe, nan_to_none, round_significant  # noqa: F401
from tb_varupdate.reader.reading import Source, TagRecords  # noqa: F401
from tb_varupdate.reader.reports import SAMPLES_HINT  # noqa: F401


def _source(provider, ctx, experiment_id, samples=None):
    return _reading.Source(provider, ctx or _context.RequestContext(), experiment_id, samples)


def list_update_tags(provider, ctx, experiment_id):
    """{run: [updates tag, ...]} with runs and tags sorted (readable tags only)."""
    scan = _reading.scan(_source(provider, ctx, experiment_id))
    return {run: sorted(tags) for run, tags in scan.updates.items()}


def read_tracker(provider, ctx, experiment_id, run, tag, samples=None):
    """The `reading.TagRecords` of one updates tag (`reading.read_tag`)."""
    return _reading.read_tag(_source(provider, ctx, experiment_id, samples), run, tag)


def read_verdicts(provider, ctx, experiment_id, run, tag, samples=None):
    """The `variables` route's document of one tag, read without a cache."""
    return _reports.verdicts_report(read_tracker(provider, ctx, experiment_id, run, tag, samples))


def compare_report(tag, trackers):
    """The `compare` document from {run: TagRecords or None} (`reports.compare_report`)."""
    return _reports.compare_report(
        tag, {run: records and _reports.verdicts_report(records) for run, records in trackers.items()}
    )
