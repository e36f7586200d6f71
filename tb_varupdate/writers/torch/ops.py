"""`counters.Ops` over torch tensors: the PyTorch writer folds its counters with it.

Checked equal to `counters.NumPyOps` by tests/test_torch_ops.py. Imports
torch, never TensorFlow.
"""

import numpy as np
import torch

from tb_varupdate.writers import counters


def _tensor(x, like=None):
    if isinstance(x, torch.Tensor):
        return x
    device = like.device if isinstance(like, torch.Tensor) else None
    if np.isscalar(x) and device is not None:
        # A fill kernel: torch.as_tensor(..., device=cuda) would copy from the
        # host and wait for the device at every record.
        return torch.full((), np.asarray(x).item(), dtype=torch.from_numpy(np.asarray(x)).dtype, device=device)
    return torch.as_tensor(np.asarray(x), device=device)


class TorchOps(counters.Ops):
    """The array operations of `counters.fold`, as torch ops on the tensors' own device."""

    def where(self, condition, x, y):
        condition = _tensor(condition)
        # Python and NumPy scalars stay scalars (a kernel argument, no copy to the device).
        x, y = (v.item() if isinstance(v, np.generic) else v for v in (x, y))
        return torch.where(condition, x, y)

    def int64(self, x):
        return _tensor(x).to(torch.int64)

    def int32(self, x):
        return _tensor(x).to(torch.int32)

    def float32(self, x):
        return _tensor(x).to(torch.float32)

    def isfinite(self, x):
        return torch.isfinite(_tensor(x))

    def maximum(self, x, y):
        x = _tensor(x)
        return torch.maximum(x, _tensor(y, x).to(x.dtype))

    def all(self, x):
        return torch.all(_tensor(x))

    def stack_columns(self, columns):
        return torch.stack([_tensor(c) for c in columns], dim=1)

    def stack(self, values):
        values = [_tensor(v) for v in values]
        dtype = values[0].dtype
        return torch.stack([v.to(dtype) for v in values])

    def concat_rows(self, parts):
        return torch.cat([_tensor(p) for p in parts], dim=0)

    def bitcast_to_int32(self, x):
        return _tensor(x).to(torch.float32).contiguous().view(torch.int32)

    def clip_int32(self, x):
        return torch.clamp(_tensor(x), counters.INT32_MIN, counters.INT32_MAX).to(torch.int32)

    def constant(self, values, like_int64):
        return torch.full((), values, dtype=torch.int64, device=like_int64.device)

    def concat_columns(self, parts):
        return torch.cat([_tensor(p) for p in parts], dim=1)


def to_torch(array, device="cpu"):
    """A NumPy state array (`counters.initial_state`, ...) as a torch tensor on `device`."""
    return torch.from_numpy(np.array(array)).to(device)  # np.array keeps a 0-d shape
