"""`tb_varupdate.transformers`: records from the Hugging Face `Trainer` (`writers/torch/transformers.py`).

```python
trainer = Trainer(model=model, args=args, callbacks=[tb_varupdate.transformers.VariableUpdateCallback()])
```
"""

from tb_varupdate.writers.torch.transformers import VariableUpdateCallback

__all__ = ["VariableUpdateCallback"]
