"""The Keras callback on the code people write, in the style of keras-io's examples (our own tiny models).

Each pattern trains twice from the same seed, with and without the callback,
and asserts per variable: the verdict matches whether the variable really
changed (weights compared before and after), gradients are recorded where an
optimizer applied them, and both runs end in the same state. Each runs
healthy and with one injected bug.
"""

import warnings

import numpy as np
import pytest
import keras
import tensorflow as tf

import readback
from tb_varupdate.keras import VariableUpdateCallback

BATCH = 16


def _weights(model):
    return {v.path: np.array(v.numpy()) for v in model.variables}


def _fit_twice(build, fit, logdir, build_input=None, **callback_kwargs):
    """Trains `build()` with `fit(model, callbacks)` with and without the callback.

    Returns:
      (rows, changed, caught): verdict rows by variable, {variable: really
      changed}, and the tb_varupdate warnings of the run with the callback.
    """
    keras.utils.set_random_seed(0)
    plain = build()
    fit(plain, [])
    keras.utils.set_random_seed(0)
    model = build()
    before = _weights(model)
    if build_input is not None:
        # A model built by its first call inside fit: its initial values from a twin built the same way.
        keras.utils.set_random_seed(0)
        twin = build()
        twin(build_input)
        before = {v.path: np.array(w.numpy()) for v, w in zip(model.variables, twin.variables, strict=True)} if model.variables else None
        keras.utils.set_random_seed(0)
        model = build()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(model, [VariableUpdateCallback(logdir, on_stuck="ignore", **callback_kwargs)])
    after = _weights(model)
    if before is None:
        before = {v.path: np.array(w.numpy()) for v, w in zip(model.variables, twin.variables, strict=True)}
    # By position: auto-named variables (a SeedGenerator's state) differ in name between the two models.
    for variable, other in zip(model.variables, plain.variables, strict=True):
        np.testing.assert_array_equal(variable.numpy(), other.numpy(), err_msg="%s ends differently with the callback" % variable.path)
    rows = readback.verdicts(logdir, run="train")
    changed = {name: bool(np.any(after[name] != before[name])) for name in before}
    messages = [str(c.message) for c in caught if "tb_varupdate" in str(c.message)]
    return rows, changed, messages


def _assert_verdicts_match_changes(rows, changed):
    assert sorted(rows) == sorted(changed)
    assert {n: r["status"] != "never_updated" for n, r in rows.items()} == changed


def _assert_gradients_where_applied(rows, applied, records):
    """Every record of each trainable variable in `applied` has its gradient; the others none."""
    applied = [name for name in applied if rows[name]["trainable"]]
    for name in rows:
        if name not in applied:
            assert rows[name]["gradient"] == "not_logged", (name, rows[name]["gradient_steps"])
    for name in applied:
        steps = rows[name]["gradient_steps"]
        assert steps["not_given"] == 0 and sum(steps.values()) == records, (name, steps)


# -- a GAN with a custom train_step and two optimizers (dcgan_overriding_train_step.py) -----


class GAN(keras.Model):
    def __init__(self, discriminator, generator, latent_dim, forget_last=False):
        super().__init__(name="gan")
        self.discriminator = discriminator
        self.generator = generator
        self.latent_dim = latent_dim
        self.forget_last = forget_last
        self.seed_generator = keras.random.SeedGenerator(1337)

    def compile(self, d_optimizer, g_optimizer, loss_fn):
        super().compile()
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        self.loss_fn = loss_fn

    def train_step(self, real):
        batch = tf.shape(real)[0]
        z = keras.random.normal((batch, self.latent_dim), seed=self.seed_generator)
        combined = tf.concat([self.generator(z), real], axis=0)
        labels = tf.concat([tf.ones((batch, 1)), tf.zeros((batch, 1))], axis=0)
        with tf.GradientTape() as tape:
            d_loss = self.loss_fn(labels, self.discriminator(combined))
        grads = tape.gradient(d_loss, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_weights))
        z = keras.random.normal((batch, self.latent_dim), seed=self.seed_generator)
        with tf.GradientTape() as tape:
            g_loss = self.loss_fn(tf.zeros((batch, 1)), self.discriminator(self.generator(z)))
        grads = tape.gradient(g_loss, self.generator.trainable_weights)
        pairs = list(zip(grads, self.generator.trainable_weights))
        if self.forget_last:
            pairs = pairs[:-1]  # the bug: the generator's output bias is left out
        self.g_optimizer.apply_gradients(pairs)
        return {"d_loss": d_loss, "g_loss": g_loss}


