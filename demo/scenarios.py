"""One tiny, deterministic training run per way a variable can fail to update.

Every scenario trains a real TensorFlow/Keras model on the CPU for a few dozen
steps and writes one TensorBoard run, `<logdir>/<name>`, with
`VariableUpdateTracker` (custom loops) or `VariableUpdateCallback`
(`model.fit`, whose run is `<name>/train`). `SCENARIOS` lists them with the
verdict each variable should get; `demo.run_all` and the tests share it.

The first three reproduce, in our own code, the three snippets of the question
"Why doesn't the variable value change during TensorFlow training?": rebinding
`w = w - lr * g` (the tf.Variable never changes), `optimizer.apply_gradients`
and `assign_sub` (both train).

Scenarios leave the tracker's warnings alone (the rebinding one is part of
the story); `demo.run_all` collects them.
"""

import numpy as np
import tensorflow as tf
import keras

from demo import catalogue
from tb_varupdate.keras import VariableUpdateCallback
from tb_varupdate.writers.tf.tracker import VariableUpdateTracker

# Enough records for every verdict except `stalled`, which needs a silence of
# at least 20 records (analysis.STALL_MIN_LOGS); that scenario runs longer.
STEPS = 30
LR = 0.1
SEED = 7

# The target of the regression scenarios: y = x @ TRUE_KERNEL + TRUE_BIAS.
TRUE_KERNEL = np.array([[1.0], [-2.0], [0.5]], np.float32)
TRUE_BIAS = 0.3

# Verdict strings, as `tb-varupdate check` and the dashboard print them.
UPDATING, NEVER, STALLED, TINY, NON_FINITE = "updating", "never_updated", "stalled", "tiny_updates", "non_finite"
PRESENT, MISSING, ZERO, NOT_LOGGED, GRAD_NON_FINITE = "present", "missing", "zero", "not_logged", "non_finite"


SCENARIOS = []
_scenario = catalogue.registry(SCENARIOS, lambda: keras.utils.set_random_seed(SEED))


# -- shared pieces -------------------------------------------------------------


def _regression(rows=16, seed=0, target_offset=0.0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, (rows, 3)).astype(np.float32)
    y = x @ TRUE_KERNEL + np.float32(TRUE_BIAS + target_offset)
    return tf.constant(x), tf.constant(y)


def _mse(prediction, y):
    return tf.reduce_mean(tf.square(prediction - y))


def _built(layer, x):
    layer(x)  # creates the variables, so the tracker sees them from step 0
    return layer


def _train_loop(run_dir, tracked, train_step, steps=STEPS):
    """Calls `gradients = train_step(step)` and logs it, `steps` times.

    `train_step` does the optimizer step (or the bug), then returns what is
    passed to `log(gradients=...)`.
    """
    tracker = VariableUpdateTracker(tracked)
    writer = tf.summary.create_file_writer(run_dir)
    with writer.as_default():
        for step in range(steps):
            tracker.log(step, gradients=train_step(step))
    writer.close()


def _fit(run_dir, model, optimizer, epochs=8):
    """`model.fit` on 32 rows in batches of 8: 4 steps per epoch, 32 in all."""
    x, y = _regression(rows=32)
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0,
              callbacks=[VariableUpdateCallback(run_dir)])


# -- the three snippets of the question ----------------------------------------


@_scenario("seed1_rebinding", "`w = w - lr * g` rebinds the name; the tf.Variable stays 0.0",
           {"w": (NEVER, PRESENT)})
def seed1_rebinding(run_dir):
    variable = tf.Variable(0.0, name="w")
    tracker = VariableUpdateTracker(variable)
    writer = tf.summary.create_file_writer(run_dir)
    w = variable
    with writer.as_default():
        for step in range(STEPS):
            with tf.GradientTape() as tape:
                loss = w  # the question's loss: the variable itself
            g = tape.gradient(loss, w)
            grads_and_vars = [(g, w)]
            # The bug: a new tensor is bound to `w`. The printed `w` goes
            # 0.0, -0.1, -0.2, ... while the tf.Variable stays 0.0. From step 1
            # on, `w` is that tensor (the tape still differentiates it because
            # the loss is `w` itself), and the tracker warns that the pair
            # holds a tensor where the variable should be.
            w = w - LR * g
            tracker.log(step, gradients=grads_and_vars)
    writer.close()


