"""Issue #22 on Keras: the cause a `model.fit` user reads, checked on real training against the weights that changed."""

import numpy as np
import pytest

import keras
import tensorflow as tf

import readback
from tb_varupdate.format import metadata as md
from tb_varupdate.format import variables as vr
from tb_varupdate.keras import VariableUpdateCallback


def _rows(logdir):
    return readback.verdicts(logdir, run="train", tag=md.updates_tag("model"))


def _snapshot(model):
    return {v.path: np.array(v.numpy(), dtype=np.float64) for v in model.variables}


def _changed(before, model):
    return {v.path: float(np.mean(np.array(v.numpy(), dtype=np.float64) != before[v.path])) for v in model.variables}


@pytest.fixture
def bfloat16_policy():
    keras.config.set_dtype_policy("bfloat16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy("float32")


def _regressor(learning_rate):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16, activation="relu", name="hidden"),
        keras.layers.Dense(1, bias_initializer=keras.initializers.Constant(4.0), name="out"),
    ], name="regressor")
    model.compile(keras.optimizers.SGD(learning_rate), "mse")
    return model


def _fit(model, logdir, **kwargs):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 8)).astype("float32"), rng.normal(size=(64, 1)).astype("float32")
    model.fit(x, y, batch_size=16, epochs=3, verbose=0,
              callbacks=[VariableUpdateCallback(str(logdir), on_stuck="ignore", **kwargs)])


def test_bfloat16_variables_whose_updates_round_away_are_named(tmp_path, bfloat16_policy):
    model = _regressor(1e-6)
    before = _snapshot(model)
    _fit(model, tmp_path)
    changed, rows = _changed(before, model), _rows(tmp_path)
    assert changed["regressor/out/bias"] == 0.0
    for name, fraction in changed.items():
        row = rows[name]
        assert (row["changed_steps"] > 0) == (fraction > 0), name
        if row["status"] == "never_updated":
            text = row["diagnosis"]
            assert "rounded away" in text and "bfloat16" in text and "learning rate 1.0e-06" in text
            assert "mixed_bfloat16" in text and "autocast" not in text
            assert "not passed to the optimizer" not in text and "rebound" not in text
    assert rows["regressor/out/bias"]["status"] == "never_updated" and rows["regressor/out/bias"]["problem"]


def test_bfloat16_with_a_learning_rate_that_moves_it_is_healthy(tmp_path, bfloat16_policy):
    model = _regressor(0.05)
    before = _snapshot(model)
    _fit(model, tmp_path)
    assert all(fraction > 0.5 for fraction in _changed(before, model).values())
    rows = _rows(tmp_path)
    assert not any(row["problem"] or row["severity"] for row in rows.values())


def test_entries_say_tensorflow_via_fit_with_the_learning_rate(tmp_path):
    model = _regressor(0.01)
    _fit(model, tmp_path)
    entries = readback.entries(tmp_path / "train")
    assert {(e["framework"], e["via"], e.get("lr_slot")) for e in entries} == {(vr.FRAMEWORK_TF, vr.VIA_FIT, 0)}
    (_, newest), = readback.records(tmp_path / "train")[-1:]
    assert newest.learning_rates[0] == pytest.approx(0.01)


class _CycleGAN(keras.Model):
    """keras-io's CycleGAN in miniature: two generators trained by their own optimizers.

    With `swap=True` the bug: F's gradients are applied to G's variables (the
    shapes match), so F never trains.
    """

    def __init__(self, swap):
        super().__init__()
        self.gen_G = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="g")], name="generator_G")
        self.gen_F = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="f")], name="generator_F")
        self.swap = swap

    def compile(self, g_optimizer, f_optimizer):
        super().compile()
        self.g_optimizer, self.f_optimizer = g_optimizer, f_optimizer

    def train_step(self, data):
        real_x, real_y = data
        with tf.GradientTape(persistent=True) as tape:
            fake_y, fake_x = self.gen_G(real_x), self.gen_F(real_y)
            cycled_x, cycled_y = self.gen_F(fake_y), self.gen_G(fake_x)
            loss_G = tf.reduce_mean(tf.abs(real_y - fake_y)) + tf.reduce_mean(tf.abs(real_y - cycled_y))
            loss_F = tf.reduce_mean(tf.abs(real_x - fake_x)) + tf.reduce_mean(tf.abs(real_x - cycled_x))
        grads_G = tape.gradient(loss_G, self.gen_G.trainable_variables)
        grads_F = tape.gradient(loss_F, self.gen_F.trainable_variables)
        self.g_optimizer.apply_gradients(zip(grads_G, self.gen_G.trainable_variables))
        targets = self.gen_G.trainable_variables if self.swap else self.gen_F.trainable_variables
        self.f_optimizer.apply_gradients(zip(grads_F, targets))
        return {"G_loss": loss_G, "F_loss": loss_F}


