"""Tests of tb_varupdate.reader.buckets: heatmap step buckets."""

import numpy as np
import pytest

from tb_varupdate.reader import buckets as buckets_lib

NAN = float("nan")


@pytest.mark.parametrize(
    "first, last, buckets, starts, ends",
    [
        (0, 9, 5, [0, 2, 4, 6, 8], [1, 3, 5, 7, 9]),
        (0, 9, 3, [0, 3, 6], [2, 5, 9]),
        (10, 12, 100, [10, 11, 12], [10, 11, 12]),  # fewer steps than buckets
        (5, 5, 4, [5], [5]),
    ],
)
def test_bucket_edges(first, last, buckets, starts, ends):
    got_starts, got_ends = buckets_lib.bucket_edges(first, last, buckets)
    assert got_starts.tolist() == starts
    assert got_ends.tolist() == ends


def test_bucket_max_takes_largest_and_leaves_empty_buckets_nan():
    steps = [0, 1, 5, 9]
    values = [[0.1, NAN], [0.3, NAN], [NAN, NAN], [0.0, 0.2]]
    starts, ends, matrix = buckets_lib.bucket_max(steps, values, 3)
    assert starts.tolist() == [0, 3, 6]
    assert ends.tolist() == [2, 5, 9]
    np.testing.assert_array_equal(matrix, [[0.3, NAN, 0.0], [NAN, NAN, 0.2]])


def test_bucket_max_of_no_records_is_empty():
    starts, ends, matrix = buckets_lib.bucket_max([], np.zeros((0, 2)), 10)
    assert starts.tolist() == [] and ends.tolist() == []
    assert matrix.shape == (2, 0)


def test_bucket_max_matches_a_loop_over_buckets():
    # Gaps between steps leave buckets empty, NaNs leave cells without a value.
    rng = np.random.default_rng(0)
    steps = np.sort(rng.choice(np.arange(1000), size=60, replace=False))
    values = rng.random((60, 3)).astype(np.float32)
    values[rng.random((60, 3)) < 0.3] = np.nan
    starts, ends, matrix = buckets_lib.bucket_max(steps, values, 50)
    expected = np.full((3, len(starts)), np.nan)
    for bucket, (start, end) in enumerate(zip(starts, ends)):
        inside = values[(steps >= start) & (steps <= end)]
        for column in range(3):
            kept = inside[:, column][~np.isnan(inside[:, column])]
            if len(kept):
                expected[column, bucket] = kept.max()
    assert np.isnan(expected).any(axis=1).all()  # the case under test occurs
    np.testing.assert_array_equal(matrix, expected)