@_scenario("seed2_apply_gradients", "`optimizer.apply_gradients([(g, w)])` updates w",
           {"w": (UPDATING, PRESENT)})
def seed2_apply_gradients(run_dir):
    w = tf.Variable(0.0, name="w")
    optimizer = keras.optimizers.SGD(LR)

    def train_step(step):
        with tf.GradientTape() as tape:
            loss = w
        g = tape.gradient(loss, w)
        optimizer.apply_gradients([(g, w)])
        return [(g, w)]

    _train_loop(run_dir, w, train_step)


@_scenario("seed3_assign_sub", "`w.assign_sub(lr * g)` updates w in place",
           {"w": (UPDATING, PRESENT)})
def seed3_assign_sub(run_dir):
    w = tf.Variable(0.0, name="w")

    def train_step(step):
        with tf.GradientTape() as tape:
            loss = w
        g = tape.gradient(loss, w)
        w.assign_sub(LR * g)
        return [(g, w)]

    _train_loop(run_dir, w, train_step)


# -- Keras model.fit -----------------------------------------------------------


class _TwoHeads(keras.Model):
    """Frozen features, a trained head, and an auxiliary head whose output is dropped."""

    def __init__(self):
        super().__init__(name="net")
        self.features = keras.layers.Dense(4, name="features", trainable=False)
        self.hidden = keras.layers.Dense(4, activation="tanh", name="hidden")
        self.head = keras.layers.Dense(1, name="head")
        self.aux = keras.layers.Dense(1, name="aux")

    def call(self, x):
        h = self.hidden(self.features(x))
        self.aux(h)  # the bug: the auxiliary prediction never reaches the loss
        return self.head(h)


@_scenario(
    "keras_frozen_and_unused",
    "model.fit: a frozen layer (fine) and an auxiliary head not connected to the loss",
    {
        "net/features/kernel": (NEVER, NOT_LOGGED),
        "net/features/bias": (NEVER, NOT_LOGGED),
        "net/hidden/kernel": (UPDATING, PRESENT),
        "net/hidden/bias": (UPDATING, PRESENT),
        "net/head/kernel": (UPDATING, PRESENT),
        "net/head/bias": (UPDATING, PRESENT),
        "net/aux/kernel": (NEVER, MISSING),
        "net/aux/bias": (NEVER, MISSING),
    },
    not_trainable=("net/features/kernel", "net/features/bias"),
    keras_fit=True,
)
def keras_frozen_and_unused(run_dir):
    model = _TwoHeads()
    model(_regression(rows=1)[0])
    _fit(run_dir, model, keras.optimizers.SGD(LR))


# -- variables the optimizer never touches -------------------------------------


@_scenario(
    "left_out_of_apply_gradients",
    "a learned output scale is differentiated but zip() drops it from apply_gradients",
    {"linear/kernel": (UPDATING, PRESENT), "linear/bias": (UPDATING, PRESENT), "scale": (NEVER, PRESENT)},
)
def left_out_of_apply_gradients(run_dir):
    x, y = _regression()
    linear = _built(keras.layers.Dense(1, name="linear"), x)
    scale = tf.Variable(1.0, name="scale")
    variables = linear.trainable_variables + [scale]
    optimizer = keras.optimizers.SGD(LR)

    def train_step(step):
        with tf.GradientTape() as tape:
            loss = _mse(scale * linear(x), y)
        grads = tape.gradient(loss, variables)
        # The bug: zip() stops at the shorter list, so `scale` is never applied.
        optimizer.apply_gradients(zip(grads, linear.trainable_variables))
        return zip(grads, variables)

    _train_loop(run_dir, variables, train_step)