@pytest.mark.parametrize("swap", [False, True])
def test_cyclegan_gradients_applied_to_the_wrong_generator_get_fit_advice(tmp_path, swap):
    keras.utils.set_random_seed(0)
    model = _CycleGAN(swap)
    model.compile(keras.optimizers.Adam(1e-2), keras.optimizers.Adam(1e-2))
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(64, 4)).astype("float32"), rng.normal(size=(64, 4)).astype("float32"))
    before = {id(v): v.numpy().copy() for v in model.trainable_variables}
    model.fit(tf.data.Dataset.from_tensor_slices(data).batch(16), epochs=3, verbose=0,
              callbacks=[VariableUpdateCallback(str(tmp_path), on_stuck="ignore")])
    moved = {id(v) for v in model.trainable_variables if not np.array_equal(v.numpy(), before[id(v)])}
    rows = _rows(tmp_path)
    f_vars = {id(v) for v in model.gen_F.trainable_variables}
    assert moved == (set(before) - f_vars if swap else set(before))
    problems = [row for row in rows.values() if row["problem"]]
    if not swap:
        assert not problems
        return
    assert len(problems) == 2
    for row in problems:
        assert row["status"] == "never_updated" and row["gradient"] == "not_logged"
        text = row["diagnosis"]
        assert "log()" not in text and "gradients=" not in text
        assert "apply_gradients" in text and "another model's variables" in text


def _transfer_model(jit_compile=False):
    """keras-io's transfer-learning guide in miniature: a frozen base, a new head."""
    keras.utils.set_random_seed(0)
    base = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                             keras.layers.BatchNormalization(), keras.layers.Dense(8, activation="relu")], name="base")
    base.trainable = False
    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(base(inputs, training=False)))
    model.compile(keras.optimizers.Adam(1e-2), "mse", jit_compile=jit_compile)
    return base, model


def _fine_tune(logdir, recompile, jit_compile=False):
    base, model = _transfer_model(jit_compile)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 8)).astype("float32"), rng.normal(size=(64, 1)).astype("float32")
    callbacks = [VariableUpdateCallback(str(logdir), on_stuck="ignore")] if logdir else []
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False, callbacks=callbacks)
    base.trainable = True
    if recompile:
        model.compile(keras.optimizers.Adam(1e-4), "mse")
    before = _snapshot(model)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False, callbacks=callbacks)
    return model, _changed(before, model)


@pytest.mark.parametrize("recompile, jit_compile", [(False, False), (True, False), (False, True)])
def test_fine_tuning_without_recompile_is_a_problem_on_the_base(tmp_path, recompile, jit_compile):
    """With `jit_compile=True` the second fit used to fail in the optimizer ("Unknown variable")."""
    from tb_varupdate import cli  # pylint: disable=import-outside-toplevel

    with pytest.warns(UserWarning) if not recompile or jit_compile else _no_warning():
        model, changed = _fine_tune(tmp_path, recompile, jit_compile)
    plain, plain_changed = _fine_tune(None, recompile, jit_compile)
    # Training runs as without the callback (exactly; under XLA the callback's step is not XLA-compiled).
    for mine, theirs in zip(model.variables, plain.variables):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-5 if jit_compile else 0, atol=0)
    assert list(changed.values()) == list(plain_changed.values())  # paths differ: Keras numbers new layers
    rows = _rows(tmp_path)
    base_rows = {name: row for name, row in rows.items() if name.startswith("base/") and row["trainable"]}
    assert len(base_rows) == 6
    for name, row in base_rows.items():
        assert (row["changed_steps"] > 0) == (changed[name] > 0) == recompile, name
        if not recompile:
            assert row["status"] == "never_updated" and row["problem"]
            assert "call `model.compile(...)` again after changing `trainable`" in row["diagnosis"]
            assert "custom loop" not in row["diagnosis"]
    assert cli.main(["check", str(tmp_path)]) == (0 if recompile else 1)


