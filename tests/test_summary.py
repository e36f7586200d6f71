"""VariableUpdateTracker on real TensorFlow, read back through TensorBoard's loader."""

import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import tensorflow as tf
import keras

import readback
import tb_varupdate
from tb_varupdate.format import metadata as md
from tb_varupdate.writers.tf.tracker import StuckVariableError


def _then(_update, gradients):
    """Lets a one-line update function return its gradients after updating."""
    return gradients


def _train(logdir, variables, steps, update, name="model", **tracker_kwargs):
    """Runs `update(step)` then logs, `steps` times; returns the tracker."""
    tracker = tb_varupdate.VariableUpdateTracker(variables, name=name, **tracker_kwargs)
    writer = tf.summary.create_file_writer(str(logdir))
    with writer.as_default():
        for step in range(steps):
            gradients = update(step)
            tracker.log(step, gradients=gradients)
    writer.close()
    return tracker


def test_seed_rebinding_warns_once_and_variable_never_updates(tmp_path):
    w = tf.Variable(0.0, name="w")
    tracker = tb_varupdate.VariableUpdateTracker([w], on_stuck="ignore")
    writer = tf.summary.create_file_writer(str(tmp_path))
    name = w  # the user's Python name; rebinding it leaves `w` untouched
    with warnings.catch_warnings(record=True) as caught, writer.as_default():
        warnings.simplefilter("always")
        for step in range(5):
            with tf.GradientTape() as tape:
                loss = name  # as in the article: the loss is the variable itself
            grad = tape.gradient(loss, name)
            tracker.log(step, gradients=[(grad, name)])
            name = name - 0.1 * grad
    writer.close()
    messages = [str(c.message) for c in caught if "tb_varupdate" in str(c.message)]
    assert len(messages) == 1 and "rebound with `v = v - lr * g`" in messages[0] and "v.assign_sub" in messages[0]
    row = readback.verdicts(tmp_path)["w"]
    assert (row["status"], row["gradient"], row["changed_steps"]) == ("never_updated", "present", 0)
    assert float(w.numpy()) == 0.0


def test_counters_and_gradient_states_are_exact(tmp_path):
    trained, disconnected, zero = tf.Variable([1.0, 2.0], name="trained"), tf.Variable(1.0, name="disconnected"), tf.Variable(3.0, name="zero")

    def update(step):
        trained.assign_sub([0.1, 0.1])
        return [tf.constant([1.0, 1.0]), None, tf.constant(0.0)]

    _train(tmp_path, [trained, disconnected, zero], 30, update, on_stuck="ignore")
    rows = readback.verdicts(tmp_path)
    assert {name: (r["status"], r["gradient"]) for name, r in rows.items()} == {
        "trained": ("updating", "present"),
        "disconnected": ("never_updated", "missing"),
        "zero": ("never_updated", "zero"),
    }
    trained_row = rows["trained"]
    assert (trained_row["first_update_step"], trained_row["last_update_step"], trained_row["changed_steps"]) == (0, 29, 30)
    assert trained_row["gradient_steps"] == {"present": 30, "none": 0, "zero": 0, "non_finite": 0, "not_given": 0}
    assert trained_row["gradient_l2"] == pytest.approx(np.sqrt(2.0))
    assert trained_row["latest_delta_l2"] == pytest.approx(0.1 * np.sqrt(2.0), rel=1e-4)


def test_user_tf_function_is_traced_once(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")], name="net")
    optimizer = keras.optimizers.SGD(0.1)
    tracker = tb_varupdate.VariableUpdateTracker(model)
    writer = tf.summary.create_file_writer(str(tmp_path))
    x, y = tf.ones([8, 3]), tf.zeros([8, 2])

    @tf.function
    def train_step(step):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - y))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        tracker.log(step, gradients=zip(grads, model.trainable_variables))

    with writer.as_default():
        for step in range(15):
            train_step(tf.constant(step, tf.int64))
    writer.close()
    assert train_step.experimental_get_tracing_count() == 1
    rows = readback.verdicts(tmp_path)
    assert {r["status"] for r in rows.values()} == {"updating"}
    assert rows["net/dense/kernel"]["changed_steps"] == 15


