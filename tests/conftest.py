"""Test tiers: the `e2e` marker on the end-to-end tests (browser, demo, wheel, servers, multi-process, benchmarks).

`make test-fast` runs `-m "not e2e"`, the inner loop; `make test` and
`.ci/run` run everything. The marker is set here, by file (and by test
where one slow test sits in a fast file), so the tier of each file is
stated in one place.
"""

import pytest

# Files whose every test is end to end, and why.
E2E_FILES = {
    "test_browser.py": "a browser against a running TensorBoard",
    "test_server.py": "a running TensorBoard",
    "test_wheel.py": "builds and installs the wheel",
    "test_demo.py": "writes every demo scenario",
    "test_makefile_demo.py": "runs `make demo`",
    "test_scenarios.py": "trains the TF demo scenarios",
    "test_torch_scenarios.py": "trains the PyTorch demo scenarios",
    "test_trainer_scenarios.py": "trains the Lightning and Hugging Face demo scenarios",
    "test_readme.py": "runs the README's blocks and commands",
    "test_torch_docs.py": "runs the README's PyTorch blocks (two processes)",
    "test_trainer_docs.py": "runs the README's trainer blocks",
    "test_lightning.py": "real Lightning fits, one of two processes",
    "test_transformers.py": "real Hugging Face Trainer runs",
    "test_distribute.py": "tf.distribute strategies, multi-worker in processes",
    "test_torch_ddp.py": "two gloo processes",
    "test_torch_fsdp.py": "two gloo processes",
    "test_torch_fsdp1.py": "two gloo processes",
    "test_torch_tp.py": "two gloo processes",
    "test_localnet.py": "spawns worker processes",
    "test_benchmarks.py": "runs benchmark sections",
    "test_torch_benchmark.py": "runs benchmark sections",
}
# Single slow tests in otherwise fast files (node id prefixes), and why.
E2E_TESTS = {
    "tests/test_causes_keras.py::test_a_transformer_fit_prints_no_grappler_errors": "a transformer fit in a subprocess",
    "tests/test_keras_patterns.py::test_gan_with_two_optimizers_in_a_custom_train_step": "a GAN fit",
    "tests/test_summary.py::test_mirrored_strategy_on_two_logical_cpus": "tf.distribute",
}


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "e2e: end to end (browser, demo, wheel, servers, multi-process, benchmarks); "
        "`make test-fast` leaves these out")


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.name in E2E_FILES or item.nodeid.startswith(tuple(E2E_TESTS)):
            item.add_marker(pytest.mark.e2e)
