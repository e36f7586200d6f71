"""The record format: create, encode and parse, without TensorFlow."""

import json

import numpy as np
import pytest

from tensorboard.compat.proto import summary_pb2

from tb_varupdate.format import metadata as md

from tb_varupdate.format import variables as vr
from tb_varupdate.writers import reference

ENTRIES = [
    {"name": "dense/kernel", "shape": [3, 2], "dtype": "float32", "trainable": True, "joined": 0},
    {"name": "step", "shape": [], "dtype": "int64", "trainable": False, "joined": 4},
]


def _record(rows=2, logged=7):
    ints = np.zeros((rows, md.NUM_COLUMNS), np.int64)
    floats = np.zeros((rows, md.NUM_COLUMNS), np.float64)
    ints[:, md.CHANGED_STEPS] = [5, 0]
    ints[:, md.FIRST_UPDATE_STEP] = [1, -1]
    floats[:, md.DELTA_L2] = [0.5, np.nan]
    floats[:, md.GRAD_L2] = [md.GRAD_NONE, np.inf]
    return reference.updates_record({"logged": logged, "names_hash": 42, "every_n": 3}, ints, floats)


def test_updates_round_trip_keeps_integers_and_float_bits():
    parsed = md.parse_updates(_record())
    assert (parsed.logged, parsed.names_hash, parsed.every_n, parsed.num_variables) == (7, 42, 3, 2)
    assert parsed.ints[:, md.CHANGED_STEPS].tolist() == [5, 0]
    assert parsed.ints[:, md.FIRST_UPDATE_STEP].tolist() == [1, -1]
    assert parsed.floats[0, md.DELTA_L2] == 0.5 and np.isnan(parsed.floats[1, md.DELTA_L2])
    assert md.grad_state(parsed.floats[:, md.GRAD_L2]).tolist() == [md.GRAD_STATE_NONE, md.GRAD_STATE_NON_FINITE]


@pytest.mark.parametrize(
    "array, match",
    [
        (np.zeros((2, md.NUM_COLUMNS), np.float32), "int32"),
        (np.zeros((2, 3), np.int32), "shape"),
        (np.zeros((md.NUM_COLUMNS,), np.int32), "shape"),
        (np.zeros((0, md.NUM_COLUMNS), np.int32), "header"),
    ],
)
def test_parse_updates_rejects_wrong_dtype_and_shape(array, match):
    with pytest.raises(md.FormatError, match=match):
        md.parse_updates(array)


def test_variables_round_trip_and_hash_covers_trainable_flag():
    data, digest = vr.encode_variables(ENTRIES)
    entries, parsed_digest = vr.parse_variables(np.array(data, dtype=object))
    assert entries == ENTRIES and parsed_digest == digest
    frozen = [dict(ENTRIES[0], trainable=False), ENTRIES[1]]
    assert vr.names_hash(frozen) != digest


@pytest.mark.parametrize("value", [b"not json", b'{"variables": []}', b'{"names_hash": 1, "variables": [{"name": "x"}]}'])
def test_parse_variables_rejects_malformed_documents(value):
    with pytest.raises(md.FormatError, match="variables record"):
        vr.parse_variables(value)


def test_summary_metadata_is_a_tensor_class_of_this_plugin():
    meta = md.create_summary_metadata(md.KIND_UPDATES)
    assert meta.plugin_data.plugin_name == "varupdate"
    # Without DATA_CLASS_TENSOR the loaders serve none of the records.
    assert meta.data_class == summary_pb2.DATA_CLASS_TENSOR
    assert md.parse_plugin_content(meta.plugin_data.content) == md.KIND_UPDATES


@pytest.mark.parametrize(
    "content, match",
    [
        (json.dumps({"version": 99, "kind": "updates"}).encode(), "version 99 is not supported.*upgrade tb-varupdate"),
        (json.dumps({"version": 1, "kind": "updates"}).encode(), "version 1 is not supported.*older tb-varupdate: train again"),
        (json.dumps({"version": md.FORMAT_VERSION, "kind": "other"}).encode(), "unknown record kind"),
        (b"\x00garbage", "not a varupdate header"),
    ],
)
def test_parse_plugin_content_rejects_unknown_versions_and_kinds(content, match):
    with pytest.raises(md.FormatError, match=match):
        md.parse_plugin_content(content)


def test_tags_of_a_tracker():
    assert (md.updates_tag("model"), md.variables_tag("model")) == ("varupdate/model", "varupdate/model/variables")