def test_eager_logging_reuses_one_trace(tmp_path):
    v = tf.Variable(tf.ones([4]))
    tracker = _train(tmp_path, [v], 12, lambda step: _then(v.assign_sub(tf.ones([4]) * 0.01), [tf.ones([4])]))
    assert len(tracker._traces) == 1


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_low_and_high_precision_floats_are_measured(tmp_path, dtype):
    v = tf.Variable(tf.ones([3], dtype=dtype), name="v")
    _train(tmp_path, [v], 6, lambda step: _then(v.assign_add(tf.fill([3], tf.constant(0.25, dtype))), None))
    row = readback.verdicts(tmp_path)["v"]
    assert (row["status"], row["dtype"], row["changed_steps"]) == ("updating", dtype, 6)
    assert row["latest_delta_l2"] == pytest.approx(0.25 * np.sqrt(3), rel=1e-3)


def test_bfloat16_update_below_its_precision_never_changes(tmp_path):
    v = tf.Variable(tf.ones([3], dtype="bfloat16"), name="v")
    _train(tmp_path, [v], 12, lambda step: _then(v.assign_sub(tf.fill([3], tf.constant(1e-4, "bfloat16"))), [tf.ones([3], "bfloat16")]), on_stuck="ignore")
    row = readback.verdicts(tmp_path)["v"]
    assert (row["status"], row["gradient"]) == ("never_updated", "present")
    # A custom loop's record holds no learning rate: the rounding is named, and what the record cannot tell.
    assert "stored in bfloat16" in row["diagnosis"] and "holds no learning rate" in row["diagnosis"]


def test_integer_and_bool_variables_report_changes_without_norms(tmp_path):
    counter, flag = tf.Variable(0, name="counter"), tf.Variable(False, name="flag")
    _train(tmp_path, [counter, flag], 25, lambda step: _then(counter.assign_add(1), None), on_stuck="ignore")
    rows = readback.verdicts(tmp_path)
    assert (rows["counter"]["status"], rows["counter"]["value_l2"], rows["counter"]["max_relative_update"]) == ("updating", None, None)
    assert rows["flag"]["status"] == "never_updated"


def test_sparse_embedding_gradients_count_rows_never_updated(tmp_path):
    table = tf.Variable(tf.ones([10, 4]), name="embedding")
    optimizer = keras.optimizers.SGD(0.5)
    ids = tf.constant([0, 1, 2, 3, 4, 5])

    def update(step):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.gather(table, ids))
        grad = tape.gradient(loss, table)
        assert isinstance(grad, tf.IndexedSlices)
        optimizer.apply_gradients([(grad, table)])
        return [(grad, table)]

    _train(tmp_path, [table], 5, update)
    row = readback.verdicts(tmp_path)["embedding"]
    assert (row["status"], row["gradient"], row["rows_changed"], row["rows_total"]) == ("updating", "present", 6, 10)
    assert "40% of rows (4 of 10) never updated" in row["diagnosis"]


def test_every_n_steps_spans_the_interval(tmp_path):
    v = tf.Variable(0.0, name="v")
    _train(tmp_path, [v], 20, lambda step: _then(v.assign_add(1.0), None), every_n_steps=5)
    logged = readback.records(tmp_path)
    assert [step for step, _ in logged] == [0, 5, 10, 15]
    assert [u.floats[0, md.DELTA_L2] for _, u in logged] == [1.0, 5.0, 5.0, 5.0]
    assert [u.logged for _, u in logged] == [1, 2, 3, 4]


def test_variables_created_later_join_the_record(tmp_path):
    module = tf.Module()
    module.first = tf.Variable(1.0, name="first")

    def update(step):
        if step == 4:
            module.second = tf.Variable(1.0, name="second")
        module.first.assign_add(1.0)
        if step >= 4:
            module.second.assign_add(1.0)

    _train(tmp_path, module, 10, update)
    rows = readback.verdicts(tmp_path)
    assert (rows["first"]["logged_steps"], rows["second"]["logged_steps"]) == (10, 6)
    assert rows["second"]["first_update_step"] == 5  # joined at 4, first change seen at 5
    assert rows["second"]["status"] == "updating"


def test_unbuilt_keras_model_is_tracked_after_its_first_call(tmp_path):
    model = keras.Sequential([keras.layers.Dense(2, name="dense")], name="lazy")
    optimizer = keras.optimizers.SGD(0.1)

    def update(step):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(tf.ones([2, 3])))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return zip(grads, model.trainable_variables)

    _train(tmp_path, model, 5, update)
    assert sorted(readback.verdicts(tmp_path)) == ["lazy/dense/bias", "lazy/dense/kernel"]


