"""The TensorFlow / Keras writer: `tracker.VariableUpdateTracker`, the Keras callback (`callback`, public as
`tb_varupdate.keras`) and its hooks (`fit`)."""

__all__ = ["callback", "fit", "gradients", "measure", "ops", "optim", "record", "trace", "tracker", "variables"]
