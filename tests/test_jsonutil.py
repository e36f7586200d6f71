"""Tests of tb_varupdate.reader.jsonutil: null for NaN and Inf, compact bytes, rounding."""

import math

import numpy as np

from tb_varupdate.reader import jsonutil

NAN = float("nan")


def test_json_safe_turns_non_finite_into_none():
    value = {"a": [1.0, NAN, float("inf")], "b": (np.float32("-inf"), np.int64(3)), "c": "x"}
    assert jsonutil.json_safe(value) == {"a": [1.0, None, None], "b": [None, 3], "c": "x"}


def test_round_significant():
    values = np.array([np.float32(0.1), 123456.789, -0.000123456, 0.0, NAN, float("inf")])
    result = jsonutil.round_significant(values, 4)
    assert result[:4].tolist() == [0.1, 123500.0, -0.0001235, 0.0]
    assert math.isnan(result[4]) and result[5] == float("inf")
    assert jsonutil.round_significant([np.float32(0.4)], 7).tolist() == [0.4]


def test_encode_json_is_compact_with_non_finite_as_null():
    assert jsonutil.encode_json({"a": [1.5, 2], "b": "x"}) == b'{"a":[1.5,2],"b":"x"}'
    assert jsonutil.encode_json({"a": [NAN, float("inf")], "b": np.int64(3)}) == b'{"a":[null,null],"b":3}'
    assert jsonutil.encode_json({"name": "\u00e9"}) == b'{"name":"\\u00e9"}'


def test_nan_to_none():
    assert jsonutil.nan_to_none(np.array([[0.5, NAN], [float("-inf"), 0.0]])) == [[0.5, None], [None, 0.0]]