def _lr_scenario(run_dir, learning_rate):
    """A linear model whose every step has a known size: only the rate differs.

    Weights start in [0.5, 1] and the bias at 1.0 (none near 0, where float32
    spacing is fine and tiny steps would show); same-sign inputs and a target
    about 4 above the start make every gradient -1.7 to -4.4 for all 30 steps.
    """
    x, y = _regression(target_offset=4.0)
    x = tf.abs(x)
    linear = _built(keras.layers.Dense(
        1, name="linear", kernel_initializer=keras.initializers.RandomUniform(0.5, 1.0, seed=SEED),
        bias_initializer=keras.initializers.Constant(1.0)), x)
    optimizer = keras.optimizers.SGD(learning_rate)

    def train_step(step):
        with tf.GradientTape() as tape:
            loss = _mse(linear(x), y)
        grads = tape.gradient(loss, linear.trainable_variables)
        optimizer.apply_gradients(zip(grads, linear.trainable_variables))
        return grads

    _train_loop(run_dir, linear, train_step)


@_scenario("lr_zero", "learning rate 0: gradients arrive, nothing moves",
           {"linear/kernel": (NEVER, PRESENT), "linear/bias": (NEVER, PRESENT)})
def lr_zero(run_dir):
    _lr_scenario(run_dir, 0.0)


@_scenario("lr_1e-12", "learning rate 1e-12: each step is below float32 rounding, nothing moves",
           {"linear/kernel": (NEVER, PRESENT), "linear/bias": (NEVER, PRESENT)})
def lr_1e_12(run_dir):
    # Steps of ~1e-12 on weights in [0.5, 1]: float32 spacing there is 6e-8.
    _lr_scenario(run_dir, 1e-12)


@_scenario("lr_1e-7_tiny", "learning rate 1e-7: weights move, by under 1e-6 of their size per step",
           {"linear/kernel": (TINY, PRESENT), "linear/bias": (TINY, PRESENT)})
def lr_1e_7_tiny(run_dir):
    # Steps of 1.7e-7 to 4.4e-7 are several float32 spacings (6e-8 below 1.0,
    # 1.2e-7 above), so they register, yet they are 2e-7 to 5e-7 of the
    # weights' size: under the 1e-6 relative-update threshold.
    _lr_scenario(run_dir, 1e-7)


# -- gradients that are zero, None or NaN --------------------------------------


@_scenario(
    "dead_relu",
    "ReLU layer with bias -10: it never fires, so its gradients (and the next kernel's) are exactly 0",
    {
        "hidden/kernel": (NEVER, ZERO),
        "hidden/bias": (NEVER, ZERO),
        "out/kernel": (NEVER, ZERO),
        "out/bias": (UPDATING, PRESENT),
    },
)
def dead_relu(run_dir):
    x, y = _regression()
    # |x @ kernel| <= 3 * glorot limit (0.93) < 10: every unit is always off.
    hidden = _built(keras.layers.Dense(
        4, activation="relu", name="hidden", bias_initializer=keras.initializers.Constant(-10.0)), x)
    out = _built(keras.layers.Dense(1, name="out"), hidden(x))
    variables = hidden.trainable_variables + out.trainable_variables
    optimizer = keras.optimizers.SGD(LR)

    def train_step(step):
        with tf.GradientTape() as tape:
            loss = _mse(out(hidden(x)), y)
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables))
        return zip(grads, variables)

    _train_loop(run_dir, variables, train_step)


@_scenario(
    "non_differentiable",
    "variables reached only through tf.round and tf.argmax: their gradient is None",
    {
        "linear/kernel": (UPDATING, PRESENT),
        "linear/bias": (UPDATING, PRESENT),
        "offset": (NEVER, MISSING),
        "selector": (NEVER, MISSING),
    },
)
def non_differentiable(run_dir):
    x, y = _regression()
    linear = _built(keras.layers.Dense(1, name="linear"), x)
    offset = tf.Variable(0.4, name="offset")  # meant as a learned, quantised offset
    selector = tf.Variable([0.2, 0.5, 0.1], name="selector")  # meant to learn which input to add
    variables = linear.trainable_variables + [offset, selector]
    optimizer = keras.optimizers.SGD(LR)

    def train_step(step):
        with tf.GradientTape() as tape:
            chosen = tf.gather(x, tf.argmax(selector), axis=1)[:, tf.newaxis]
            loss = _mse(linear(x) + tf.round(offset) * chosen, y)
        grads = tape.gradient(loss, variables)
        # Typical code skips the None gradients, which hides the problem.
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        return zip(grads, variables)

    _train_loop(run_dir, variables, train_step)


