"""The writers under real faults (issue #21): a full disk, threads, copies, a closed writer.

Each test trains a small real model, writes real event files and reads them
back as `tb-varupdate check` does. The promise under test: a record the
writer could not keep is never lost silently (one warning says which), and
no fault of the writer takes training down.
"""

import copy
import glob
import os
import pickle
import threading
import warnings

import numpy as np
import pytest
import tensorflow as tf
import torch
from torch.utils.tensorboard import SummaryWriter

import faults
import readback
import tb_varupdate
from tb_varupdate import cli
import tb_varupdate.keras as tbk
import tb_varupdate.torch as tbt
from tb_varupdate.format import metadata as md

STEPS = 12


def _ours(caught):
    return [str(w.message) for w in caught if str(w.message).startswith("tb_varupdate:")]


def _event_files(run_dir):
    return glob.glob(os.path.join(str(run_dir), "events.out.tfevents.*"))


# -- a full disk ------------------------------------------------------------------

def _tf_model():
    tf.random.set_seed(0)
    return tf.keras.Sequential([tf.keras.Input((200,)), tf.keras.layers.Dense(200), tf.keras.layers.Dense(200)])


def train_tf_on(log_dir):
    """12 steps of a two-layer model, one tracker record each; returns our warnings."""
    model = _tf_model()
    optimizer = tf.keras.optimizers.SGD(0.01)
    tracker = tb_varupdate.VariableUpdateTracker(model)
    writer = tf.summary.create_file_writer(log_dir)
    x = tf.random.normal((8, 200))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        writer.set_as_default()
        for step in range(STEPS):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(model(x) ** 2)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            tracker.log(step, gradients=zip(grads, model.trainable_variables))
        try:
            writer.close()
        except tf.errors.OpError:
            pass  # the user's own writer raises at its close: TensorFlow's, outside the tracker
    return _ours(caught)


