"""measure.Layout on real variables: packed and single paths agree with NumPy."""

import numpy as np
import pytest
import tensorflow as tf

import readback
import tb_varupdate
from tb_varupdate.format import metadata as md
from tb_varupdate.writers.tf import measure

PACKED = measure.PACK_MAX_ELEMENTS  # largest packed size
SINGLE = measure.PACK_MAX_ELEMENTS + 1  # smallest size measured on its own


def _measure(layout, grads, kinds, track_rows=False):
    return layout.measure(grads, kinds, track_rows).numpy()


@pytest.mark.parametrize("size", [1, 7, PACKED, SINGLE])
@pytest.mark.parametrize(
    "increment",
    [0.0, 1e-30, 0.5, np.nan],
    ids=["unchanged", "underflowing", "normal", "nan"],
)
def test_delta_value_and_change_match_numpy(size, increment):
    start = np.linspace(-1, 1, size, dtype=np.float32)
    start[0] = 0.0  # the element that changes, so 1e-30 is representable after the change
    variable = tf.Variable(start)
    layout = measure.Layout()
    layout.add([variable])
    changed = start.copy()
    changed[0] += np.float32(increment)
    variable.assign(changed)
    row = _measure(layout, [None], [measure.NOT_GIVEN])[0]
    delta = changed.astype(np.float64) - start
    if np.isnan(increment):
        assert np.isnan(row[measure.DELTA_L2]) and row[measure.FINITE] == 0 and row[measure.CHANGED] == 1
        return
    assert row[measure.CHANGED] == (increment != 0)
    assert row[measure.FINITE] == 1
    assert row[measure.DELTA_L2] == pytest.approx(np.linalg.norm(delta), rel=1e-5, abs=0 if increment else 1e-45)
    assert row[measure.VALUE_L2] == pytest.approx(np.linalg.norm(changed.astype(np.float64)), rel=1e-6)
    assert row[measure.GRAD_L2] == md.GRAD_NOT_GIVEN
    # The snapshot moved on: the next record sees no change.
    assert _measure(layout, [None], [measure.NOT_GIVEN])[0][measure.CHANGED] == 0


@pytest.mark.parametrize("size", [3, SINGLE])
@pytest.mark.parametrize(
    "gradient, expected",
    [
        (0.0, 0.0),
        (1e-30, "tiny"),  # squares underflow in float32, yet it is not zero
        (2.0, "norm"),
        (np.inf, np.inf),
    ],
    ids=["zero", "underflowing", "normal", "inf"],
)
def test_gradient_norms_and_states(size, gradient, expected):
    variable = tf.Variable(tf.zeros([size]))
    layout = measure.Layout()
    layout.add([variable])
    grad = np.zeros([size], np.float32)
    grad[0] = gradient
    got = _measure(layout, [tf.constant(grad)], [measure.DENSE])[0][measure.GRAD_L2]
    if expected == "tiny":
        assert 0 < got < 1e-20
    elif expected == "norm":
        assert got == pytest.approx(2.0)
    else:
        assert got == expected


def test_rows_come_back_in_variable_order_across_groups():
    sizes = [5, SINGLE, 5, 3, SINGLE, 3]
    variables = [tf.Variable(tf.fill([n], float(i + 1))) for i, n in enumerate(sizes)]
    layout = measure.Layout()
    layout.add(variables)
    assert len(layout.groups) == 4  # two singles, a pack of the 5s and one of the 3s
    got = _measure(layout, [None, None, tf.ones([5]), None, None, None], [measure.NOT_GIVEN, measure.NONE, measure.DENSE] + [measure.NOT_GIVEN] * 3)
    expected_value = [np.sqrt(n) * (i + 1) for i, n in enumerate(sizes)]
    np.testing.assert_allclose(got[:, measure.VALUE_L2], expected_value, rtol=1e-6)
    np.testing.assert_array_equal(got[:3, measure.GRAD_L2], [md.GRAD_NOT_GIVEN, md.GRAD_NONE, np.sqrt(5)])


def test_sparse_rows_are_counted_in_packed_and_single_variables():
    small, large = tf.Variable(tf.zeros([10, 4])), tf.Variable(tf.zeros([SINGLE, 2]))
    layout = measure.Layout()
    layout.add([small, large])
    for variable in (small, large):
        variable.scatter_add(tf.IndexedSlices(tf.ones([2, variable.shape[1]]), tf.constant([1, 3])))
    grads = [tf.IndexedSlices(tf.ones([2, v.shape[1]]), tf.constant([1, 3]), tf.constant(v.shape)) for v in (small, large)]
    got = _measure(layout, grads, [measure.SPARSE] * 2, track_rows=True)
    np.testing.assert_array_equal(got[:, measure.ROWS_CHANGED], [2, 2])
    np.testing.assert_allclose(got[:, measure.GRAD_L2], [np.sqrt(8), 2.0])


@pytest.mark.parametrize("size", [4, SINGLE])
def test_checksum_mode_keeps_no_copy_and_sees_the_smallest_change(size):
    variable = tf.Variable(tf.ones([size]))
    layout = measure.Layout(measure.CHECKSUM)
    layout.add([variable])
    kept = [v for group in layout.groups for v in (getattr(group, "bits", None), getattr(group, "value_sq", None)) if v is not None]
    assert kept and all(v.shape.num_elements() <= 1 for v in kept)
    assert not any(hasattr(group, "snapshot") for group in layout.groups)
    unchanged = _measure(layout, [None], [measure.NOT_GIVEN])[0]
    assert unchanged[measure.CHANGED] == 0 and np.isnan(unchanged[measure.DELTA_L2])
    variable.assign(tf.tensor_scatter_nd_update(variable, [[0]], [np.nextafter(np.float32(1), np.float32(2))]))
    assert _measure(layout, [None], [measure.NOT_GIVEN])[0][measure.CHANGED] == 1


def test_checksum_tracker_gives_verdicts_but_no_sizes(tmp_path):
    trained, frozen = tf.Variable(tf.ones([20])), tf.Variable(tf.ones([20]))
    tracker = tb_varupdate.VariableUpdateTracker([trained, frozen], delta="checksum", on_stuck="ignore")
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        for step in range(5):
            trained.assign_sub(tf.fill([20], 5e-7))  # tiny: `tiny_updates` with exact deltas
            tracker.log(step, gradients=[tf.ones([20]), tf.ones([20])])
    writer.close()
    rows = readback.verdicts(tmp_path)
    assert (rows["Variable"]["status"], rows["Variable"]["changed_steps"]) == ("updating", 5)
    assert rows["Variable"]["max_relative_update"] is None
    assert rows["Variable_1"]["status"] == "never_updated"


def test_a_late_variable_gets_its_own_group_and_others_keep_their_snapshots():
    first = tf.Variable(tf.zeros([3]))
    layout = measure.Layout()
    layout.add([first])
    first.assign_add(tf.ones([3]))
    second = tf.Variable(tf.zeros([3]))
    layout.add([second])
    got = _measure(layout, [None, None], [measure.NOT_GIVEN] * 2)
    np.testing.assert_array_equal(got[:, measure.CHANGED], [1, 0])


def test_unknown_delta_mode_says_what_was_expected():
    with pytest.raises(ValueError, match=r"delta must be one of \('exact', 'checksum'\). Received: delta='copy'"):
        tb_varupdate.VariableUpdateTracker(tf.Variable(1.0), delta="copy")