def _gan_parts():
    discriminator = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu", name="d_hidden"), keras.layers.Dense(1, name="d_out")],
        name="discriminator")
    generator = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(8, activation="relu", name="g_hidden"), keras.layers.Dense(4, name="g_out")],
        name="generator")
    return discriminator, generator


def _real_data():
    return np.random.default_rng(0).normal(size=(64, 4)).astype("float32")


@pytest.mark.parametrize("forget_last", [False, True])
def test_gan_with_two_optimizers_in_a_custom_train_step(tmp_path, forget_last):
    def build():
        gan = GAN(*_gan_parts(), latent_dim=2, forget_last=forget_last)
        gan.compile(keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3), keras.losses.BinaryCrossentropy(from_logits=True))
        return gan

    def fit(model, callbacks):
        model.fit(_real_data(), epochs=2, batch_size=BATCH, shuffle=False, verbose=0, callbacks=callbacks)

    rows, changed, _ = _fit_twice(build, fit, tmp_path)
    _assert_verdicts_match_changes(rows, changed)
    assert rows["generator/g_out/bias"]["status"] == ("never_updated" if forget_last else "updating")
    applied = [n for n in rows if not (forget_last and n == "generator/g_out/bias")]
    _assert_gradients_where_applied(rows, applied, records=8)
    assert all(r["logged_steps"] == 8 for r in rows.values())  # one record per train step, not per apply
    if forget_last:
        assert rows["generator/g_out/bias"]["gradient"] == "not_logged"


# -- a WGAN-GP-style critic with a gradient penalty and several critic steps (wgan_gp.py) ----


class WGAN(keras.Model):
    def __init__(self, critic, generator, critic_steps=2):
        super().__init__(name="wgan")
        self.critic, self.generator, self.critic_steps = critic, generator, critic_steps
        self.seed_generator = keras.random.SeedGenerator(7)

    def compile(self, c_optimizer, g_optimizer):
        super().compile()
        self.c_optimizer, self.g_optimizer = c_optimizer, g_optimizer

    def train_step(self, real):
        batch = tf.shape(real)[0]
        for _ in range(self.critic_steps):
            z = keras.random.normal((batch, 2), seed=self.seed_generator)
            with tf.GradientTape() as tape:
                fake = self.generator(z)
                cost = tf.reduce_mean(self.critic(fake)) - tf.reduce_mean(self.critic(real))
                alpha = keras.random.uniform((batch, 1), seed=self.seed_generator)
                mixed = real + alpha * (fake - real)
                with tf.GradientTape() as penalty_tape:
                    penalty_tape.watch(mixed)
                    scores = self.critic(mixed)
                slopes = tf.norm(penalty_tape.gradient(scores, mixed), axis=1)
                c_loss = cost + 10.0 * tf.reduce_mean(tf.square(slopes - 1.0))
            grads = tape.gradient(c_loss, self.critic.trainable_weights)
            self.c_optimizer.apply_gradients(zip(grads, self.critic.trainable_weights))
        z = keras.random.normal((batch, 2), seed=self.seed_generator)
        with tf.GradientTape() as tape:
            g_loss = -tf.reduce_mean(self.critic(self.generator(z)))
        grads = tape.gradient(g_loss, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_weights))
        return {"c_loss": c_loss, "g_loss": g_loss}


@pytest.mark.parametrize("generator_lr", [1e-3, 0.0])
def test_wgan_gp_critic_with_gradient_penalty(tmp_path, generator_lr):
    def build():
        critic, generator = _gan_parts()
        wgan = WGAN(critic, generator)
        wgan.compile(keras.optimizers.SGD(1e-2), keras.optimizers.SGD(generator_lr))  # the bug: a learning rate of 0
        return wgan

    def fit(model, callbacks):
        model.fit(_real_data(), epochs=1, batch_size=BATCH, shuffle=False, verbose=0, callbacks=callbacks)

    rows, changed, _ = _fit_twice(build, fit, tmp_path)
    _assert_verdicts_match_changes(rows, changed)
    _assert_gradients_where_applied(rows, list(rows), records=4)
    # The critic's loss does not depend on its output bias: its gradient is exactly zero.
    assert (rows["discriminator/d_out/bias"]["status"], rows["discriminator/d_out/bias"]["gradient"]) == ("never_updated", "zero")
    generator_status = {r["status"] for n, r in rows.items() if n.startswith("generator/")}
    assert generator_status == ({"never_updated"} if generator_lr == 0 else {"updating"})


# -- a VAE with a custom train_step on model.optimizer (vae.py) ---------------------------