def train_torch_on(log_dir):
    """The same with PyTorch and an attached optimizer; returns our warnings."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(200, 200), torch.nn.Linear(200, 200))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(8, 200)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker = tbt.ParameterUpdateTracker(model, log_dir=log_dir)
        tracker.attach(optimizer)
        for _ in range(STEPS):
            optimizer.zero_grad()
            model(x).pow(2).mean().backward()
            optimizer.step()
        tracker.close()
    return _ours(caught)


def train_keras_on(log_dir):
    """Two epochs of 12 steps with the callback; returns our warnings (fit must not fail)."""
    model = _tf_model()
    model.compile("sgd", "mse")
    rng = np.random.default_rng(0)
    x, y = rng.random((8 * STEPS, 200), np.float32), rng.random((8 * STEPS, 200), np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, y, batch_size=8, epochs=2, verbose=0,
                            callbacks=[tbk.VariableUpdateCallback(log_dir)])
    assert len(history.history["loss"]) == 2 and int(model.optimizer.iterations.numpy()) == 2 * STEPS
    assert all(np.isfinite(history.history["loss"]))
    return _ours(caught)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # SummaryWriter's thread dies
@pytest.mark.parametrize("train, run, what", [
    ("train_tf_on", ".", "its record of step"),
    ("train_torch_on", ".", "its record of step"),
    ("train_keras_on", "train", "its record of step"),
])
def test_a_full_disk_is_one_warning_that_says_what_was_lost(tmp_path, train, run, what):
    messages, written, _ = faults.run_on_full_disk(tmp_path, __name__, train)
    on_disk = readback.records(written / run)
    assert 0 < len(on_disk) < STEPS, "the disk should hold a few records, not all"
    assert len(messages) == 1, messages
    message = messages[0]
    assert "could not write " + what in message and "lost" in message, message
    assert "No space left on device" in message or "too large" in message, message
    assert "Graph execution error" not in message and "function_node" not in message, message
    # What reached the disk is whole and readable, steps in order, and checks healthy.
    steps = [step for step, _ in on_disk]
    assert steps == list(range(len(on_disk)))
    assert cli.exit_code(cli.check(str(written / run))) == cli.EXIT_HEALTHY


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_file_over_its_size_limit_does_not_cut_a_keras_epoch_short(tmp_path):
    # EFBIG reaches Keras as an OutOfRangeError, which fit takes for the end of
    # the data: train_keras_on asserts every step of both epochs ran.
    messages, written, mode = faults.run_on_full_disk(tmp_path, __name__, "train_keras_on", rlimit=True)
    assert mode == "rlimit"
    assert len(messages) == 1 and "File too large" in messages[0], messages
    assert 0 < len(readback.records(written / "train")) < STEPS


# -- log() from four threads -------------------------------------------------------

def _threads(work, count=4):
    threads = [threading.Thread(target=work) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_tf_log_from_eight_threads_keeps_every_record_in_one_file(tmp_path):
    variable = tf.Variable(tf.zeros([3]))
    tracker = tb_varupdate.VariableUpdateTracker(variable, stuck_after=1000)
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        tracker.log(None)  # traced here: the threads below race on the records, not on tracing
    # Unserialized, a few of 320 increments were lost in most rounds (a race: not every round).
    rounds, threads, per_thread = 3, 8, 40

    def work():
        with writer.as_default():
            for _ in range(per_thread):
                variable.assign_add(tf.ones([3]))
                tracker.log(None)

    for _ in range(rounds):
        _threads(work, threads)
    writer.flush()
    records = readback.records(tmp_path)
    total = 1 + rounds * threads * per_thread
    assert len(_event_files(tmp_path)) == 1
    assert sorted(step for step, _ in records) == list(range(total))
    assert tracker.records_written == total
    assert max(updates.logged for _, updates in records) == total
    assert cli.exit_code(cli.check(str(tmp_path))) == cli.EXIT_HEALTHY


def test_torch_log_from_four_threads_keeps_every_record_in_one_file(tmp_path):
    model = torch.nn.Linear(4, 2)
    tracker = tbt.ParameterUpdateTracker(model, log_dir=str(tmp_path), stuck_after=1000)
    per_thread = 8

    def work():
        for _ in range(per_thread):
            with torch.no_grad():
                model.weight.add_(0.1)
                model.bias.add_(0.1)
            tracker.log()

    _threads(work)
    tracker.close()
    records = readback.records(tmp_path)
    assert len(_event_files(tmp_path)) == 1
    assert sorted(step for step, _ in records) == list(range(4 * per_thread))
    assert tracker.records_written == 4 * per_thread
    assert records[-1][1].logged == 4 * per_thread
    assert cli.exit_code(cli.check(str(tmp_path))) == cli.EXIT_HEALTHY


# -- copies -------------------------------------------------------------------------

def test_tf_tracker_copy_or_pickle_is_a_clear_error_and_the_original_still_works(tmp_path):
    variable = tf.Variable(1.0)
    tracker = tb_varupdate.VariableUpdateTracker(variable, name="v")
    for attempt in (copy.deepcopy, copy.copy, pickle.dumps):
        with pytest.raises(TypeError, match="cannot be copied.*never_updated.*new tracker"):
            attempt(tracker)
    with tf.summary.create_file_writer(str(tmp_path)).as_default():
        for step in range(3):
            variable.assign_add(1.0)
            tracker.log(step)
    assert readback.verdicts(tmp_path, tag="varupdate/v")["Variable"]["status"] == "updating"


def test_torch_tracker_copy_or_pickle_is_a_clear_error_and_the_model_still_copies(tmp_path):
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    tracker = tbt.ParameterUpdateTracker(model, log_dir=str(tmp_path))
    tracker.attach(optimizer)
    for attempt in (copy.deepcopy, copy.copy, pickle.dumps):
        with pytest.raises(TypeError, match="cannot be copied.*never_updated.*new tracker"):
            attempt(tracker)
    # What the tracker hooks into still copies (an EMA model, a saved optimizer).
    copy.deepcopy(model)
    copy.deepcopy(optimizer)
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    tracker.close()
    assert {row["status"] for row in readback.verdicts(tmp_path).values()} == {"updating"}
    assert tracker.records_written == 3


# -- gradients= naming one variable twice ----------------------------------------------

def test_tf_gradient_pairs_naming_a_variable_twice_warn_and_keep_the_last(tmp_path):
    kept, other = tf.Variable([1.0, 1.0], name="kept"), tf.Variable([2.0], name="other")
    tracker = tb_varupdate.VariableUpdateTracker([kept, other])
    with warnings.catch_warnings(record=True) as caught, tf.summary.create_file_writer(str(tmp_path)).as_default():
        warnings.simplefilter("always")
        for step in range(3):
            kept.assign_add([1.0, 1.0])
            other.assign_add([1.0])
            tracker.log(step, gradients=[(tf.constant([3.0, 4.0]), kept), (tf.constant([1.0]), other),
                                         (tf.constant([0.0, 0.6]), kept)])
    messages = _ours(caught)
    assert len(messages) == 1 and "pairs #0 and #2 both name variable 'kept'" in messages[0], messages
    _, newest = readback.records(tmp_path)[-1]
    assert newest.floats[0, md.GRAD_L2] == pytest.approx(0.6)
    assert newest.floats[1, md.GRAD_L2] == pytest.approx(1.0)


class _TwiceAStep(tf.keras.Model):
    """Applies its optimizer twice per train step, as a WGAN's critic steps do."""

    def __init__(self):
        super().__init__(name="twice")
        self.dense = tf.keras.layers.Dense(1, name="dense")

    def call(self, x):
        return self.dense(x)

    def train_step(self, data):
        x, y = data
        for _ in range(2):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean((self(x) - y) ** 2)
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return {"loss": loss}