def _xception_fine_tune(logdir):
    """keras-io's transfer-learning guide, end to end (Xception, no ImageNet download): unfreeze, no recompile."""
    keras.utils.set_random_seed(0)
    base = keras.applications.Xception(weights=None, input_shape=(71, 71, 3), include_top=False)
    base.trainable = False
    inputs = keras.Input((71, 71, 3))
    x = keras.layers.Rescaling(scale=1 / 127.5, offset=-1)(inputs)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    model.compile(keras.optimizers.Adam(), keras.losses.BinaryCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(8, 71, 71, 3)).astype("float32")
    labels = rng.integers(0, 2, size=(8, 1)).astype("float32")
    callbacks = [VariableUpdateCallback(str(logdir), on_stuck="ignore")] if logdir else []
    model.fit(images, labels, batch_size=4, epochs=1, verbose=0, shuffle=False, callbacks=callbacks)
    base.trainable = True  # the guide's next line, `model.compile(...)`, forgotten
    before = _snapshot(model)
    model.fit(images, labels, batch_size=4, epochs=1, verbose=0, shuffle=False, callbacks=callbacks)
    return base, model, _changed(before, model)


def test_the_keras_io_fine_tune_without_recompile_is_a_problem_on_its_154_base_variables(tmp_path):
    from tb_varupdate import cli  # pylint: disable=import-outside-toplevel

    with pytest.warns(UserWarning, match="compile"):
        base, model, changed = _xception_fine_tune(tmp_path)
    _, plain, plain_changed = _xception_fine_tune(None)
    for mine, theirs in zip(model.variables, plain.variables):  # training runs as without the callback
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    assert list(changed.values()) == list(plain_changed.values())
    assert len(base.trainable_weights) == 154
    rows = _rows(tmp_path)
    # Named by the model they belong to: Keras' own paths drop it ("block1_conv1/kernel").
    base_paths = {"xception/" + variable.path for variable in base.trainable_weights}
    base_rows = {name: row for name, row in rows.items() if name in base_paths}
    assert not [name for name in rows if name.startswith("block")]
    assert len(base_rows) == 154 and all(row["trainable"] for row in base_rows.values())
    for name, row in base_rows.items():
        assert changed[name[len("xception/"):]] == 0 and row["status"] == "never_updated" and row["problem"], name
        assert "call `model.compile(...)` again after changing `trainable`" in row["diagnosis"], name
    assert cli.main(["check", str(tmp_path)]) == 1


class _no_warning:  # pylint: disable=invalid-name
    def __enter__(self):
        import warnings  # pylint: disable=import-outside-toplevel

        self._catch = warnings.catch_warnings(record=True)
        self.caught = self._catch.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)
        assert not [w for w in self.caught if "tb_varupdate" in str(w.message)], [str(w.message) for w in self.caught]
        return False


class _Distiller(keras.Model):
    """keras-io's knowledge distillation in miniature: the teacher stays `trainable=True`, no optimizer holds it.

    With `bug=True` the student's output layer has its gradient taken but
    left out of `apply_gradients`: that one is a problem, the teacher is not.
    """

    def __init__(self, student, teacher, bug):
        super().__init__()
        self.teacher, self.student, self.bug = teacher, student, bug

    def compile(self, optimizer):  # pylint: disable=arguments-differ
        super().compile(optimizer=optimizer)

    def train_step(self, data):
        x, y = data
        teacher_predictions = self.teacher(x, training=False)
        with tf.GradientTape() as tape:
            student_predictions = self.student(x, training=True)
            loss = tf.reduce_mean(tf.square(student_predictions - y)) + tf.reduce_mean(
                tf.square(student_predictions - teacher_predictions))
        variables = self.student.trainable_variables
        grads = tape.gradient(loss, variables)
        pairs = list(zip(grads, variables))
        if self.bug:
            pairs = pairs[:-2]  # the output layer's kernel and bias dropped
        self.optimizer.apply_gradients(pairs)
        return {"loss": loss}


@pytest.mark.parametrize("bug", [False, True])
def test_a_distillation_teacher_is_told_from_a_forgotten_layer_by_evidence(tmp_path, bug):
    from tb_varupdate import cli  # pylint: disable=import-outside-toplevel

    keras.utils.set_random_seed(0)
    teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)],
                               name="teacher")
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)],
                               name="student")
    distiller = _Distiller(student, teacher, bug)
    distiller.compile(keras.optimizers.Adam(1e-2))
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(64, 4)).astype("float32"), rng.normal(size=(64, 1)).astype("float32"))
    before = {id(v): v.numpy().copy() for v in distiller.variables}
    distiller.fit(*data, batch_size=16, epochs=3, verbose=0,
                  callbacks=[VariableUpdateCallback(str(tmp_path), on_stuck="ignore")])
    moved = {id(v) for v in distiller.variables if not np.array_equal(v.numpy(), before[id(v)])}
    rows = _rows(tmp_path)
    assert not any(id(v) in moved for v in teacher.variables)
    teacher_rows = [row for name, row in rows.items() if name.startswith("teacher/")]
    assert len(teacher_rows) == 4
    for row in teacher_rows:
        assert row["status"] == "never_updated" and row["severity"] == 1 and not row["problem"]
        assert "fixed model" in row["diagnosis"] and "trainable=False" in row["diagnosis"]
    forgotten = student.layers[-1].variables
    assert all((id(v) in moved) == (not bug) for v in forgotten)
    problems = {name for name, row in rows.items() if row["problem"]}
    assert problems == ({v.path for v in forgotten} if bug else set())
    assert cli.main(["check", str(tmp_path)]) == (1 if bug else 0)