def test_a_gradient_of_the_wrong_dtype_is_named_and_recorded_as_not_given(tmp_path):
    v = tf.Variable(1.0, name="v")
    with pytest.warns(UserWarning, match="the gradient given for 'v' has dtype string, expected a float gradient"):
        _train(tmp_path, [v], 3, lambda step: _then(v.assign_add(1.0), [tf.constant("not a gradient")]))
    row = readback.verdicts(tmp_path)["v"]
    assert (row["status"], row["gradient"], row["gradient_steps"]["not_given"]) == ("updating", "not_logged", 3)


def test_misordered_gradient_list_warns_naming_the_pair_and_is_not_given(tmp_path):
    kernel, bias = tf.Variable(tf.ones([3, 2]), name="kernel"), tf.Variable(tf.zeros([2]), name="bias")

    def update(step):
        kernel.assign_sub(tf.fill([3, 2], 0.1))
        bias.assign_sub(tf.fill([2], 0.1))
        return [tf.ones([2]), tf.ones([3, 2])]  # bias gradient first: swapped

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _train(tmp_path, [kernel, bias], 4, update, on_stuck="ignore")
    messages = [str(c.message) for c in caught if "tb_varupdate" in str(c.message)]
    assert any("'kernel' has shape (2,), expected (3, 2)" in m and "(gradient, variable) pairs" in m for m in messages)
    rows = readback.verdicts(tmp_path)
    assert {n: (r["status"], r["gradient"]) for n, r in rows.items()} == {
        "kernel": ("updating", "not_logged"), "bias": ("updating", "not_logged")}


def test_layers_built_inside_a_tf_function_are_tracked_from_its_first_step(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Dense(3, name="hidden"), keras.layers.Dense(1, name="out")], name="net")
    optimizer = keras.optimizers.SGD(0.1)
    tracker = tb_varupdate.VariableUpdateTracker(model, on_stuck="ignore")
    x = tf.ones([4, 2])

    @tf.function
    def train_step(step):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - 1.0))  # builds the model in the first trace
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        tracker.log(step, gradients=zip(grads, model.trainable_variables))

    writer = tf.summary.create_file_writer(str(tmp_path))
    with warnings.catch_warnings(record=True) as caught, writer.as_default():
        warnings.simplefilter("always")
        for step in range(5):
            train_step(tf.constant(step, tf.int64))
    writer.close()
    assert not [str(c.message) for c in caught if "tb_varupdate" in str(c.message)]
    rows = readback.verdicts(tmp_path)
    assert sorted(rows) == ["net/hidden/bias", "net/hidden/kernel", "net/out/bias", "net/out/kernel"]
    # Gradients from the first step; the first change is not measured (its snapshot starts after it).
    assert {(r["status"], r["changed_steps"], r["first_update_step"], r["gradient_steps"]["present"])
            for r in rows.values()} == {("updating", 4, 1, 5)}


def test_a_failure_inside_logging_is_a_warning_and_training_goes_on(tmp_path):
    v = tf.Variable(1.0, name="v")
    # A sparse gradient whose values are not the variable's rows fails inside the measurement.
    bad = tf.IndexedSlices(tf.ones([2, 5]), tf.constant([0, 1]), tf.constant([2, 5]))
    with pytest.warns(UserWarning, match="tb_varupdate"):
        _train(tmp_path, [v], 3, lambda step: [bad])
    assert float(v.numpy()) == 1.0


def test_on_stuck_raise_stops_at_the_configured_step(tmp_path):
    v = tf.Variable(1.0, name="stuck_weight")
    with pytest.raises(StuckVariableError, match=r"(?s)after 3 records \(step 2\).*stuck_weight: never_updated"):
        _train(tmp_path, [v], 10, lambda step: [tf.constant(1.0)], on_stuck="raise", stuck_after=3)


def test_on_stuck_warns_once_not_every_step(tmp_path):
    v = tf.Variable(1.0, name="stuck_weight")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _train(tmp_path, [v], 30, lambda step: None, stuck_after=5)
    stuck = [c for c in caught if "are stuck" in str(c.message)]
    assert len(stuck) == 1 and "stuck_weight" in str(stuck[0].message)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="a/b"), "without '/'"),
        (dict(every_n_steps=0), "every_n_steps must be an int >= 1"),
        (dict(on_stuck="explode"), "on_stuck must be one of"),
    ],
)
def test_bad_arguments_say_what_was_expected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tb_varupdate.VariableUpdateTracker([tf.Variable(1.0)], **kwargs)


def test_duplicate_tf_variable_names_are_made_unique():
    tracker = tb_varupdate.VariableUpdateTracker([tf.Variable(1.0, name="w"), tf.Variable(1.0, name="w")])
    assert tracker.variable_names == ["w", "w_1"]


