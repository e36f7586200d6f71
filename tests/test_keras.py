"""VariableUpdateCallback during real Keras 3 `model.fit`."""

import numpy as np
import pytest
import keras
import tensorflow as tf

import readback
from tb_varupdate.errors import StuckVariableError
from tb_varupdate.keras import VariableUpdateCallback


def _model():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    frozen = keras.layers.Dense(8, name="frozen")
    frozen.trainable = False
    merged = keras.layers.Add()([hidden, frozen(inputs)])
    normed = keras.layers.BatchNormalization(name="bn")(merged)
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(normed), name="net")
    # A branch that is built but never used on the path to the loss.
    model.branch = keras.layers.Dense(3, name="branch")
    model.branch.build((None, 4))
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    return model


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 4)).astype("float32")
    return x, x[:, :1] * 2.0


def test_fit_records_verdicts_and_gradients_without_model_changes(tmp_path):
    model = _model()
    x, y = _data()
    model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[VariableUpdateCallback(tmp_path, on_stuck="ignore")])
    rows = readback.verdicts(tmp_path, run="train")
    assert {name: (r["status"], r["gradient"], r["trainable"]) for name, r in rows.items()} == {
        "hidden/kernel": ("updating", "present", True),
        "hidden/bias": ("updating", "present", True),
        "frozen/kernel": ("never_updated", "not_logged", False),
        "frozen/bias": ("never_updated", "not_logged", False),
        "bn/gamma": ("updating", "present", True),
        "bn/beta": ("updating", "present", True),
        "bn/moving_mean": ("updating", "not_logged", False),
        "bn/moving_variance": ("updating", "not_logged", False),
        "out/kernel": ("updating", "present", True),
        "out/bias": ("updating", "present", True),
        "branch/kernel": ("never_updated", "missing", True),
        "branch/bias": ("never_updated", "missing", True),
    }
    assert rows["hidden/kernel"]["logged_steps"] == 8  # 2 epochs x 4 batches
    assert not rows["bn/moving_mean"]["problem"] and not rows["frozen/kernel"]["problem"]


def test_optimizer_is_restored_and_a_second_fit_continues_the_steps(tmp_path):
    model = _model()
    x, y = _data()
    callback = VariableUpdateCallback(tmp_path, on_stuck="ignore")
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[callback])
    assert "apply" not in vars(model.optimizer)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)  # without the callback: writes nothing
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[callback])
    steps = [step for step, _ in readback.records(tmp_path / "train")]
    assert steps == [0, 1, 2, 3, 8, 9, 10, 11]


def test_update_freq_epoch_logs_once_per_epoch_without_gradients(tmp_path):
    model = _model()
    x, y = _data()
    model.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=[VariableUpdateCallback(tmp_path, update_freq="epoch", on_stuck="ignore")])
    assert [step for step, _ in readback.records(tmp_path / "train")] == [4, 8, 12]
    assert readback.verdicts(tmp_path, run="train")["hidden/kernel"]["gradient"] == "not_logged"


@pytest.mark.parametrize("update_freq", ["step", 0, True])
def test_bad_update_freq_is_rejected(update_freq):
    with pytest.raises(ValueError, match="update_freq must be"):
        VariableUpdateCallback("logs", update_freq=update_freq)


def test_loss_scaled_gradients_are_logged_unscaled(tmp_path):
    model = _model()
    model.compile(optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.01)), loss="mse")
    x, y = _data()
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[VariableUpdateCallback(tmp_path, on_stuck="ignore")])
    rows = readback.verdicts(tmp_path, run="train")
    # The initial loss scale is 2**15: scaled norms would be in the thousands.
    assert 0 < rows["out/bias"]["gradient_l2"] < 100
    assert rows["out/kernel"]["status"] == "updating"


def test_jit_compile_is_restored_after_fit(tmp_path):
    model = _model()
    model.jit_compile = True
    x, y = _data()
    with pytest.warns(UserWarning, match="turning off jit_compile for this fit"):
        model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[VariableUpdateCallback(tmp_path, on_stuck="ignore")])
    assert model.jit_compile is True
    assert readback.verdicts(tmp_path, run="train")["hidden/kernel"]["logged_steps"] == 4


class _FailsOnLargeInputs(keras.layers.Layer):
    def call(self, inputs):
        tf.debugging.assert_less(tf.reduce_max(inputs), 100.0, message="input too large")
        return inputs


def test_everything_is_restored_when_fit_fails(tmp_path):
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((4,)), _FailsOnLargeInputs(), keras.layers.Dense(1, name="out")])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    x, y = _data()
    x[64:] = 1e6  # the third batch fails inside the train function
    original = model.train_function
    with pytest.raises(tf.errors.InvalidArgumentError, match="input too large"):
        model.fit(x, y, epochs=1, batch_size=32, shuffle=False, verbose=0,
                  callbacks=[VariableUpdateCallback(tmp_path, on_stuck="ignore")])
    assert "apply" not in vars(model.optimizer) and "train_step" not in vars(model)
    assert model.train_function is not original or original is None
    written = len(readback.records(tmp_path / "train"))
    assert written >= 2
    model.fit(x[:64], y[:64], epochs=1, batch_size=32, verbose=0)  # trains on, without logging
    assert len(readback.records(tmp_path / "train")) == written


def test_on_stuck_raise_stops_fit_with_the_stuck_error(tmp_path):
    model = _model()
    x, y = _data()
    with pytest.raises(StuckVariableError, match=r"(?s)after 2 records.*branch/kernel: never_updated"):
        model.fit(x, y, epochs=2, batch_size=32, verbose=0,
                  callbacks=[VariableUpdateCallback(tmp_path, on_stuck="raise", stuck_after=2)])
    assert "apply" not in vars(model.optimizer)


def test_allow_accepts_a_stuck_variable_in_the_training_time_check(tmp_path):
    model = _model()
    x, y = _data()
    callback = VariableUpdateCallback(tmp_path, on_stuck="raise", stuck_after=2, allow=["^branch/"])
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[callback])
    # The fit went on past the check with a stuck variable: the one allowed.
    assert len(readback.records(tmp_path / "train")) > 2
    rows = readback.verdicts(tmp_path, run="train")
    stuck = sorted(name for name, row in rows.items() if row["problem"])
    assert stuck == ["branch/bias", "branch/kernel"]


def test_a_fit_that_records_nothing_says_why(tmp_path):
    model = _model()
    x, y = _data()
    with pytest.warns(UserWarning, match="wrote no records in this fit: no train step ran"):
        model.fit(x[:0], y[:0], epochs=1, batch_size=32, verbose=0, callbacks=[VariableUpdateCallback(tmp_path)])