# 19 of the 30 ids ever occur: 11 rows (37%) of the table never train.
VOCABULARY, USED_IDS = 30, 19


@_scenario(
    "embedding_unused_rows",
    "embedding with 30 rows fed only ids 0-18: sparse gradients, 11 rows (37%) never updated",
    {"embedding/embeddings": (UPDATING, PRESENT), "head/kernel": (UPDATING, PRESENT),
     "head/bias": (UPDATING, PRESENT)},
)
def embedding_unused_rows(run_dir):
    rng = np.random.default_rng(0)
    targets = tf.constant(rng.normal(size=(USED_IDS, 1)).astype(np.float32))
    all_used = tf.range(USED_IDS)
    embedding = _built(keras.layers.Embedding(VOCABULARY, 4, name="embedding"), all_used)
    head = _built(keras.layers.Dense(1, name="head"), embedding(all_used))
    variables = embedding.trainable_variables + head.trainable_variables
    optimizer = keras.optimizers.SGD(LR)

    def train_step(step):
        ids = tf.constant(rng.permutation(USED_IDS))
        with tf.GradientTape() as tape:
            loss = _mse(head(embedding(ids)), tf.gather(targets, ids))
        grads = tape.gradient(loss, variables)  # tf.IndexedSlices for the table
        optimizer.apply_gradients(zip(grads, variables))
        return zip(grads, variables)

    _train_loop(run_dir, variables, train_step)


NAN_STEP = 15


@_scenario(
    "nan_midway",
    "a corrupted (NaN) input at step 15 makes the gradient NaN and then every weight",
    {"linear/kernel": (NON_FINITE, GRAD_NON_FINITE), "linear/bias": (NON_FINITE, GRAD_NON_FINITE)},
)
def nan_midway(run_dir):
    x, y = _regression()
    corrupted = tf.tensor_scatter_nd_update(x, [[0, 0]], [np.nan])
    linear = _built(keras.layers.Dense(1, name="linear"), x)
    optimizer = keras.optimizers.SGD(LR)

    def train_step(step):
        batch = corrupted if step == NAN_STEP else x
        with tf.GradientTape() as tape:
            loss = _mse(linear(batch), y)
        grads = tape.gradient(loss, linear.trainable_variables)
        optimizer.apply_gradients(zip(grads, linear.trainable_variables))
        return grads

    _train_loop(run_dir, linear, train_step)


# -- updates that stop, or come in bursts --------------------------------------

STALL_STEPS, DECAY_STEPS = 60, 20


@_scenario(
    "stalled_lr_schedule",
    "the body's learning rate decays to 0 at step 20 (decay_steps too small): it stalls",
    {"body/kernel": (STALLED, PRESENT), "body/bias": (STALLED, PRESENT),
     "head/kernel": (UPDATING, PRESENT), "head/bias": (UPDATING, PRESENT)},
)
def stalled_lr_schedule(run_dir):
    x, y = _regression()
    body = _built(keras.layers.Dense(4, activation="tanh", name="body"), x)
    head = _built(keras.layers.Dense(1, name="head"), body(x))
    # Lower rates for the pretrained body, as in fine-tuning; the schedule
    # reaches 0 at DECAY_STEPS, so the last change is at step DECAY_STEPS - 1.
    body_optimizer = keras.optimizers.SGD(keras.optimizers.schedules.PolynomialDecay(
        LR, decay_steps=DECAY_STEPS, end_learning_rate=0.0))
    head_optimizer = keras.optimizers.SGD(LR)
    variables = body.trainable_variables + head.trainable_variables

    def train_step(step):
        with tf.GradientTape() as tape:
            loss = _mse(head(body(x)), y)
        grads = tape.gradient(loss, variables)
        body_optimizer.apply_gradients(zip(grads[:2], body.trainable_variables))
        head_optimizer.apply_gradients(zip(grads[2:], head.trainable_variables))
        return grads

    _train_loop(run_dir, variables, train_step, steps=STALL_STEPS)


