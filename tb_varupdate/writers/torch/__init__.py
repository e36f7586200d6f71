"""The PyTorch writer's parts; the tracker itself is `tb_varupdate.torch.ParameterUpdateTracker`."""

__all__ = ["dist", "hooks", "measure", "ops", "optim", "params", "pending", "record"]
