"""The one error base of tb-varupdate: every error it raises on purpose derives from it.

`except tb_varupdate.errors.VarUpdateError` catches a malformed record
(`metadata.FormatError`), a stuck variable under `on_stuck="raise"`
(`StuckVariableError`) and an unreadable logdir in the CLI (`cli.CheckError`),
and nothing else. No TensorFlow or PyTorch import: every writer and reader uses it.
"""


class VarUpdateError(Exception):
    """Base of the errors tb-varupdate raises; the message says what to do."""


class StuckVariableError(VarUpdateError, RuntimeError):
    """Raised by a tracker's `log()` with `on_stuck="raise"` when a trainable variable is stuck."""
