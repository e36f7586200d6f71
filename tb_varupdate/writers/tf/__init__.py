"""The TensorFlow / Keras writer: `tracker.VariableUpdateTracker` and the Keras callback's hooks (`fit`)."""

__all__ = ["fit", "gradients", "measure", "ops", "optim", "record", "trace", "tracker", "variables"]