def _functional(name):
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(4)(keras.layers.Dense(4, activation="relu")(inputs)), name=name)


class _DDIM(keras.Model):
    """keras-io's DDIM in miniature: a network trained by the optimizer, an EMA copy updated by `assign`.

    With `rebind`, the EMA update is written `ema_weight = ...`: the classic
    bug that rebinds a Python name and leaves the variable as it was.
    """

    def __init__(self, rebind=False):
        super().__init__()
        self.rebind = rebind
        self.network = _functional("unet")
        self.ema_network = keras.models.clone_model(self.network)

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(self.network(x) - y))
        grads = tape.gradient(loss, self.network.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.network.trainable_variables))
        for weight, ema_weight in zip(self.network.weights, self.ema_network.weights):
            if self.rebind:
                ema_weight = 0.99 * ema_weight + 0.01 * weight  # noqa: F841 (the bug)
            else:
                ema_weight.assign(0.99 * ema_weight + 0.01 * weight)
        return {"loss": loss}


def test_names_say_which_model_a_variable_belongs_to(tmp_path):
    """CycleGAN's two functional generators and DDIM's EMA copy: Keras paths alone repeat or hide the model."""
    keras.utils.set_random_seed(0)
    model = _CycleGAN(swap=True)
    model.gen_G, model.gen_F = _functional("generator_G"), _functional("generator_F")
    model.compile(keras.optimizers.Adam(1e-2), keras.optimizers.Adam(1e-2))
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(32, 4)).astype("float32"), rng.normal(size=(32, 4)).astype("float32"))
    model.fit(*data, batch_size=16, epochs=1, verbose=0,
              callbacks=[VariableUpdateCallback(str(tmp_path / "cyclegan"), on_stuck="ignore")])
    rows = readback.verdicts(tmp_path / "cyclegan", run="train", tag=md.updates_tag("model"))
    assert {name.split("/")[0] for name in rows} == {"generator_G", "generator_F"}
    assert {name.split("/")[0] for name, row in rows.items() if row["problem"]} == {"generator_F"}

    ddim = _DDIM()
    ddim.compile(keras.optimizers.Adam(1e-2))
    ddim.fit(*data, batch_size=16, epochs=1, verbose=0,
             callbacks=[VariableUpdateCallback(str(tmp_path / "ddim"), on_stuck="ignore")])
    rows = readback.verdicts(tmp_path / "ddim", run="train", tag=md.updates_tag("model"))
    assert {name.split("/")[0] for name in rows} == {"network", "ema_network"}
    assert not any(name.endswith("_1") for name in rows)
    assert all(row["status"] == "updating" for row in rows.values())


@pytest.mark.parametrize("rebind", [False, True])
def test_an_ema_copy_whose_update_rebinds_a_name_is_told_how_assign_differs(tmp_path, rebind):
    """DDIM's EMA network: healthy, or never moved because its update rebinds a Python name."""
    from tb_varupdate import cli  # pylint: disable=import-outside-toplevel

    keras.utils.set_random_seed(0)
    ddim = _DDIM(rebind)
    ddim.compile(keras.optimizers.Adam(1e-2))
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(32, 4)).astype("float32"), rng.normal(size=(32, 4)).astype("float32"))
    before = {v.path: v.numpy().copy() for v in ddim.ema_network.weights}
    ddim.fit(*data, batch_size=16, epochs=2, verbose=0,
             callbacks=[VariableUpdateCallback(str(tmp_path), on_stuck="ignore")])
    # The EMA network moved in every weight, or (the bug) in none.
    assert [not np.array_equal(before[v.path], v.numpy()) for v in ddim.ema_network.weights] == [not rebind] * 4
    rows = _rows(tmp_path)
    ema_rows = {name: row for name, row in rows.items() if name.startswith("ema_network/")}
    assert len(ema_rows) == 4
    for row in ema_rows.values():
        if rebind:
            assert row["status"] == "never_updated" and row["severity"] == 1 and not row["problem"]
            assert "`w.assign(...)` changes the variable" in row["diagnosis"]
        else:
            assert row["status"] == "updating"
    assert all(row["status"] == "updating" for name, row in rows.items() if name.startswith("network/"))
    assert cli.main(["check", str(tmp_path)]) == 0  # a warning: by the record alone, a fixed model


