"""What the plugin's routes and `tb-varupdate check` ask of the reader: plain functions over a `RecordCache`.

Each function reads through the cache and returns a document of
docs/HTTP_API.md (or, with `encode`, its encoded bytes, computed once per
tag). `check` is the one place that lists the tags that gave no verdicts:
the `runs` route shows that list and the CLI gates on it.
"""

import collections

from tb_varupdate.reader import buckets as buckets_lib
from tb_varupdate.reader import reading
from tb_varupdate.reader import reports

Check = collections.namedtuple("Check", ["scan", "tags", "unreadable", "incomplete"])
Check.__doc__ = """Every readable tag's verdicts and what could not be read.

Attributes:
  scan: the `reading.Scan` (runs filtered, where a filter was given).
  tags: {(run, tag): (TagRecords, verdicts document)}.
  unreadable: [{"run", "tag", "reason"}] sorted by run and tag: the scan's
    unreadable tags and the tags whose records gave no verdicts.
  incomplete: [{"run", "tag", "reason"}] of tags with verdicts from part of
    their kept records (the first record that could not be read).
"""


def _filtered(scan, run_filter):
    """`scan` with only the runs `run_filter` accepts."""
    return reading.Scan(
        scan.listing,
        {run: tags for run, tags in scan.updates.items() if run_filter(run)},
        tuple(item for item in scan.unreadable if run_filter(item[0])),
        tuple(w for item, w in zip(scan.unreadable, scan.warnings) if run_filter(item[0])),
    )


def check(cache, ctx, experiment_id, run_filter=None):
    """Every readable tag's verdicts: what the `runs` route and `tb-varupdate check` show.

    Args:
      cache: the `RecordCache` to read through.
      ctx: TensorBoard's request context.
      experiment_id: the experiment ("" outside TensorBoard's multi-experiment mode).
      run_filter: optional predicate on run names; runs it rejects are not read.

    Returns:
      A `Check`.
    """
    source = cache.source(ctx, experiment_id)
    scan = reading.scan(source)
    if run_filter is not None:
        scan = _filtered(scan, run_filter)
    tags = {}
    for tag in sorted({tag for names in scan.updates.values() for tag in names}):
        runs = [run for run in scan.updates if tag in scan.updates[run]]
        for run, entry in cache.entries(source, runs, tag, scan.listing).items():
            tags[run, tag] = (entry.records, entry.verdicts_document())
    unreadable = [{"run": run, "tag": tag, "reason": reason} for run, tag, reason in scan.unreadable]
    incomplete = []
    for (run, tag), (records, verdicts) in sorted(tags.items()):
        reason = reports.unreadable_reason(records, verdicts)
        if reason is not None:
            unreadable.append({"run": run, "tag": tag, "reason": reason})
        elif records.incomplete:
            incomplete.append({"run": run, "tag": tag, "reason": records.incomplete[0]})
    unreadable.sort(key=lambda item: (item["run"], item["tag"]))
    return Check(scan, tags, unreadable, incomplete)


def runs(cache, ctx, experiment_id):
    """The `runs` route's document, with the tags that gave no verdicts listed."""
    found = check(cache, ctx, experiment_id)
    document = reports.runs_report(found.scan, {key: verdicts for key, (_, verdicts) in found.tags.items()})
    document["unreadable"] = found.unreadable
    return document


def variables(cache, ctx, experiment_id, run, tag, encode=None):
    """The `variables` route's document of one tag (`encode(document)` once, if given).

    Raises:
      errors.NotFoundError: unknown run or tag, or a variables tag was named.
    """
    entry = cache.entry(cache.source(ctx, experiment_id), run, tag)
    if encode is None:
        return entry.verdicts_document()
    return entry.memoized("variables", lambda: encode(entry.verdicts_document()))


def series(cache, ctx, experiment_id, run, tag, names, indices=()):
    """The `series` route's document (`reports.series_report`) of the rows named or indexed."""
    source = cache.source(ctx, experiment_id)
    entry = cache.entry(source, run, tag)
    return reports.series_report(entry.records, entry.history_of(source), names, indices)


def heatmap(cache, ctx, experiment_id, run, tag, buckets=buckets_lib.DEFAULT_BUCKETS, encode=None):
    """The `heatmap` route's document (`encode(document)` once per bucket count, if given)."""
    source = cache.source(ctx, experiment_id)
    entry = cache.entry(source, run, tag)

    def compute():
        with cache.heatmaps:
            history, values = entry.heatmap_values(source)
            document = reports.heatmap_report(entry.records, entry.verdicts_document(), history, values, buckets)
            return document if encode is None else encode(document)

    return entry.memoized(("heatmap", buckets), compute)


def compare(cache, ctx, experiment_id, tag, runs):  # pylint: disable=redefined-outer-name
    """The `compare` route's document.

    Raises:
      errors.NotFoundError: an unknown run, or none of the runs has `tag`.
    """
    source = cache.source(ctx, experiment_id)
    entries = cache.entries(source, runs, tag)
    # Runs are listed only when one has no tag: under the Rust loader
    # each data provider call can cost ~40 ms, even a small one.
    if any(entry is None for entry in entries.values()):
        known = source.run_names()
        if any(run not in known for run in runs) or all(entry is None for entry in entries.values()):
            # A list: the "none of the runs" wording of several runs.
            reading.raise_unknown(source, list(runs), tag, known)
    return reports.compare_report(tag, {run: entry and entry.verdicts_document() for run, entry in entries.items()})