# Loss scale at the start: high enough that the first float16 gradients
# overflow, so dynamic loss scaling skips a few steps while it halves.
INITIAL_LOSS_SCALE = 2.0**20


@_scenario(
    "mixed_precision",
    "mixed_float16 with dynamic loss scaling: a few overflowing steps are skipped, training is healthy",
    {name: (UPDATING, PRESENT) for name in ("mp/hidden/kernel", "mp/hidden/bias", "mp/out/kernel", "mp/out/bias")},
    keras_fit=True,
)
def mixed_precision(run_dir):
    # The policy is set per layer, not globally, so other scenarios stay float32.
    model = keras.Sequential([
        keras.Input((3,)),
        keras.layers.Dense(8, activation="tanh", dtype="mixed_float16", name="hidden"),
        keras.layers.Dense(1, dtype="mixed_float16", name="out"),
        keras.layers.Activation("linear", dtype="float32", name="as_float32"),
    ], name="mp")
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.05), initial_scale=INITIAL_LOSS_SCALE)
    _fit(run_dir, model, optimizer)


ACCUMULATION = 4


@_scenario(
    "gradient_accumulation",
    "gradient_accumulation_steps=4: weights change every 4th step, which is healthy",
    {"acc/dense/kernel": (UPDATING, PRESENT), "acc/dense/bias": (UPDATING, PRESENT)},
    keras_fit=True,
)
def gradient_accumulation(run_dir):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, name="dense")], name="acc")
    _fit(run_dir, model, keras.optimizers.SGD(LR, gradient_accumulation_steps=ACCUMULATION))


