"""Step buckets for the heatmap: edges and the largest value per bucket. Pure NumPy.

Steps are whatever the writer passed (negative, or `time.time_ns()` values near
2**63), so edges are computed with Python integers: int64 arithmetic on a span
of 2**64 steps would overflow.
"""

import numpy as np

DEFAULT_BUCKETS = 100
# A heatmap is drawn one column per bucket; more than 1,000 columns is more
# than a screen shows and makes the JSON of a 300-variable model ~3 MB.
MAX_BUCKETS = 1000


def bucket_edges(first_step, last_step, buckets):
    """Splits the steps first_step..last_step into at most `buckets` ranges.

    Every range holds at least one step, so fewer buckets come back when the
    run has fewer steps than `buckets`.

    Returns:
      (starts, ends): int64 arrays of inclusive first and last steps.
    """
    first, last = int(first_step), int(last_step)
    span = last - first + 1
    count = max(min(int(buckets), span), 1)
    # Exact in Python ints; every edge lies in first..last + 1, and only the
    # last one (which may be 2**63) is not kept as a start.
    bounds = [first + (index * span) // count for index in range(count + 1)]
    starts = np.array(bounds[:-1], dtype=np.int64)
    ends = np.array([bound - 1 for bound in bounds[1:]], dtype=np.int64)
    return starts, ends


def bucket_max(steps, values, buckets):
    """The largest value per variable in each step bucket.

    Args:
      steps: ascending int array [records].
      values: float array [records, variables]; NaN where a record says
        nothing about a variable (not tracked yet, or undefined).
      buckets: the largest number of buckets wanted.

    Returns:
      (starts, ends, matrix): bucket edges as in `bucket_edges` and a float
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
    matrix = np.full((len(starts), values.shape[1]), np.nan, dtype=values.dtype)
    if values.shape[1]:
        matrix[filled] = np.fmax.reduceat(values, first[filled], axis=0)
    return starts, ends, matrix.T
