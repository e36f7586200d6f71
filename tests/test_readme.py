"""Every code block and command of README.md runs as written.

The blocks are read out of README.md itself, so a change there that breaks a
snippet, or a new command nobody runs, fails this file. The Python snippets
are executed unchanged in a temporary working directory, with a tiny real
setup for the names they leave to the reader (model, dataset, loss_fn,
optimizer, x, y); what they wrote is then read back with the real CLI. The
shell commands run in that directory, where `logs/` now holds the snippets'
runs plus `logs/seed1`, the run the `--run 'seed1'` example filters for.
"""

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import tensorflow as tf
import keras

from tb_varupdate import cli
from tb_varupdate.format import metadata as md
from tb_varupdate.reader import history as history_lib

import local_http

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")
BIN = os.path.dirname(sys.executable)  # this venv's console scripts: tb-varupdate, tensorboard

# README commands that this file does not run, and why. Anything else in a
# bash block must be run below: a new command fails
# `test_every_readme_command_is_run_or_accounted_for` until someone handles it.
COVERED_ELSEWHERE = {
    "make demo": "tests/test_demo.py runs the demo (python -m demo) and checks its verdicts",
    "make test": "runs this suite; running it from inside the suite would recurse",
}
NOT_RUNNABLE = {
    "pip install tb-varupdate": "needs PyPI, which tests cannot reach; tests/test_wheel.py installs the checkout",
    "pip install tb-varupdate torch": "needs PyPI; the tests install torch==2.13.0 (make venv) and the checkout",
}
CHECK_ALL = "tb-varupdate check logs"
CHECK_SEED1 = "tb-varupdate check logs --run 'seed1' --json"
TENSORBOARD = "tensorboard --logdir logs"
TENSORBOARD_ALL_SAMPLES = "tensorboard --logdir logs --samples_per_plugin=varupdate=0"
RUN_HERE = (CHECK_ALL, CHECK_SEED1, TENSORBOARD, TENSORBOARD_ALL_SAMPLES)

# logs/seed1 gets more records than the plugin keeps by default, so the two
# tensorboard commands can be told apart: only the second shows every step.
SEED1_STEPS = history_lib.DEFAULT_SAMPLES + 100
# 96 rows in batches of 8: 12 steps, past the tracker's stuck_after=10 check.
LOOP_ROWS, LOOP_BATCH = 96, 8
FIT_ROWS = 64  # two steps of model.fit's default batch size of 32
# The GAN snippet: 2 epochs of 48 rows in batches of 16, 6 train steps.
GAN_ROWS, GAN_BATCH, GAN_EPOCHS, GAN_FEATURES = 48, 16, 2, 6
# TensorBoard imports its plugins and reads the logdir before it answers; on a
# loaded 2-core machine that can take tens of seconds.
START_TIMEOUT_S = 120
# Python blocks that other files run: test_torch_docs.py and test_trainer_docs.py.
TRAINER_DOC_MODULES = ("tb_varupdate.torch", "tb_varupdate.lightning", "tb_varupdate.transformers")
CLI_TIMEOUT_S = 120


def fenced_blocks(text):
    """[(language, first line number, code)] of the fenced blocks of a Markdown text.

    CommonMark fences: a line of three or more backticks or tildes, then an
    info string whose first word is the language; the block ends at a line
    of at least as many of the same character.
    """
    blocks, fence, language, start, lines = [], None, None, None, []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if fence is None:
            marker = stripped[:3]
            if marker in ("```", "~~~"):
                fence = stripped[: len(stripped) - len(stripped.lstrip(marker[0]))]
                info = stripped[len(fence):].split()
                language, start, lines = (info[0] if info else ""), number + 1, []
        elif stripped.startswith(fence) and not stripped.lstrip(fence[0]):
            blocks.append((language, start, "\n".join(lines) + "\n"))
            fence = None
        else:
            lines.append(line)
    assert fence is None, "README.md: the fence opened before line %d is never closed" % start
    return blocks


def readme_blocks():
    with open(README, encoding="utf-8") as handle:
        return fenced_blocks(handle.read())


def shell_commands():
    """{command without its comment: (line as written, README line number)}."""
    commands = {}
    for language, start, code in readme_blocks():
        if language != "bash":
            continue
        for offset, line in enumerate(code.splitlines()):
            if line.strip():
                command = " ".join(shlex.split(line, comments=True, posix=False))
                commands[command] = (line, start + offset)
    return commands