@_scenario(
    "batchnorm_stats",
    "BatchNormalization: moving statistics are not trainable yet change every step, as expected",
    {
        "bn_net/dense/kernel": (UPDATING, PRESENT),
        "bn_net/bn/gamma": (UPDATING, PRESENT),
        "bn_net/bn/beta": (UPDATING, PRESENT),
        "bn_net/bn/moving_mean": (UPDATING, NOT_LOGGED),
        "bn_net/bn/moving_variance": (UPDATING, NOT_LOGGED),
        "bn_net/out/kernel": (UPDATING, PRESENT),
        "bn_net/out/bias": (UPDATING, PRESENT),
    },
    not_trainable=("bn_net/bn/moving_mean", "bn_net/bn/moving_variance"),
    keras_fit=True,
)
def batchnorm_stats(run_dir):
    model = keras.Sequential([
        keras.Input((3,)),
        # No bias before BatchNormalization: its centring cancels a bias, so
        # that bias would only get rounding-noise gradients.
        keras.layers.Dense(4, use_bias=False, name="dense"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.Dense(1, name="out"),
    ], name="bn_net")
    _fit(run_dir, model, keras.optimizers.SGD(LR))


# -- dtypes --------------------------------------------------------------------


@_scenario(
    "bfloat16_rounding",
    "bfloat16 weights at 1.0 with lr 1e-3: each step is below bfloat16's spacing (0.004-0.008), nothing moves",
    {"linear/kernel": (NEVER, PRESENT), "linear/bias": (NEVER, PRESENT)},
)
def bfloat16_rounding(run_dir):
    x = tf.cast(_regression()[0], tf.bfloat16)
    y = x @ tf.ones([3, 1], tf.bfloat16) + 1.5  # the start predicts x @ 1 + 1: residual -0.5
    linear = _built(keras.layers.Dense(
        1, name="linear", dtype="bfloat16", kernel_initializer="ones", bias_initializer="ones"), x)
    optimizer = keras.optimizers.SGD(1e-3)

    def train_step(step):
        with tf.GradientTape() as tape:
            loss = _mse(linear(x), y)
        # |gradient| <= 1 here, so |step| <= 1e-3: 1.0 + 1e-3 rounds back to
        # 1.0 (next bfloat16 up is 1.0078, down 0.9961).
        grads = tape.gradient(loss, linear.trainable_variables)
        optimizer.apply_gradients(zip(grads, linear.trainable_variables))
        return grads

    _train_loop(run_dir, linear, train_step)


@_scenario(
    "int_trainable",
    "an int32 variable marked trainable: tapes do not differentiate integers, its gradient is None",
    {"linear/kernel": (UPDATING, PRESENT), "linear/bias": (UPDATING, PRESENT), "shift": (NEVER, MISSING)},
)
def int_trainable(run_dir):
    x, y = _regression()
    linear = _built(keras.layers.Dense(1, name="linear"), x)
    shift = tf.Variable(0, trainable=True, name="shift")  # int32: meant to learn an integer offset
    variables = linear.trainable_variables + [shift]
    optimizer = keras.optimizers.SGD(LR)

    def train_step(step):
        with tf.GradientTape() as tape:
            loss = _mse(linear(x) + tf.cast(shift, tf.float32), y)
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        return zip(grads, variables)

    _train_loop(run_dir, variables, train_step)


# -- the same model, buggy and fixed, for the compare view ---------------------


def _encoder_head(run_dir, detach_features):
    x, y = _regression()
    encoder = _built(keras.layers.Dense(4, activation="tanh", name="encoder"), x)
    head = _built(keras.layers.Dense(1, name="head"), encoder(x))
    variables = encoder.trainable_variables + head.trainable_variables
    optimizer = keras.optimizers.SGD(LR)

    def train_step(step):
        with tf.GradientTape() as tape:
            features = encoder(x)
            if detach_features:
                # The bug: stop_gradient belongs to a frozen target network, not here.
                features = tf.stop_gradient(features)
            loss = _mse(head(features), y)
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        return zip(grads, variables)

    _train_loop(run_dir, variables, train_step)


@_scenario(
    "compare_buggy",
    "encoder + head with a stray tf.stop_gradient: the encoder gets no gradient",
    {"encoder/kernel": (NEVER, MISSING), "encoder/bias": (NEVER, MISSING),
     "head/kernel": (UPDATING, PRESENT), "head/bias": (UPDATING, PRESENT)},
)
def compare_buggy(run_dir):
    _encoder_head(run_dir, detach_features=True)


@_scenario(
    "compare_fixed",
    "the same encoder + head without the stop_gradient: everything trains",
    {"encoder/kernel": (UPDATING, PRESENT), "encoder/bias": (UPDATING, PRESENT),
     "head/kernel": (UPDATING, PRESENT), "head/bias": (UPDATING, PRESENT)},
)
def compare_fixed(run_dir):
    _encoder_head(run_dir, detach_features=False)


# -- custom train_step: a GAN with two optimizers, fine-tuning -----------------

GAN_LATENT = 4


class _Generator(keras.Model):
    """Subclassed and built on its first call, inside the GAN's first traced train step."""

    def __init__(self):
        super().__init__(name="generator")
        self.hidden = keras.layers.Dense(8, activation="relu", name="hidden")
        self.refine = keras.layers.Dense(8, activation="relu", name="refine")
        self.out = keras.layers.Dense(3, name="out")

    def call(self, noise):
        hidden = self.hidden(noise)
        refined = self.refine(hidden)  # noqa: F841
        # The bug: `hidden` where `refined` was meant; the refine layer's
        # output never reaches the loss, so its gradient is None.
        return self.out(hidden)


class _GAN(keras.Model):
    """A GAN in keras-io's style: `compile()` takes no optimizer; two of its own in train_step."""

    def __init__(self):
        super().__init__(name="gan")
        self.generator = _Generator()
        self.discriminator = keras.Sequential(
            [keras.Input((3,)), keras.layers.Dense(8, activation="relu", name="hidden"),
             keras.layers.Dense(1, name="out")], name="discriminator")
        # Named: an unnamed SeedGenerator's name counts the ones made before it.
        self.seed_generator = keras.random.SeedGenerator(SEED, name="noise")

    def compile(self, d_optimizer, g_optimizer):  # pylint: disable=arguments-differ
        super().compile()
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer
        self.loss_fn = keras.losses.BinaryCrossentropy(from_logits=True)

    def train_step(self, real):
        batch = tf.shape(real)[0]
        noise = keras.random.normal((batch, GAN_LATENT), seed=self.seed_generator)
        fake = self.generator(noise)
        with tf.GradientTape() as tape:
            predictions = self.discriminator(tf.concat([fake, real], axis=0))
            labels = tf.concat([tf.ones((batch, 1)), tf.zeros((batch, 1))], axis=0)
            d_loss = self.loss_fn(labels, predictions)
        grads = tape.gradient(d_loss, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_weights))

        noise = keras.random.normal((batch, GAN_LATENT), seed=self.seed_generator)
        with tf.GradientTape() as tape:
            g_loss = self.loss_fn(tf.zeros((batch, 1)), self.discriminator(self.generator(noise)))
        grads = tape.gradient(g_loss, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_weights))
        return {"d_loss": d_loss, "g_loss": g_loss}


