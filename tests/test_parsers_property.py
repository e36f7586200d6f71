"""Property tests: the record parsers raise only `FormatError`, whatever they are fed.

Hypothesis draws arbitrary tensors (dtypes, shapes, values), arbitrary JSON
and arbitrary bytes; a parser either returns or raises the documented
`metadata.FormatError` (never MemoryError, OverflowError, RecursionError...).
Bounded: a fixed number of examples each, no deadline on a busy machine.
"""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tb_varupdate.format import metadata as md
from tb_varupdate.format import variables as vr

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DTYPES = st.one_of(
    hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(), hnp.floating_dtypes(), hnp.boolean_dtypes(),
    hnp.byte_string_dtypes(max_len=8), hnp.unicode_string_dtypes(max_len=8), hnp.complex_number_dtypes(),
)
# Shapes near the real ones (2-D with 14 or 15 columns) and anything else small.
SHAPES = st.one_of(
    st.tuples(st.integers(0, 4), st.sampled_from([md.NUM_COLUMNS, md.NUM_COLUMNS_V2])),
    hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
)
TENSORS = st.builds(lambda dtype, shape: (dtype, shape), DTYPES, SHAPES).flatmap(
    lambda pair: hnp.arrays(pair[0], pair[1])
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
ENTRY_VALUES = st.one_of(JSON, st.integers(-(2**70), 2**70), st.just(2**50))
ENTRIES = st.lists(
    st.fixed_dictionaries(
        {"name": ENTRY_VALUES | st.text(), "shape": ENTRY_VALUES | st.lists(st.integers(-3, 5) | st.none()),
         "dtype": ENTRY_VALUES | st.text(), "trainable": ENTRY_VALUES, "joined": ENTRY_VALUES},
        optional={"role": ENTRY_VALUES | st.sampled_from(vr.ROLES)},
    ),
    max_size=3,
)
DOCUMENTS = st.one_of(
    JSON,
    st.fixed_dictionaries({"names_hash": ENTRY_VALUES, "variables": ENTRIES | JSON},
                          optional={"writer_id": ENTRY_VALUES}),
)
SCALARS = st.one_of(
    st.integers(-(2**64), 2**64), st.just(2**50), st.just(300_000_000), st.floats(), st.booleans(),
    st.binary(max_size=40), st.text(max_size=40), st.none(), st.lists(st.integers(), max_size=3),
)


def _only_format_errors(parse, value):
    try:
        parse(value)
    except md.FormatError:
        pass


@SETTINGS
@given(TENSORS)
def test_parse_updates_raises_only_format_error_on_any_tensor(array):
    _only_format_errors(md.parse_updates, array)


@SETTINGS
@given(st.one_of(TENSORS, SCALARS))
def test_parse_variables_raises_only_format_error_on_any_tensor_or_scalar(value):
    _only_format_errors(vr.parse_variables, value)
    if not isinstance(value, np.ndarray):
        _only_format_errors(vr.parse_variables, np.array(value, dtype=object))


@SETTINGS
@given(DOCUMENTS)
def test_parse_variables_raises_only_format_error_on_any_json(document):
    text = json.dumps(document)
    _only_format_errors(vr.parse_variables, text.encode("utf-8"))
    _only_format_errors(vr.parse_variables, np.array(text.encode("utf-8"), dtype=object))


@SETTINGS
@given(st.one_of(DOCUMENTS.map(lambda doc: json.dumps(doc).encode("utf-8")), st.binary(max_size=60), SCALARS))
def test_parse_plugin_content_raises_only_format_error(content):
    _only_format_errors(md.parse_plugin_content, content)


@pytest.mark.parametrize("depth", [10_000, 100_000])
def test_deeply_nested_json_is_a_format_error(depth):
    nested = b"[" * depth + b"]" * depth
    with pytest.raises(md.FormatError):
        vr.parse_variables(nested)
    with pytest.raises(md.FormatError):
        md.parse_plugin_content(nested)


@pytest.mark.parametrize("value", [2**50, 300_000_000, np.int64(2**50), np.array(2**50), 1.5])
def test_a_numeric_variables_record_is_a_format_error_without_allocating(value):
    with pytest.raises(md.FormatError, match="must be a scalar string"):
        vr.parse_variables(value)


@pytest.mark.parametrize(
    "entry_change, match",
    [
        ({"name": ["a", "b"]}, "a name is not a string"),
        ({"shape": "2"}, "a shape is not a list"),
        ({"joined": 1.5}, "joined is not a record count"),
        ({"role": "other"}, "role is not one of"),
        ({"zero_init": 1}, "zero_init is not a boolean"),
    ],
)
def test_parse_variables_checks_entry_types(entry_change, match):
    entry = dict({"name": "x", "shape": [2], "dtype": "float32", "trainable": True, "joined": 0}, **entry_change)
    with pytest.raises(md.FormatError, match=match):
        vr.parse_variables(json.dumps({"names_hash": 1, "variables": [entry]}))


def test_parse_variables_record_gives_the_writer_id():
    data, digest = vr.encode_variables([{"name": "x", "shape": [], "dtype": "float32", "trainable": True,
                                         "joined": 0}], writer_id=77)
    parsed = vr.parse_variables_record(data)
    assert (parsed.names_hash, parsed.writer_id) == (digest, 77)
    assert vr.parse_variables_record(json.dumps({"names_hash": 1, "variables": []})).writer_id is None


# Issue #21: byte damage at random offsets of a real event file, read the way `check` reads.

import os  # noqa: E402
import shutil  # noqa: E402

from tb_varupdate import cli  # noqa: E402
from tb_varupdate.reader import eventfiles  # noqa: E402

import logdirs  # noqa: E402


@pytest.fixture(scope="module")
def event_file(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("source") / "run"
    logdirs.write_records_tb(run_dir, logdirs.hand_records())
    (name,) = os.listdir(run_dir)
    with open(run_dir / name, "rb") as handle:
        return name, handle.read()


DAMAGE = st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=3)


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(damage=DAMAGE, cut=st.one_of(st.none(), st.floats(0.05, 1)))
def test_byte_damage_anywhere_is_named_never_raised_and_never_healthy(tmp_path_factory, event_file, damage, cut):
    name, original = event_file
    data = bytearray(original)
    offsets = sorted({int(position * len(data)) for position, _ in damage})
    for offset, (_, xor) in zip(offsets, damage):
        data[offset] ^= xor
    if cut is not None:
        data = data[: max(int(cut * len(data)), offsets[-1] + 1)]
    root = tmp_path_factory.mktemp("damaged")
    os.makedirs(root / "run")
    with open(root / "run" / name, "wb") as handle:
        handle.write(bytes(data))
    reason = eventfiles.check_event_file(str(root / "run" / name), newest=True)
    if len(offsets) == 1:
        # CRC-32C catches any one damaged byte of a complete record; a byte
        # of the cut tail is not read yet, and that is allowed.
        # Where the cut tail begins, from the undamaged framing.
        tail = max(start for start, _ in _record_starts(original[: len(data)]))
        assert reason is not None or offsets[0] >= tail
    try:
        report = cli.check(str(root))
    except cli.CheckError:
        return  # nothing readable at all, said as a usage error (exit 2)
    code = cli.exit_code(report)
    if reason is not None:
        assert code in (cli.EXIT_UNREADABLE, cli.EXIT_PARTLY_UNREADABLE)
        assert any(reason in item["reason"] for item in report["unreadable"])
    shutil.rmtree(root, ignore_errors=True)


def _record_starts(data):
    """(offset, length) of each record whose frame is complete; the cut tail starts after the last."""
    import struct

    out, offset = [], 0
    while offset + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[offset:offset + 8])
        end = offset + 12 + length + 4
        if end > len(data):
            break
        out.append((offset, length))
        offset = end
    # The first byte past the complete records is where the tail begins.
    return out + [(offset, 0)]
