"""The Keras callback's cost in `model.fit`: a GAN's custom train_step and a MirroredStrategy fit.

Each model is fitted with and without `VariableUpdateCallback`, the two
variants on twin models (same layers, same seed, same data), their fits
interleaved round by round so that drift in machine load hits both alike. A
fit's first epoch holds its tracing and is left out; the step time is the
median over the other epochs of all rounds. The callback logs every train
step (`update_freq="batch"`), with every variable's gradient.
"""

import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPU devices, so MirroredStrategy has two replicas; set before
# anything touches the runtime.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
)

import keras  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from tb_varupdate.keras import VariableUpdateCallback  # noqa: E402

BATCH = 64
LATENT = 32
IMAGE = 784
STEPS_PER_EPOCH = 20


class GAN(keras.Model):
    """A dense GAN in the keras-io style: `compile()` without an optimizer, two of its own."""

    def __init__(self):
        super().__init__()
        self.generator = keras.Sequential(
            [keras.Input((LATENT,)), keras.layers.Dense(256, activation="relu"), keras.layers.Dense(IMAGE, activation="sigmoid")],
            name="generator",
        )
        self.discriminator = keras.Sequential(
            [keras.Input((IMAGE,)), keras.layers.Dense(256, activation="relu"), keras.layers.Dense(1)],
            name="discriminator",
        )
        self.seed_generator = keras.random.SeedGenerator(1)

    def compile(self, d_optimizer, g_optimizer):  # pylint: disable=arguments-differ
        super().compile()
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer
        self.loss_fn = keras.losses.BinaryCrossentropy(from_logits=True)

    def train_step(self, real):
        batch = tf.shape(real)[0]
        noise = keras.random.normal((batch, LATENT), seed=self.seed_generator)
        images = tf.concat([self.generator(noise), real], axis=0)
        labels = tf.concat([tf.ones((batch, 1)), tf.zeros((batch, 1))], axis=0)
        with tf.GradientTape() as tape:
            d_loss = self.loss_fn(labels, self.discriminator(images))
        grads = tape.gradient(d_loss, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_weights))
        noise = keras.random.normal((batch, LATENT), seed=self.seed_generator)
        with tf.GradientTape() as tape:
            g_loss = self.loss_fn(tf.zeros((batch, 1)), self.discriminator(self.generator(noise)))
        grads = tape.gradient(g_loss, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_weights))
        return {"d_loss": d_loss, "g_loss": g_loss}


class EpochTimes(keras.callbacks.Callback):
    """Wall time of each epoch (epoch hooks keep Keras' asynchronous dispatch on)."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def _gan():
    keras.utils.set_random_seed(0)
    model = GAN()
    model.compile(keras.optimizers.Adam(1e-4), keras.optimizers.Adam(1e-4))
    data = np.random.default_rng(0).uniform(size=(BATCH * STEPS_PER_EPOCH, IMAGE)).astype(np.float32)
    return model, (data,), {"batch_size": BATCH}


def _mirrored(strategy):
    def build():
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = keras.Sequential([
                keras.Input((IMAGE,)), keras.layers.Dense(512, activation="relu"),
                keras.layers.Dense(256, activation="relu"), keras.layers.Dense(10),
            ])
            model.compile(keras.optimizers.Adam(1e-4),
                          keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        rng = np.random.default_rng(0)
        x = rng.normal(size=(BATCH * STEPS_PER_EPOCH, IMAGE)).astype(np.float32)
        y = rng.integers(0, 10, size=BATCH * STEPS_PER_EPOCH).astype(np.int32)
        return model, (x, y), {"batch_size": BATCH}
    return build


def fit_step_times(build, rounds, epochs):
    """Median seconds per train step without and with the callback."""
    variants = {"no callback": build(), "VariableUpdateCallback": build()}
    times = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as logdir:
        callback = VariableUpdateCallback(logdir, on_stuck="ignore")
        for _ in range(rounds):
            for name, (model, data, kwargs) in variants.items():
                timer = EpochTimes()
                callbacks = [timer] + ([callback] if name != "no callback" else [])
                model.fit(*data, epochs=epochs, verbose=0, shuffle=False, callbacks=callbacks, **kwargs)
                times[name] += [seconds / STEPS_PER_EPOCH for seconds in timer.seconds[1:]]
    return {name: float(np.median(values)) for name, values in times.items()}


def run(quick):
    rounds, epochs = (2, 2) if quick else (5, 4)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rows = []
    for label, build in (
        ("GAN, custom train_step, two Adam optimizers (0.6M parameters)", _gan),
        ("MirroredStrategy, 2 replicas, MLP (0.5M parameters)", _mirrored(strategy)),
    ):
        common.progress("callback overhead: %s" % label)
        times = fit_step_times(build, rounds, epochs)
        base, logged = times["no callback"], times["VariableUpdateCallback"]
        rows.append((label, common.ms(base), common.ms(logged), "%.3fx" % (logged / base),
                     "%+.2f ms" % ((logged - base) * 1e3)))
    body = __doc__.split("\n\n", 1)[1].strip() + "\n\n" + "Batch %d, %d steps an epoch, %d rounds x %d epochs:\n\n%s" % (
        BATCH, STEPS_PER_EPOCH, rounds, epochs,
        common.table(("model.fit of", "step, no callback", "step, callback", "ratio", "added"), rows),
    )
    return common.Section("Keras callback in model.fit", body)


if __name__ == "__main__":
    sys.exit(common.main_for(run))