def python_snippets():
    """{"loop" | "fit" | "gan": (compiled code, README line number)}, recognised by content.

    The PyTorch section's blocks are run by tests/test_torch_docs.py, the
    Lightning and Hugging Face Trainer ones by tests/test_trainer_docs.py.
    """
    found = {}
    for language, start, code in readme_blocks():
        if language != "python" or any(module in code for module in TRAINER_DOC_MODULES):
            continue
        if "def train_step" in code:
            key = "gan"
        elif "VariableUpdateTracker(" in code:
            key = "loop"
        elif ".fit(" in code:
            key = "fit"
        else:
            raise AssertionError("README.md line %d: a Python block this test does not know; run it here" % start)
        assert key not in found, "README.md line %d: a second %r block; run it here" % (start, key)
        # Padded so that tracebacks give README.md's own line numbers.
        found[key] = (compile("\n" * (start - 1) + code, "README.md", "exec"), start)
    return found


def _loop_names():
    """The names the custom-loop snippet leaves to the reader, real and tiny."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, activation="tanh", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(hidden), name="net")
    # Built but never called: the snippet's tracker must report it, with the
    # gradient verdict `missing` that `gradients=` makes possible.
    model.unused = keras.layers.Dense(2, name="unused")
    model.unused.build((None, 3))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(LOOP_ROWS, 3)).astype("float32")
    y = x @ np.array([[1.0], [-2.0], [0.5]], np.float32)
    return {
        "model": model,
        "dataset": tf.data.Dataset.from_tensor_slices((x, y)).batch(LOOP_BATCH),
        "loss_fn": keras.losses.MeanSquaredError(),
        "optimizer": keras.optimizers.SGD(0.05),
    }


def _fit_names():
    """A compiled model and data for the `model.fit` one-liner."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, activation="tanh", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(hidden), name="fitnet")
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(FIT_ROWS, 3)).astype("float32")
    return {"model": model, "x": x, "y": x.sum(axis=1, keepdims=True)}


def _gan_names():
    """The GAN snippet's generator, discriminator, latent_dim and dataset: real and tiny."""
    keras.utils.set_random_seed(2)
    latent_dim = 4
    generator = keras.Sequential([
        keras.Input((latent_dim,)), keras.layers.Dense(8, activation="tanh", name="hidden"),
        keras.layers.Dense(GAN_FEATURES, name="out")], name="generator")
    discriminator = keras.Sequential([
        keras.Input((GAN_FEATURES,)), keras.layers.Dense(8, activation="tanh", name="hidden"),
        keras.layers.Dense(1, name="out")], name="discriminator")
    images = np.random.default_rng(2).normal(size=(GAN_ROWS, GAN_FEATURES)).astype("float32")
    return {"generator": generator, "discriminator": discriminator, "latent_dim": latent_dim,
            "dataset": tf.data.Dataset.from_tensor_slices(images).batch(GAN_BATCH)}


def _write_seed1(logdir):
    """logs/seed1: a healthy run, not from the README, for the --run example."""
    import tb_varupdate

    w = tf.Variable([1.0, -1.0], name="w")
    tracker = tb_varupdate.VariableUpdateTracker([w])

    @tf.function
    def train_step(step):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(w * w)
        grad = tape.gradient(loss, w)
        w.assign_sub(0.001 * grad)
        tracker.log(step, gradients=[(grad, w)])

    writer = tf.summary.create_file_writer(os.path.join(logdir, "seed1"))
    with writer.as_default():
        for step in range(SEED1_STEPS):
            train_step(tf.constant(step, tf.int64))
    writer.close()