class VAE(keras.Model):
    def __init__(self, detach_log_var=False):
        super().__init__(name="vae")
        self.hidden = keras.layers.Dense(4, activation="relu", name="enc_hidden")
        self.z_mean = keras.layers.Dense(2, name="z_mean")
        self.z_log_var = keras.layers.Dense(2, name="z_log_var")
        self.decoder = keras.layers.Dense(4, name="decoder")
        self.detach_log_var = detach_log_var
        self.seed_generator = keras.random.SeedGenerator(3)

    def call(self, x):
        h = self.hidden(x)
        return self.decoder(self.z_mean(h))

    def train_step(self, x):
        with tf.GradientTape() as tape:
            h = self.hidden(x)
            z_mean, z_log_var = self.z_mean(h), self.z_log_var(h)
            if self.detach_log_var:
                z_log_var = tf.stop_gradient(z_log_var)  # the bug: the variance head is cut off
            z = z_mean + tf.exp(0.5 * z_log_var) * keras.random.normal(tf.shape(z_mean), seed=self.seed_generator)
            reconstruction = tf.reduce_mean(tf.square(x - self.decoder(z)))
            kl = -0.5 * tf.reduce_mean(1 + z_log_var - tf.square(z_mean) - tf.exp(z_log_var))
            loss = reconstruction + kl
        grads = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
        return {"loss": loss}


@pytest.mark.parametrize("detach_log_var", [False, True])
def test_vae_with_a_custom_train_step(tmp_path, detach_log_var):
    def build():
        vae = VAE(detach_log_var)
        for layer, width in ((vae.hidden, 4), (vae.z_mean, 4), (vae.z_log_var, 4), (vae.decoder, 2)):
            layer.build((None, width))
        vae.compile(optimizer=keras.optimizers.Adam(1e-2))
        return vae

    def fit(model, callbacks):
        model.fit(_real_data(), epochs=1, batch_size=BATCH, shuffle=False, verbose=0, callbacks=callbacks)

    rows, changed, _ = _fit_twice(build, fit, tmp_path)
    _assert_verdicts_match_changes(rows, changed)
    log_var = {r["gradient"] for n, r in rows.items() if n.startswith("z_log_var/")}
    assert log_var == ({"missing"} if detach_log_var else {"present"})


# -- a subclassed model built by its first call inside fit ---------------------------------


class Lazy(keras.Model):
    def __init__(self, dead_branch=False):
        super().__init__(name="lazy")
        self.hidden = keras.layers.Dense(4, activation="relu", name="hidden")
        self.out = keras.layers.Dense(1, name="out")
        self.aux = keras.layers.Dense(4, name="aux")
        self.dead_branch = dead_branch

    def call(self, x):
        h = self.hidden(x)
        # The bug: an auxiliary branch multiplied by 0, so its gradient is exactly zero.
        h = h + (0.0 if self.dead_branch else 1.0) * self.aux(x)
        return self.out(h)


@pytest.mark.parametrize("dead_branch", [False, True])
def test_subclassed_model_built_on_its_first_call(tmp_path, dead_branch):
    def build():
        model = Lazy(dead_branch)
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
        assert not model.variables  # nothing is built before fit
        return model

    def fit(model, callbacks):
        x = _real_data()
        model.fit(x, x[:, :1], epochs=1, batch_size=BATCH, shuffle=False, verbose=0, callbacks=callbacks)

    rows, changed, _ = _fit_twice(build, fit, tmp_path, build_input=_real_data()[:1])
    _assert_verdicts_match_changes(rows, changed)
    _assert_gradients_where_applied(rows, list(rows), records=4)
    assert {r["status"] for n, r in rows.items() if n.startswith("lazy/aux/")} == ({"never_updated"} if dead_branch else {"updating"})


# -- transfer learning: a frozen base, then unfrozen without a new compile() ---------------


def _transfer_model():
    base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, activation="relu", name="base_dense")], name="base")
    base.trainable = False
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(base(inputs, training=False)), name="transfer")
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    return model


@pytest.mark.parametrize("recompile", [False, True])
def test_unfreezing_the_base_without_compile_never_crashes_fit(tmp_path, recompile):
    x = _real_data()

    def fit(model, callbacks):
        model.fit(x, x[:, :1], epochs=1, batch_size=BATCH, shuffle=False, verbose=0, callbacks=callbacks)
        model.get_layer("base").trainable = True
        if recompile:
            model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
        # A new callback object each fit, as `callbacks=[VariableUpdateCallback(...)]` inline does.
        fresh = [VariableUpdateCallback(tmp_path, on_stuck="ignore")] if callbacks else []
        model.fit(x, x[:, :1], epochs=1, batch_size=BATCH, shuffle=False, verbose=0, callbacks=fresh)

    rows, changed, messages = _fit_twice(_transfer_model, fit, tmp_path)
    assert changed["base/base_dense/kernel"] == recompile  # Keras trains the new set only after compile()
    if not recompile:
        assert any("call model.compile(...) again after changing `trainable`" in m for m in messages), messages
    assert any("another writer" in m for m in messages)  # two callbacks, one tag
    # The first callback's series: the frozen base is not trainable and did not change.
    first = readback.verdicts(tmp_path, run="train")
    assert first["head/kernel"]["status"] == "updating"


