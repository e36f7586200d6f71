"""A tracker's kept updates records as columns: what the series and heatmap draw. Pure.

`read_history` turns the TensorDatum list TensorBoard returned into a
`History`; `presence` is the per-record quantity the charts show beside
`analysis.relative_update`. No I/O here: `reading.read_history` does the read.
"""

import dataclasses

import numpy as np

from tb_varupdate.format import metadata as md

# How many samples per tag the plugin asks TensorBoard to keep when the user
# gave no `--samples_per_plugin varupdate=N` (see `plugin.VarUpdateLoader`).
# Verdicts never depend on it (the newest record alone is exact); it only sets
# the detail of the charts. 2,000 records give the heatmap's default 100
# buckets ~20 records each and its maximum 1,000 buckets ~2 each, while the
# memory TensorBoard holds stays bounded: a record is 60 bytes per variable,
# so a 300-variable tracker keeps ~36 MB (TensorBoard's own default of 10
# would leave the charts with 10 points).
DEFAULT_SAMPLES = 2000

# `--samples_per_plugin varupdate=0` means "keep all", but
# `read_tensors(downsample=0)` returns nothing, so 0 becomes this count, which
# no run reaches (both loaders return everything they kept when asked for
# more than that).
KEEP_ALL_SAMPLES = 2**31 - 1

# A history read asks TensorBoard for at most this many bytes of records.
# The Rust loader's gRPC client refuses an answer over 256 MiB (the read
# fails outright), and reading dominates a first heatmap or chart: ~3 ms a
# MB through the Rust loader on 2 cores, so 96 MiB keeps the first heatmap
# of a 2,000-variable tracker near 0.4 s and its tab under 1 s. Only trackers
# of more than ~800 variables get fewer records than DEFAULT_SAMPLES (2,000
# variables: 838 records of 120 KB, still ~8 per default heatmap bucket and
# about a chart's width in points); `points` and `downsampled` say so. A
# cached tracker holds 3/15 of what it read (at most ~20 MB) as columns.
MAX_HISTORY_BYTES = 96 * 2**20

# The columns of the updates records that the series and heatmap routes draw.
SERIES_COLUMNS = (md.DELTA_L2, md.VALUE_L2, md.GRAD_L2)

# float32 NaN as the int32 bit pattern the updates records hold.
_NAN_BITS = int(np.float32(np.nan).view(np.int32))


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


@dataclasses.dataclass(frozen=True)
class History:
    """A tracker's kept updates records as columns.

    Attributes:
      steps: int64 [records] ascending; one record per step (a later record
        at the same step replaces an earlier one, as the Rust loader does for
        a restarted run).
      logged: int64 [records] their HEADER_LOGGED (records the tracker had
        written by then, not steps).
      num_rows: int64 [records] how many variable rows each has.
      columns: {column: float32 [records, width]} of SERIES_COLUMNS, NaN past
        a record's num_rows.
      newest: the newest readable record as a `metadata.Updates`, or None.
      warnings: messages about records that could not be read.
      skipped: the messages among `warnings` that say records could not be
        read (the newest one's first), for `tb-varupdate check` to fail on.
    """

    steps: np.ndarray
    logged: np.ndarray
    num_rows: np.ndarray
    columns: dict
    newest: object
    warnings: tuple
    skipped: tuple = ()

    @property
    def width(self):
        """Variable rows of the widest kept record (a size, not a read)."""
        return self.columns[md.DELTA_L2].shape[1]


def describe_skipped(run, tag, what, failures, total):
    """The warning for `failures` [(step, FormatError)] among `total` records."""
    steps = ", ".join(str(step) for step, _ in failures[:5])
    if len(failures) > 5:
        steps += ", ..."
    return "%s %s: skipped %d of %d %s records (steps %s): %s" % (
        run, tag, len(failures), total, what, steps, failures[0][1],
    )


