"""Counter semantics (`counters.fold`) over NumPy: the reference every writer matches."""

import numpy as np

from tb_varupdate.format import metadata as md
from tb_varupdate.verdicts import analysis
from tb_varupdate.writers import counters

OPS = counters.NumPyOps()


def _fold_all(measurements, steps, trainable=(True,), sized=(True,)):
    """Folds a list of per-record Measured dicts; returns the parsed last record and the header state."""
    state, floats = counters.initial_state(len(trainable))
    header = counters.initial_header()
    record = None
    for values, step in zip(measurements, steps):
        measured = counters.Measured(**{key: np.asarray(value) for key, value in values.items()})
        state, floats, header, record = counters.fold(
            OPS, state, floats, header, measured, np.int64(step), np.asarray(trainable), np.asarray(sized),
            names_hash=7, every_n=1, writer_id=12345,
        )
    return md.parse_updates(record), header


def _measured(delta, value=1.0, grad=0.5, finite=True, rows=-1):
    return dict(delta_l2=[delta], value_l2=[value], grad_l2=[grad], changed=[delta > 0], finite=[finite],
                rows_changed=[rows])


def test_counters_and_header_of_three_records():
    parsed, header = _fold_all([_measured(0.0), _measured(0.1), _measured(0.0, grad=md.GRAD_NONE)], [0, 1, 2])
    assert parsed.version == 3 and (parsed.logged, parsed.names_hash, parsed.every_n, parsed.writer_id) == (3, 7, 1, 12345)
    col = parsed.ints[0]
    assert (col[md.CHANGED_STEPS], col[md.FIRST_UPDATE_STEP], col[md.LAST_UPDATE_STEP], col[md.LOGS_AT_LAST_UPDATE]) == (1, 1, 1, 2)
    assert (col[md.GRAD_PRESENT_STEPS], col[md.GRAD_NONE_STEPS], col[md.TRAINABLE]) == (2, 1, 1)
    assert parsed.step_regressions == 0 and parsed.logs_at_last_finite_grads == 3
    assert np.isclose(parsed.floats[0, md.MAX_RELATIVE_UPDATE], 0.1)
    assert list(header) == [3, 2, 0, 3]


def test_steps_that_do_not_grow_are_counted():
    parsed, _ = _fold_all([_measured(0.1)] * 4, [0, 1, 1, 0])
    assert parsed.step_regressions == 2


def test_non_finite_gradient_run_is_measured_in_records():
    inf = float("inf")
    parsed, _ = _fold_all([_measured(0.1), _measured(0.0, grad=inf), _measured(0.0, grad=inf)], [1, 1, 1])
    assert parsed.logged - parsed.logs_at_last_finite_grads == 2


def test_zero_initialised_variable_has_no_relative_size_for_its_first_change():
    # 0 -> 1e-8 -> 2e-8...: the first change is from norm 0 and has no relative
    # size; the later ones are tiny against the learning rate, as they should be.
    values = [0.0, 1.0, 1.0 + 1e-7, 1.0 + 2e-7]
    records = [_measured(0.0, value=0.0)] + [
        _measured(abs(values[i] - values[i - 1]), value=values[i]) for i in range(1, len(values))
    ]
    parsed, _ = _fold_all(records, range(len(records)))
    assert 0 < parsed.floats[0, md.MAX_RELATIVE_UPDATE] < analysis.TINY_RELATIVE_UPDATE


def test_unsized_variables_write_nan_relative_update():
    parsed, _ = _fold_all([_measured(0.1)] * 3, range(3), sized=(False,))
    assert np.isnan(parsed.floats[0, md.MAX_RELATIVE_UPDATE])


def test_trainable_flag_is_this_records():
    parsed, _ = _fold_all([_measured(0.1)], [0], trainable=(False,))
    assert parsed.trainable.tolist() == [False]


def test_counters_saturate_in_the_int32_record():
    parsed, _ = _fold_all([_measured(0.1)], [2**40])
    assert parsed.ints[0, md.LAST_UPDATE_STEP] == counters.INT32_MAX


def test_negative_steps_of_a_resumed_run_are_kept_as_steps():
    # A run resumed with an offset can log steps below 0: "none yet" is not a step.
    ops = counters.NumPyOps()
    state, floats = counters.initial_state(2)
    header = counters.initial_header()
    for step, changed, finite in ((-30, (True, False), (True, True)), (-20, (False, False), (True, False)),
                                  (-10, (True, False), (True, False))):
        measured = counters.Measured(
            delta_l2=np.array([1.0, 0.0]), value_l2=np.array([1.0, np.nan if not finite[1] else 1.0]),
            grad_l2=np.array([1.0, 1.0]), changed=np.array(changed), finite=np.array(finite),
            rows_changed=np.array([-1, -1]))
        state, floats, header, record = counters.fold(
            ops, state, floats, header, measured, np.int64(step), np.array([True, True]), np.array([True, True]),
            7, 1, 12345)
    updates = md.parse_updates(record)
    assert updates.ints[0, md.FIRST_UPDATE_STEP] == -30 and updates.ints[0, md.LAST_UPDATE_STEP] == -10
    assert updates.ints[1, md.FIRST_UPDATE_STEP] == -20  # the first non-finite value is a change
    assert updates.ints[1, md.FIRST_NON_FINITE_STEP] == -20 and updates.ints[0, md.FIRST_NON_FINITE_STEP] == -1