@contextlib.contextmanager
def _cwd(path):
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A directory where the README's Python blocks ran, in order, as a reader would.

    Returns:
      (path, warning messages the custom loop raised, {GAN variable path:
      whether its value changed in the GAN block}).
    """
    path = tmp_path_factory.mktemp("readme")
    snippets = python_snippets()
    namespace = _loop_names()
    with _cwd(path):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            exec(snippets["loop"][0], namespace)  # pylint: disable=exec-used
        # The fit block continues the reader's session: `tbv` comes from the
        # loop block.
        namespace.update(_fit_names())
        exec(snippets["fit"][0], namespace)  # pylint: disable=exec-used
        namespace.update(_gan_names())
        weights = namespace["generator"].weights + namespace["discriminator"].weights
        before = [w.numpy().copy() for w in weights]
        exec(snippets["gan"][0], namespace)  # pylint: disable=exec-used
        changed = {w.path: not np.array_equal(b, w.numpy()) for w, b in zip(weights, before)}
    _write_seed1(str(path / "logs"))
    return path, [str(w.message) for w in caught], changed


def _run_shell(line, cwd):
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    return subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S)


@pytest.fixture(scope="module")
def report(workdir):
    """`tb-varupdate check logs --json` over what the snippets wrote."""
    path = workdir[0]
    proc = subprocess.run([os.path.join(BIN, "tb-varupdate"), "check", "logs", "--json"], cwd=path,
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    assert proc.returncode == cli.EXIT_PROBLEMS, proc.stderr
    return json.loads(proc.stdout)


def _verdicts(report, run):
    rows = report["runs"][run][md.updates_tag("model")]["rows"]
    return {row["variable"]: (row["status"], row["gradient"], row["first_update_step"], row["last_update_step"])
            for row in rows}


def test_readme_blocks_are_all_python_or_shell():
    languages = [language for language, _, _ in readme_blocks()]
    assert languages and set(languages) <= {"python", "bash"}, languages
    assert sorted(python_snippets()) == ["fit", "gan", "loop"]


def test_every_readme_command_is_run_or_accounted_for():
    commands = shell_commands()
    handled = set(RUN_HERE) | set(COVERED_ELSEWHERE) | set(NOT_RUNNABLE)
    assert sorted(set(commands) - handled) == [], "new README commands: run them in tests/test_readme.py"
    assert sorted(handled - set(commands)) == [], "commands no longer in README.md: drop them here"


def test_pip_install_from_pypi_is_the_only_line_skipped():
    skipped = sorted(set(shell_commands()) - set(RUN_HERE) - set(COVERED_ELSEWHERE))
    assert skipped == ["pip install tb-varupdate", "pip install tb-varupdate torch"]
    pytest.skip("; ".join(NOT_RUNNABLE[line] for line in skipped))


def test_custom_loop_snippet_finds_the_unused_layer(workdir, report):
    steps = LOOP_ROWS // LOOP_BATCH
    assert _verdicts(report, "run1") == {
        "hidden/kernel": ("updating", "present", 0, steps - 1),
        "hidden/bias": ("updating", "present", 0, steps - 1),
        "out/kernel": ("updating", "present", 0, steps - 1),
        "out/bias": ("updating", "present", 0, steps - 1),
        "unused/kernel": ("never_updated", "missing", None, None),
        "unused/bias": ("never_updated", "missing", None, None),
    }
    # on_stuck="warn" and stuck_after=10, the defaults the README names.
    caught = workdir[1]
    (stuck,) = [message for message in caught if "are stuck" in message]
    assert "after 10 records (step 9), 2 trainable variable(s)" in stuck
    assert "2 variables - unused/bias, unused/kernel: never_updated" in stuck  # grouped by cause


def test_fit_snippet_writes_to_the_train_run(report):
    steps = FIT_ROWS // 32
    assert _verdicts(report, "run1/train") == {
        "hidden/kernel": ("updating", "present", 0, steps - 1),
        "hidden/bias": ("updating", "present", 0, steps - 1),
        "out/kernel": ("updating", "present", 0, steps - 1),
        "out/bias": ("updating", "present", 0, steps - 1),
    }


def test_gan_snippet_records_both_optimizers_every_train_step(workdir, report):
    changed = workdir[2]
    steps = GAN_EPOCHS * GAN_ROWS // GAN_BATCH
    verdicts = _verdicts(report, "gan/train")
    assert verdicts == {
        name: ("updating", "present", 0, steps - 1) for name in changed
    }
    assert all(changed.values())  # every weight really changed, as the verdicts say
    rows = report["runs"]["gan/train"][md.updates_tag("model")]["rows"]
    assert {row["logged_steps"] for row in rows} == {steps}  # one record per train step


def _table_marks(text):
    """{run: [FAIL/WARN/ok per row, in printed order]} of `check`'s table."""
    marks, run = {}, None
    for line in text.splitlines():
        if line and not line.startswith(" "):
            run = line.split("  ")[0]
            marks[run] = []
        elif line.startswith("  ") and not line.startswith(("   ", "  warning:")):
            marks[run].append(line.split()[0])
    return marks


