"""tb-varupdate: find the variables that never update during training, and why.

`import tb_varupdate` works without TensorFlow (the backend and the CLI need
none); `VariableUpdateTracker` and `tb_varupdate.keras` import it on first use.
"""

__all__ = ["VariableUpdateTracker", "keras"]


def __getattr__(name):
    if name == "VariableUpdateTracker":
        from tb_varupdate.writers.tf.tracker import VariableUpdateTracker

        return VariableUpdateTracker
    if name == "keras":
        import importlib

        return importlib.import_module("tb_varupdate.keras")
    raise AttributeError("module 'tb_varupdate' has no attribute %r" % name)
