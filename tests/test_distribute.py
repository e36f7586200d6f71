"""tf.distribute for real: MirroredStrategy on two logical CPUs (fit and custom loops), and
MultiWorkerMirroredStrategy with two worker processes on 127.0.0.1.

Each runs in fresh processes: logical devices and a cluster can only be set
up before TensorFlow initialises, and the workers must be separate processes.
"""

import json
import os
import subprocess
import sys

import pytest

from demo import localnet
import readback

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)

MIRRORED = r'''
import json, os, sys, warnings
import tensorflow as tf
# Two replicas on one CPU.
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
sys.path.insert(0, sys.argv[2])
import readback
import tb_varupdate
from tb_varupdate.keras import VariableUpdateCallback
warnings.simplefilter("always")
logdir = sys.argv[1]
out = {}
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32"); y = x[:, :1]

def build():
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="used"), keras.layers.Dense(1, name="head")], name="m")
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    return model

plain = build(); plain.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
model = build(); before = {v.path: v.numpy() for v in model.variables}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    model.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0, callbacks=[VariableUpdateCallback(os.path.join(logdir, "fit"), on_stuck="ignore")])
out["fit_same_end"] = all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(model.variables, plain.variables))
out["fit_changed"] = {v.path: bool(np.any(v.numpy() != before[v.path])) for v in model.variables}
rows = readback.verdicts(os.path.join(logdir, "fit"), run="train")
out["fit"] = {n: [r["status"], r["gradient"], r["logged_steps"]] for n, r in rows.items()}
out["fit_warnings"] = [str(c.message)[:200] for c in caught if "tb_varupdate" in str(c.message)]

for where in ("inside", "outside"):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="used"), keras.layers.Dense(1, name="head")], name="net")
        unused = tf.Variable(1.0, name="unused")
        optimizer = keras.optimizers.SGD(0.05)
    tracker = tb_varupdate.VariableUpdateTracker([net, unused], on_stuck="ignore")
    data = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices((x, y)).batch(16))
    variables = net.trainable_variables + [unused]

    @tf.function
    def step(batch, index):
        def replica(batch):
            xs, ys = batch
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(net(xs) - ys))
            grads = tape.gradient(loss, variables)
            optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
            if where == "inside":
                tracker.log(index, gradients=zip(grads, variables))
            return [g for g in grads if g is not None]
        grads = strategy.run(replica, args=(batch,))
        if where == "outside":
            tracker.log(index, gradients=zip(grads, net.trainable_variables))  # PerReplica gradients

    writer = tf.summary.create_file_writer(os.path.join(logdir, where))
    with warnings.catch_warnings(record=True) as caught, writer.as_default():
        warnings.simplefilter("always")
        for index, batch in enumerate(data):
            step(batch, tf.constant(index, tf.int64))
    writer.close()
    rows = readback.verdicts(os.path.join(logdir, where), run=".")
    out[where] = {n: [r["status"], r["gradient"], r["logged_steps"]] for n, r in rows.items()}
    out[where + "_warnings"] = [str(c.message)[:200] for c in caught if "tb_varupdate" in str(c.message)]
print("@@" + json.dumps(out))'''

MULTI_WORKER = r'''
import json, os, sys
ports, index, logdir, tests_dir = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": ["127.0.0.1:%d" % p for p in ports]}, "task": {"type": "worker", "index": index}})
import numpy as np
import tensorflow as tf
import keras
import tb_varupdate
strategy = tf.distribute.MultiWorkerMirroredStrategy()
keras.utils.set_random_seed(0)
with strategy.scope():
    net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="used"), keras.layers.Dense(1, name="head")], name="net")
    unused = tf.Variable(1.0, name="unused")  # the bug: never on the path to the loss
    optimizer = keras.optimizers.SGD(0.05)
tracker = tb_varupdate.VariableUpdateTracker([net, unused], on_stuck="ignore")
x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
data = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(16))
variables = net.trainable_variables + [unused]
before = [v.numpy() for v in variables]


@tf.function
def step(batch, index):
    def replica(batch):
        xs, ys = batch
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(net(xs) - ys))
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        return grads[:-1]
    grads = strategy.run(replica, args=(batch,))
    tracker.log(index, gradients=list(zip(grads, net.trainable_variables)) + [(None, unused)])


# The chief writes the run; the other worker writes to a directory of its own.
writer = tf.summary.create_file_writer(logdir if index == 0 else "%s_worker%d" % (logdir, index))
with writer.as_default():
    for i, batch in enumerate(data):
        step(batch, tf.constant(i, tf.int64))
writer.close()
print("@@" + json.dumps({
    "changed": {getattr(v, "path", v.name): bool(np.any(v.numpy() != b)) for v, b in zip(variables, before)},
    "values": [v.numpy().tolist() for v in variables],
}))'''


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, TESTS, os.environ.get("PYTHONPATH", "")]),
                TF_CPP_MIN_LOG_LEVEL="2")


def _result(stdout):
    return json.loads([line for line in stdout.splitlines() if line.startswith("@@")][-1][2:])


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("mirrored")
    script = logdir / "mirrored.py"
    script.write_text(MIRRORED)
    proc = subprocess.run([sys.executable, str(script), str(logdir / "logs"), TESTS], capture_output=True, text=True,
                          timeout=300, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _result(proc.stdout)


def test_mirrored_strategy_fit_records_every_step(mirrored):
    assert mirrored["fit_same_end"] and all(mirrored["fit_changed"].values())
    assert mirrored["fit"] == {name: ["updating", "present", 4] for name in mirrored["fit_changed"]}
    assert mirrored["fit_warnings"] == []


@pytest.mark.parametrize("where", ["inside", "outside"])
def test_mirrored_strategy_custom_loop_logs_inside_or_outside_strategy_run(mirrored, where):
    healthy = {name: ["updating", "present", 4] for name in ("net/used/kernel", "net/used/bias", "net/head/kernel", "net/head/bias")}
    # Inside the replica, the unused variable's None gradient is in the pairs; outside it is not given.
    assert mirrored[where] == dict(healthy, unused=["never_updated", "missing" if where == "inside" else "not_logged", 4])
    assert mirrored[where + "_warnings"] == []


def test_multi_worker_mirrored_strategy_chief_writes_one_exact_series(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(MULTI_WORKER)
    logdir = tmp_path / "logs"
    ports = localnet.free_ports(2)
    workers = [
        subprocess.Popen([sys.executable, str(script), json.dumps(ports), str(index), str(logdir), TESTS],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
        for index in range(2)
    ]
    outputs = []
    try:
        for worker in workers:
            outputs.append(worker.communicate(timeout=240))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    for worker, (_, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-3000:]
    chief, other = (_result(stdout) for stdout, _ in outputs)
    assert chief["values"] == other["values"]  # the workers trained one model
    assert chief["changed"] == {"net/used/kernel": True, "net/used/bias": True, "net/head/kernel": True, "net/head/bias": True,
                                "unused:0": False}
    rows = readback.verdicts(logdir)
    assert {name: (r["status"], r["gradient"], r["logged_steps"]) for name, r in rows.items()} == {
        "net/used/kernel": ("updating", "present", 4), "net/used/bias": ("updating", "present", 4),
        "net/head/kernel": ("updating", "present", 4), "net/head/bias": ("updating", "present", 4),
        "unused": ("never_updated", "missing", 4),
    }
    records = readback.records(logdir)
    assert [step for step, _ in records] == [0, 1, 2, 3] and len({u.writer_id for _, u in records}) == 1