class _SimCLR(keras.Model):
    """keras-io's SimCLR in miniature: a subclassed encoder built lazily in the first train step."""

    def __init__(self):
        super().__init__()
        self.encoder = keras.Sequential([keras.layers.Dense(8, activation="relu"), keras.layers.Dense(4)], name="encoder")
        self.head = keras.layers.Dense(1, name="head")

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(self.head(self.encoder(x)) - y))
        variables = self.encoder.trainable_variables + self.head.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return {"loss": loss}


def test_a_second_fit_of_a_lazily_built_model_gives_no_recompile_false_alarm(tmp_path):
    import warnings  # pylint: disable=import-outside-toplevel

    keras.utils.set_random_seed(0)
    model = _SimCLR()
    model.compile(keras.optimizers.Adam(1e-2))
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(32, 4)).astype("float32"), rng.normal(size=(32, 1)).astype("float32"))
    callback = VariableUpdateCallback(str(tmp_path), on_stuck="ignore")
    model.fit(*data, batch_size=16, epochs=1, verbose=0, callbacks=[callback])
    before = {id(v): v.numpy().copy() for v in model.trainable_variables}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(*data, batch_size=16, epochs=1, verbose=0, callbacks=[callback])
    assert not [w for w in caught if "compile" in str(w.message)], [str(w.message) for w in caught]
    # Keras did train the encoder in the second fit.
    assert all(not np.array_equal(v.numpy(), before[id(v)]) for v in model.encoder.trainable_variables)
    assert all(row["status"] == "updating" for row in _rows(tmp_path).values())


_NMT = r'''
import sys
import numpy as np
import keras
import tb_varupdate as tbv

keras.utils.set_random_seed(0)
vocab, length, width = 50, 8, 16
source, target = keras.Input((length,), dtype="int64"), keras.Input((length,), dtype="int64")
encoded = keras.layers.Embedding(vocab, width, mask_zero=True)(source)
encoded = keras.layers.LayerNormalization()(encoded + keras.layers.MultiHeadAttention(2, width)(encoded, encoded))
decoded = keras.layers.Embedding(vocab, width, mask_zero=True)(target)
decoded = keras.layers.LayerNormalization()(
    decoded + keras.layers.MultiHeadAttention(2, width)(decoded, decoded, use_causal_mask=True))
mixed = keras.layers.MultiHeadAttention(2, width)(decoded, encoded)
logits = keras.layers.Dense(vocab)(keras.layers.Dropout(0.1)(keras.layers.Dense(32, activation="relu")(mixed)))
model = keras.Model([source, target], logits)
model.compile("rmsprop", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
rng = np.random.default_rng(0)
data = [rng.integers(1, vocab, (64, length)) for _ in range(3)]
model.fit(data[:2], data[2], batch_size=16, epochs=2, verbose=0,
          callbacks=[tbv.keras.VariableUpdateCallback(sys.argv[1])])
'''


def test_a_transformer_fit_prints_no_grappler_errors(tmp_path):
    """keras-io's NMT transformer in miniature: sparse embedding gradients gave grappler's topological sort errors."""
    import os  # pylint: disable=import-outside-toplevel
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-c", _NMT, str(tmp_path)], capture_output=True, text=True, env=env,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "topological sort failed" not in result.stderr and "varupdate/Reshape" not in result.stderr
    rows = _rows(tmp_path)
    embeddings = [row for name, row in rows.items() if "embedding" in name]
    assert len(embeddings) == 2 and all(row["rows_changed"] and row["status"] == "updating" for row in embeddings)


def test_a_stall_after_the_last_check_is_warned_when_fit_ends(tmp_path):
    """35 records: the checks at 10 and 20 come before the stall shows; the end of the fit checks the last one."""
    import warnings  # pylint: disable=import-outside-toplevel

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, name="out")], name="regressor")
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([10], [0.05, 0.0])
    model.compile(keras.optimizers.SGD(schedule), "mse")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(35 * 8, 4)).astype("float32"), rng.normal(size=(35 * 8, 1)).astype("float32")
    before = _snapshot(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False,
                  callbacks=[VariableUpdateCallback(str(tmp_path))])
    (message,) = [str(w.message) for w in caught if "are stuck" in str(w.message)]
    assert "after 35 records" in message and "learning rate is 0" in message
    assert all(changed > 0 for changed in _changed(before, model).values())
    assert {row["status"] for row in _rows(tmp_path).values()} == {"stalled"}
