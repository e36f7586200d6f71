"""The PyTorch writer: `tracker.ParameterUpdateTracker` (public as `tb_varupdate.torch`), its parts, and the
Lightning and transformers callbacks built on it (public as `tb_varupdate.lightning`, `tb_varupdate.transformers`)."""

__all__ = ["dist", "fold", "hooks", "lightning", "measure", "ops", "optim", "params", "pending", "record", "tracker",
           "transformers"]