def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    script = textwrap.dedent(
        """
        import sys, tensorflow as tf, keras
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import tb_varupdate
        sys.path.insert(0, sys.argv[2])
        import readback
        keras.utils.set_random_seed(0)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="used"), keras.layers.Dense(1, name="head")])
            unused = tf.Variable(1.0, name="unused")
            optimizer = keras.optimizers.SGD(0.01)
        tracker = tb_varupdate.VariableUpdateTracker(model.trainable_variables + [unused], on_stuck="ignore")
        x = tf.ones([8, 3])
        data = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors((x, tf.zeros([8, 1]))).repeat(12).unbatch().batch(8))

        @tf.function
        def step(batch, index):
            def replica(batch):
                xs, ys = batch
                with tf.GradientTape() as tape:
                    loss = tf.reduce_mean(tf.square(model(xs) - ys)) + 0.0 * tf.stop_gradient(unused)
                variables = model.trainable_variables + [unused]
                grads = tape.gradient(loss, variables)
                optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
                return grads
            grads = strategy.run(replica, args=(batch,))
            tracker.log(index, gradients=[strategy.experimental_local_results(g)[0] if g is not None else None for g in grads])

        writer = tf.summary.create_file_writer(sys.argv[1])
        with writer.as_default():
            for index, batch in enumerate(data):
                step(batch, tf.constant(index, tf.int64))
        writer.close()
        rows = readback.verdicts(sys.argv[1])
        print(sorted((name, row["status"], row["gradient"]) for name, row in rows.items()))
        """
    )
    import os

    tests_dir = os.path.dirname(__file__)
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path), tests_dir], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == str(sorted([
        ("sequential/head/bias", "updating", "present"),
        ("sequential/head/kernel", "updating", "present"),
        ("sequential/used/bias", "updating", "present"),
        ("sequential/used/kernel", "updating", "present"),
        ("unused", "never_updated", "missing"),
    ]))


def test_large_finite_values_are_not_reported_non_finite(tmp_path):
    # Squares of 3e19 overflow float32; the norms must still be finite.
    big, w = tf.Variable([3e19, 0.0], name="big"), tf.Variable([1.0, 2.0], name="w")

    def update(step):
        big.assign_add([1e18, 1.0])
        w.assign_sub([0.1, 0.1])
        return [tf.constant([1.0, 1.0]), tf.constant([3e19, 0.0])]

    _train(tmp_path, [big, w], 3, update, on_stuck="ignore")
    rows = readback.verdicts(tmp_path)
    assert (rows["big"]["status"], rows["big"]["first_non_finite_step"]) == ("updating", None)
    assert rows["big"]["value_l2"] == pytest.approx(3.3e19, rel=1e-3)
    assert (rows["w"]["gradient"], rows["w"]["gradient_l2"]) == ("present", pytest.approx(3e19, rel=1e-6))


def test_tf_ops_fold_equals_the_numpy_reference():
    from tb_varupdate.writers import counters
    from tb_varupdate.writers.tf.ops import TFOps

    rng = np.random.default_rng(0)
    states = {}
    for name, ops, convert in (("numpy", counters.NumPyOps(), np.asarray), ("tf", TFOps(), tf.constant)):
        state, floats = counters.initial_state(3)
        header = counters.initial_header()
        state, floats, header = convert(state), convert(floats), convert(header)
        rng = np.random.default_rng(0)
        for step in (0, 1, 1, 3):
            measured = counters.Measured(
                delta_l2=convert(rng.choice([0.0, 0.5, np.nan], 3)), value_l2=convert(rng.uniform(0, 2, 3)),
                grad_l2=convert(rng.choice([md.GRAD_NONE, md.GRAD_NOT_GIVEN, 0.0, 1.5, np.inf], 3)),
                changed=convert(rng.uniform(size=3) > 0.5), finite=convert(rng.uniform(size=3) > 0.2),
                rows_changed=convert(np.asarray([-1, 2, -1], np.int64)),
            )
            state, floats, header, record = counters.fold(
                ops, state, floats, header, measured, convert(np.int64(step)), convert(np.asarray([True, False, True])),
                convert(np.asarray([True, True, False])), names_hash=5, every_n=1, writer_id=77)
        states[name] = np.asarray(record)
    np.testing.assert_array_equal(states["tf"], states["numpy"])