def test_keras_applying_a_variable_twice_in_a_step_is_no_duplicate(tmp_path):
    # One record per train step holds each variable's last applied gradient, by design.
    model = _TwiceAStep()
    model.compile(tf.keras.optimizers.SGD(0.1))
    x, y = np.ones((16, 3), np.float32), np.zeros((16, 1), np.float32)
    callback = tbk.VariableUpdateCallback(str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[callback])
    assert _ours(caught) == []
    assert len(readback.records(tmp_path / "train")) == 4


# -- the same optimizer attached twice ----------------------------------------------------

def test_torch_the_same_optimizer_attached_twice_is_one_attachment(tmp_path):
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    tracker = tbt.ParameterUpdateTracker(model, log_dir=str(tmp_path))
    x, y = torch.randn(8, 3), torch.randn(8, 1)

    def steps(count):
        for _ in range(count):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()

    first, second = tracker.attach(optimizer), tracker.attach(optimizer, optimizer)
    steps(4)
    assert tracker.records_written == 4
    first.remove()
    first.remove()  # a second remove() of one handle takes nothing more off
    steps(4)
    assert tracker.records_written == 8, "the other attach() still holds the optimizer"
    second.remove()
    steps(2)
    tracker.close()
    assert [step for step, _ in readback.records(tmp_path)] == list(range(8))


# -- the writer closed mid-training --------------------------------------------------------

def test_tf_writer_closed_mid_training_is_one_clear_warning(tmp_path):
    variable = tf.Variable(1.0)
    tracker = tb_varupdate.VariableUpdateTracker(variable)
    writer = tf.summary.create_file_writer(str(tmp_path))
    with warnings.catch_warnings(record=True) as caught, writer.as_default():
        warnings.simplefilter("always")
        for step in range(6):
            variable.assign_add(1.0)
            if step == 3:
                writer.close()
            tracker.log(step)
    messages = _ours(caught)
    assert len(messages) == 1, messages
    assert "record of step 3" in messages[0] and "writer was closed" in messages[0], messages
    assert "Graph execution error" not in messages[0] and "function_node" not in messages[0]
    assert [step for step, _ in readback.records(tmp_path)] == [0, 1, 2]


def test_torch_users_writer_closed_mid_training_keeps_every_record(tmp_path):
    # SummaryWriter opens a new event file when written to after close(): nothing is lost.
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    writer = SummaryWriter(str(tmp_path))
    tracker = tbt.ParameterUpdateTracker(model, writer=writer)
    tracker.attach(optimizer)
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(6):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
            if step == 2:
                writer.close()
        tracker.close()
    writer.close()
    assert _ours(caught) == []
    assert [step for step, _ in readback.records(tmp_path)] == list(range(6))
    assert {row["status"] for row in readback.verdicts(tmp_path).values()} == {"updating"}


# -- the Keras callback with a log_dir that cannot be created ---------------------------------

def test_keras_log_dir_under_a_regular_file_warns_and_fit_goes_on(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    callback = tbk.VariableUpdateCallback(str(blocker / "logs"))
    x, y = np.ones((8, 3), np.float32), np.ones((8, 1), np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = model.fit(x, y, epochs=2, verbose=0, callbacks=[callback])
        second = model.fit(x, y, epochs=1, verbose=0, callbacks=[callback])
    assert len(first.history["loss"]) == 2 and len(second.history["loss"]) == 1
    messages = _ours(caught)
    assert len(messages) == 1, messages
    assert "cannot write to" in messages[0] and "not a directory" in messages[0] and "training goes on" in messages[0]
    assert "function_node" not in messages[0]