@_scenario(
    "gan_custom_train_step",
    "a GAN with its own train_step and two optimizers; the generator drops its refine layer's output",
    {
        "generator/hidden/kernel": (UPDATING, PRESENT),
        "generator/hidden/bias": (UPDATING, PRESENT),
        "generator/refine/kernel": (NEVER, MISSING),
        "generator/refine/bias": (NEVER, MISSING),
        "generator/out/kernel": (UPDATING, PRESENT),
        "generator/out/bias": (UPDATING, PRESENT),
        "discriminator/hidden/kernel": (UPDATING, PRESENT),
        "discriminator/hidden/bias": (UPDATING, PRESENT),
        "discriminator/out/kernel": (UPDATING, PRESENT),
        "discriminator/out/bias": (UPDATING, PRESENT),
        # keras.random's seed state, advanced by every noise draw.
        "noise/seed_generator_state": (UPDATING, NOT_LOGGED),
    },
    not_trainable=("noise/seed_generator_state",),
    keras_fit=True,
)
def gan_custom_train_step(run_dir):
    model = _GAN()
    model.compile(keras.optimizers.Adam(1e-2), keras.optimizers.Adam(1e-2))
    real = _regression(rows=32)[0]
    model.fit(real, batch_size=8, epochs=8, shuffle=False, verbose=0, callbacks=[VariableUpdateCallback(run_dir)])


def _finetune(run_dir, recompile):
    """keras-io's transfer-learning recipe: train a head on a frozen base, then unfreeze it."""
    x, y = _regression(rows=32)
    base = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="tanh", name="dense")], name="base")
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(base(inputs, training=False)), name="finetune")
    callback = VariableUpdateCallback(run_dir)  # one callback for both fits: one series
    base.trainable = False
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    model.fit(x, y, batch_size=8, epochs=4, shuffle=False, verbose=0, callbacks=[callback])
    base.trainable = True
    if recompile:
        model.compile(optimizer=keras.optimizers.SGD(LR / 10), loss="mse")
    model.fit(x, y, batch_size=8, epochs=4, shuffle=False, verbose=0, callbacks=[callback])


@_scenario(
    "finetune_forgot_recompile",
    "fine-tuning: base.trainable = True without compile() again; Keras keeps training the head only, "
    "and the base, trainable now, is flagged (the callback warns too)",
    {"base/dense/kernel": (NEVER, NOT_LOGGED), "base/dense/bias": (NEVER, NOT_LOGGED),
     "head/kernel": (UPDATING, PRESENT), "head/bias": (UPDATING, PRESENT)},
    keras_fit=True,
)
def finetune_forgot_recompile(run_dir):
    _finetune(run_dir, recompile=False)


@_scenario(
    "finetune_recompiled",
    "fine-tuning as the guide does it: unfreeze, compile() again, the base trains from step 16",
    {"base/dense/kernel": (UPDATING, PRESENT), "base/dense/bias": (UPDATING, PRESENT),
     "head/kernel": (UPDATING, PRESENT), "head/bias": (UPDATING, PRESENT)},
    keras_fit=True,
)
def finetune_recompiled(run_dir):
    _finetune(run_dir, recompile=True)


BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}