def test_records_carry_the_trackers_random_writer_id_and_trainable_now(tmp_path):
    frozen = tf.Variable(1.0, name="frozen", trainable=False)
    trained = tf.Variable(1.0, name="trained")
    tracker = _train(tmp_path, [frozen, trained], 3, lambda step: _then(trained.assign_add(1.0), None))
    other = tb_varupdate.VariableUpdateTracker([frozen])
    assert 0 < tracker.writer_id < 2**31 and tracker.writer_id != other.writer_id
    records = readback.records(tmp_path)
    assert {u.writer_id for _, u in records} == {tracker.writer_id}
    assert records[-1][1].trainable.tolist() == [False, True]


def test_keras_layer_frozen_mid_run_shows_in_the_record(tmp_path):
    layer = keras.layers.Dense(1, name="dense")
    layer.build((None, 2))
    tracker = tb_varupdate.VariableUpdateTracker(layer, on_stuck="ignore")
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        for step in range(4):
            layer.trainable = step < 2
            tracker.log(step)
    writer.close()
    assert [u.trainable.tolist() for _, u in readback.records(tmp_path)] == [[True, True]] * 2 + [[False, False]] * 2


def test_steps_that_do_not_grow_warn_once_naming_the_fix(tmp_path):
    v = tf.Variable(0.0, name="v")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # The custom-loop guide's pattern: the step restarts every epoch.
        tracker = tb_varupdate.VariableUpdateTracker([v], on_stuck="ignore")
        writer = tf.summary.create_file_writer(str(tmp_path))
        with writer.as_default():
            for epoch in range(3):
                for step in range(3):
                    v.assign_add(1.0)
                    tracker.log(step)
        writer.close()
    messages = [str(c.message) for c in caught if "did not grow" in str(c.message)]
    assert len(messages) == 1 and "step=optimizer.iterations or a global counter" in messages[0]
    newest = readback.records(tmp_path)[-1][1]
    assert (newest.logged, newest.step_regressions) == (9, 2)
    assert readback.verdicts(tmp_path)["v"]["changed_steps"] == 9


def test_log_without_a_default_writer_warns_once_naming_as_default():
    v = tf.Variable(0.0, name="v")
    tracker = tb_varupdate.VariableUpdateTracker([v], on_stuck="ignore")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(3):
            tracker.log(step)
    messages = [str(c.message) for c in caught if "tb_varupdate" in str(c.message)]
    assert len(messages) == 1 and "no default summary writer" in messages[0] and "writer.as_default()" in messages[0]


def test_gradients_that_match_no_variable_are_reported_after_stuck_after_records(tmp_path):
    v, elsewhere = tf.Variable(0.0, name="v"), tf.Variable(0.0, name="elsewhere")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _train(tmp_path, [v], 4, lambda step: _then(v.assign_add(1.0), [(tf.constant(1.0), elsewhere)]), stuck_after=3)
    messages = [str(c.message) for c in caught if "none matched a tracked variable" in str(c.message)]
    assert len(messages) == 1


def test_a_list_of_models_is_tracked():
    discriminator = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="d")], name="disc")
    generator = keras.Sequential([keras.Input((1,)), keras.layers.Dense(2, name="g")], name="gen")
    tracker = tb_varupdate.VariableUpdateTracker([discriminator, generator])
    assert tracker.variable_names == ["disc/d/kernel", "disc/d/bias", "gen/g/kernel", "gen/g/bias"]


def test_a_variable_with_no_element_is_recorded_as_unchanged_and_is_not_stuck(tmp_path):
    empty, w = tf.Variable(tf.zeros([0, 3]), name="empty"), tf.Variable(1.0, name="w")

    def update(step):
        w.assign_add(1.0)
        return [tf.zeros([0, 3]), tf.constant(1.0)]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _train(tmp_path, [empty, w], 4, update, on_stuck="raise", stuck_after=3)
    assert not [c for c in caught if "tb_varupdate" in str(c.message)]
    row = readback.verdicts(tmp_path)["empty"]
    # What the record holds: the shape with its 0, no change, an all-zero (empty) gradient.
    assert (row["shape"], row["changed_steps"], row["gradient_steps"]["zero"], row["value_l2"]) == ([0, 3], 0, 4, 0.0)


@pytest.mark.parametrize("flat_ok", [True, False])
def test_trace_cache_calls_with_and_without_the_private_flat_call(flat_ok):
    from tb_varupdate.writers.tf import trace as _tf_trace

    concrete = tf.function(lambda a, b: a + b).get_concrete_function(tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.float32))
    assert float(_tf_trace.call_flat(concrete, [tf.constant(1.0), tf.constant(2.0)], flat_ok=flat_ok)) == 3.0
    assert _tf_trace.FLAT_CALL_OK  # TF 2.21: the private call is the one in use
