"""`tb_varupdate.torch`: the PyTorch writer (`writers/torch/tracker.py`).

```python
import tb_varupdate.torch as tbt

tracker = tbt.ParameterUpdateTracker(model, log_dir="runs/exp1")
tracker.attach(optimizer)   # a record after every optimizer.step()
```
"""

from tb_varupdate.writers.torch.tracker import ParameterUpdateTracker, StuckVariableError

__all__ = ["ParameterUpdateTracker", "StuckVariableError"]