def test_check_commands_exit_as_documented(workdir):
    path = workdir[0]
    commands = shell_commands()
    proc = _run_shell(commands[CHECK_ALL][0], path)
    # run1 holds the unused layer: a problem, so exit 1, and problems first.
    assert proc.returncode == cli.EXIT_PROBLEMS, proc.stderr
    assert _table_marks(proc.stdout) == {
        "run1": ["FAIL", "FAIL", "ok", "ok", "ok", "ok"], "run1/train": ["ok"] * 4, "gan/train": ["ok"] * 8,
        "seed1": ["ok"],
    }, proc.stdout
    # seed1 alone is healthy: the filter leaves run1 out, so exit 0.
    proc = _run_shell(commands[CHECK_SEED1][0], path)
    assert proc.returncode == cli.EXIT_HEALTHY, proc.stderr
    seed1 = json.loads(proc.stdout)
    assert sorted(seed1["runs"]) == ["seed1"]
    (row,) = seed1["runs"]["seed1"][md.updates_tag("model")]["rows"]
    assert (row["variable"], row["status"], row["gradient"], row["last_update_step"]) == (
        "w", "updating", "present", SEED1_STEPS - 1)


def _get_json(url):
    status, body, _ = local_http.get(url)
    return status, json.loads(body) if status == 200 else None


def _wait_for_runs(base, process, expected, log):
    """The runs route's document once every run is loaded up to its last step."""
    deadline = time.monotonic() + START_TIMEOUT_S
    body = None
    while time.monotonic() < deadline and process.poll() is None:
        try:
            status, body = _get_json(base + "data/plugin/varupdate/runs")
        except OSError:  # connection refused while it starts (URLError is one)
            status = None
        if status == 200:
            last = {run["run"]: [tag["last_step"] for tag in run["tags"]] for run in body["runs"]}
            if last == expected:
                return body
        time.sleep(0.5)
    log.seek(0)
    raise AssertionError("TensorBoard did not serve the runs %r (last answer %r):\n%s"
                         % (expected, body, log.read()[-3000:]))


def test_tensorboard_commands_serve_the_runs(workdir, tmp_path):
    path = workdir[0]
    commands = shell_commands()
    # `open the "Variable Updates" tab`: the tab the comment names must exist.
    (tab_name,) = [part.split('"')[1] for part in commands[TENSORBOARD][0].split("#")[1:]]
    expected = {"run1": [LOOP_ROWS // LOOP_BATCH - 1], "run1/train": [FIT_ROWS // 32 - 1],
                "gan/train": [GAN_EPOCHS * GAN_ROWS // GAN_BATCH - 1], "seed1": [SEED1_STEPS - 1]}
    started = []
    try:
        # Both start at once, to halve the wait. Each gets a free port appended
        # (the only change to the command as written): the README's default,
        # 6006, may be taken by a `make demo` and cannot serve both.
        for command in (TENSORBOARD, TENSORBOARD_ALL_SAMPLES):
            argv = shlex.split(commands[command][0], comments=True)
            argv[0] = shutil.which(argv[0], path=BIN)
            port = local_http.free_port()
            log = open(tmp_path / ("%d.log" % port), "w+", encoding="utf-8")
            process = subprocess.Popen(argv + ["--port", str(port)], cwd=path, stdout=log, stderr=subprocess.STDOUT)
            started.append((command, process, log, "http://localhost:%d/" % port))
        served = {}
        for command, process, log, base in started:
            _wait_for_runs(base, process, expected, log)
            status, listing = _get_json(base + "data/plugins_listing")
            assert status == 200 and listing[md.PLUGIN_NAME]["tab_name"] == tab_name
            status, series = _get_json(base + "data/plugin/varupdate/series?run=seed1&tag=varupdate/model&variable=w")
            assert status == 200, series
            served[command] = (series["logged"], series["points"], series["downsampled"])
    finally:
        for _, process, log, _ in started:
            local_http.stop(process)
            log.close()
    # The plugin's raised default keeps DEFAULT_SAMPLES records; the flag keeps all.
    assert served == {
        TENSORBOARD: (SEED1_STEPS, history_lib.DEFAULT_SAMPLES, True),
        TENSORBOARD_ALL_SAMPLES: (SEED1_STEPS, SEED1_STEPS, False),
    }
