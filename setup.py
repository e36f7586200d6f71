"""tb-varupdate: why doesn't this variable change during training?"""

import setuptools

setuptools.setup(
    name="tb-varupdate",
    version="0.1.0",
    description=(
        "TensorBoard plugin and CLI that find variables that never update during "
        "TensorFlow/Keras training, and say why."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["tb_varupdate", "tb_varupdate.*"]) + ["tb_varupdate.frontend"],
    # The dashboard's source lives in frontend/ at the top of the repository
    # and ships inside the package, so the plugin can serve it from the wheel.
    package_dir={"tb_varupdate.frontend": "frontend"},
    package_data={"tb_varupdate.frontend": ["*.js", "static/*.js", "static/*.css", "static/panes/*.js", "static/vendor/*"]},
    # Supported: the TensorFlow / TensorBoard 2.21 line with Keras 3. TensorFlow
    # itself is not required here: the backend and the CLI run without it, and
    # training code already has its own build (tensorflow, tensorflow-cpu, ...).
    install_requires=[
        "tensorboard>=2.21,<2.22",
        "numpy>=1.26",
        "protobuf>=6.31.1,<8",
        "werkzeug>=1.0.1",
    ],
    extras_require={
        "tf": ["tensorflow>=2.21,<2.22"],
        # The PyTorch writer (tb_varupdate.torch). Tests and the demo install
        # torch==2.13.0 exactly (Makefile): a range admitting a newer release
        # pulls a CUDA build of several GB.
        # google-crc32c: a native CRC for the event records (tb_varupdate.writers.events).
        "torch": ["torch>=2.1", "google-crc32c>=1.5"],
        # The trainer callbacks (tb_varupdate.lightning, tb_varupdate.transformers).
        # Tested with lightning 2.6.6, transformers 5.25.0, peft 0.21.2 and
        # accelerate 1.16.0 on torch 2.13.0 (the Makefile installs those pins).
        "lightning": ["torch>=2.1", "lightning>=2.0"],
        "transformers": ["torch>=2.1", "transformers>=4.41", "accelerate>=0.26"],
        "test": [
            "tensorflow-cpu>=2.21,<2.22",
            "keras>=3.10,<4",
            "pytest>=8",
            "hypothesis>=6.100",
            "google-crc32c>=1.5",
            "playwright>=1.49",
            "build>=1.2",
        ],
    },
    entry_points={
        "tensorboard_plugins": ["varupdate = tb_varupdate.plugin:VarUpdateLoader"],
        "console_scripts": ["tb-varupdate = tb_varupdate.cli:main"],
    },
)