def test_one_callback_reused_across_freeze_and_unfreeze_records_the_truth(tmp_path):
    x = _real_data()
    model = _transfer_model()
    callback = VariableUpdateCallback(tmp_path, on_stuck="ignore")
    model.fit(x, x[:, :1], epochs=1, batch_size=BATCH, shuffle=False, verbose=0, callbacks=[callback])
    frozen = readback.verdicts(tmp_path, run="train")["base/base_dense/kernel"]
    assert (frozen["trainable"], frozen["status"], frozen["problem"]) == (False, "never_updated", False)
    model.get_layer("base").trainable = True
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    model.fit(x, x[:, :1], epochs=1, batch_size=BATCH, shuffle=False, verbose=0, callbacks=[callback])
    rows = readback.verdicts(tmp_path, run="train")
    assert (rows["base/base_dense/kernel"]["trainable"], rows["base/base_dense/kernel"]["status"]) == (True, "updating")
    assert [step for step, _ in readback.records(tmp_path / "train")] == list(range(8))  # steps continue


# -- a CNN with BatchNorm -----------------------------------------------------------------


@pytest.mark.parametrize("unused_branch", [False, True])
def test_batchnorm_cnn(tmp_path, unused_branch):
    def build():
        inputs = keras.Input((6, 6, 1))
        h = keras.layers.Conv2D(2, 3, name="conv")(inputs)
        h = keras.layers.BatchNormalization(name="bn")(h)
        h = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(h))
        model = keras.Model(inputs, keras.layers.Dense(1, name="head")(h), name="cnn")
        if unused_branch:  # the bug: a layer built and tracked but not on the path to the loss
            model.branch = keras.layers.Dense(2, name="branch")
            model.branch.build((None, 2))
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
        return model

    def fit(model, callbacks):
        x = np.random.default_rng(1).normal(size=(32, 6, 6, 1)).astype("float32")
        model.fit(x, x[:, 0, 0, :], epochs=1, batch_size=BATCH, shuffle=False, verbose=0, callbacks=callbacks)

    rows, changed, _ = _fit_twice(build, fit, tmp_path)
    _assert_verdicts_match_changes(rows, changed)
    assert rows["bn/moving_mean"]["status"] == "updating" and not rows["bn/moving_mean"]["problem"]
    assert rows["bn/moving_mean"]["gradient_steps"]["not_given"] == 2  # no optimizer touches it
    if unused_branch:
        assert (rows["branch/kernel"]["status"], rows["branch/kernel"]["gradient"]) == ("never_updated", "missing")


# -- mixed precision with a LossScaleOptimizer ----------------------------------------------


@pytest.mark.parametrize("poisoned", [False, True])
def test_loss_scale_optimizer_records_count_and_non_finite_runs(tmp_path, poisoned):
    def build():
        inputs = keras.Input((4,))
        h = keras.layers.Dense(4, activation="relu", name="hidden", dtype="mixed_float16")(inputs)
        model = keras.Model(inputs, keras.layers.Dense(1, name="out", dtype="float32")(h), name="mixed")
        model.compile(optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.01)), loss="mse")
        return model

    x = _real_data()
    if poisoned:  # the bug: every batch after the first is non-finite, so every later step is skipped
        x[BATCH:] = np.inf

    def fit(model, callbacks):
        model.fit(x, np.zeros((64, 1), "float32"), epochs=1, batch_size=BATCH, shuffle=False, verbose=0, callbacks=callbacks)

    rows, changed, _ = _fit_twice(build, fit, tmp_path)
    _assert_verdicts_match_changes(rows, changed)
    records = readback.records(tmp_path / "train")
    newest = records[-1][1]
    assert [step for step, _ in records] == [0, 1, 2, 3] and newest.step_regressions == 0
    assert newest.logs_at_last_finite_grads == (1 if poisoned else 4)
    if not poisoned:
        # The initial loss scale is 2**15: scaled norms would be in the thousands.
        assert 0 < rows["out/bias"]["gradient_l2"] < 100
