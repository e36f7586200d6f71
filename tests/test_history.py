"""Tests of tb_varupdate.reader.history: sample counts, kept records as columns."""

import numpy as np
import pytest

from tb_varupdate.format import metadata as md
from tb_varupdate.reader import history

NAN = float("nan")


def test_downsample_count_maps_unset_and_keep_all():
    assert history.downsample_count(None) == history.DEFAULT_SAMPLES
    assert history.downsample_count(0) == history.KEEP_ALL_SAMPLES
    assert history.downsample_count(7) == 7


def test_downsample_count_rejects_negative():
    with pytest.raises(ValueError, match="samples=-1"):
        history.downsample_count(-1)


def test_history_count_caps_wide_trackers_by_bytes():
    assert history.history_count(None, 300) == history.DEFAULT_SAMPLES
    assert history.history_count(5, 300) == 5
    record_bytes = 10001 * md.NUM_COLUMNS * 4
    assert history.history_count(None, 10000) == history.MAX_HISTORY_BYTES // record_bytes
    assert history.history_count(0, 10000) == history.MAX_HISTORY_BYTES // record_bytes
    assert history.history_count(None, 10**9) == 1
