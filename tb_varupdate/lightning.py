"""`tb_varupdate.lightning`: records from PyTorch Lightning's `Trainer` (`writers/torch/lightning.py`).

```python
trainer = pl.Trainer(max_epochs=3, callbacks=[tb_varupdate.lightning.VariableUpdateCallback()])
```
"""

from tb_varupdate.writers.torch.lightning import VariableUpdateCallback

__all__ = ["VariableUpdateCallback"]