def writers_warning(run, tag, count):
    """The warning for `count` > 1 trackers writing to one tag."""
    return (
        "%s %s: %d trackers wrote to this tag: a second one started over in an existing "
        "tag (a new callback or tracker in the same logdir), so the verdict covers the "
        "newest writer only; use another tracker name or logdir for each run." % (run, tag, count)
    )


def is_writers_warning(text):
    """True for a `writers_warning` line."""
    return "trackers wrote to this tag: a second one started over" in text


def read_history(run, tag, data):
    """A `History` from the TensorDatum list of an updates tag.

    Every record goes through `metadata.updates_version` (the checks of
    `parse_updates`, without its copies: a history holds thousands).
    """
    by_step = {}
    failures = []
    for datum in data:
        try:
            md.updates_version(datum.numpy)
        except md.FormatError as err:
            failures.append((datum.step, err))
            continue
        by_step[int(datum.step)] = datum.numpy
    warnings = []
    skipped = []
    if failures:
        skipped.append(describe_skipped(run, tag, "updates", failures, len(data)))
    steps = sorted(by_step)
    newest_bad = max((step for step, _ in failures), default=None)
    warnings.extend(skipped)
    if steps and newest_bad is not None and newest_bad > steps[-1]:
        newest_warning = (
            "%s %s: the newest updates record (step %d) is unreadable; verdicts are "
            "as of step %d." % (run, tag, newest_bad, steps[-1])
        )
        warnings.append(newest_warning)
        skipped.insert(0, newest_warning)
    arrays = [by_step[step] for step in steps]
    count = len(arrays)
    # Version 2 records hold 0 there; HEADER_WRITER_ID is the same column in both.
    writers = {int(array[0, md.HEADER_WRITER_ID]) for array in arrays} - {0}
    if len(writers) > 1:
        warnings.append(writers_warning(run, tag, len(writers)))
    num_rows = np.fromiter((array.shape[0] - 1 for array in arrays), np.int64, count)
    logged = np.fromiter((array[0, md.HEADER_LOGGED] for array in arrays), np.int64, count)
    width = int(num_rows.max()) if count else 0
    # One copy of the three drawn columns per record into [column, record,
    # variable]; the integer counters stay behind (verdicts read the newest
    # record only). SERIES_COLUMNS are the same in versions 2 and 3.
    block = np.full((len(SERIES_COLUMNS), count, width), _NAN_BITS, dtype=np.int32)
    for index, array in enumerate(arrays):
        block[:, index, : array.shape[0] - 1] = array[1:, SERIES_COLUMNS].T
    floats = block.view(np.float32)
    columns = {column: floats[position] for position, column in enumerate(SERIES_COLUMNS)}
    newest = md.parse_updates(arrays[-1]) if arrays else None
    return History(np.asarray(steps, dtype=np.int64), logged, num_rows, columns, newest, tuple(warnings),
                   tuple(skipped))


def joined(entry):
    """An entry's `joined` (records before it was first tracked), 0 if unreadable."""
    try:
        return int(entry["joined"])
    except (TypeError, ValueError, KeyError, OverflowError):
        return 0


def presence(history, entries):
    """Boolean [records, width]: which kept records carry each variable row.

    Records from before a variable was first tracked (its entry's `joined`)
    are left out; rows without an entry are present wherever a record has them.
    """
    width = history.width
    # The smallest int lets every record through for rows without an entry.
    first = np.full(width, np.iinfo(np.int64).min, dtype=np.int64)
    limit = np.iinfo(np.int64).max
    for index, entry in enumerate((entries or [])[:width]):
        # A record may say joined = 2**63 (no int64 holds it): later than any
        # record, which the largest int64 says as well.
        first[index] = min(joined(entry), limit)
    mask = history.num_rows[:, np.newaxis] > np.arange(width)[np.newaxis, :]
    mask &= history.logged[:, np.newaxis] > first[np.newaxis, :]
    return mask
