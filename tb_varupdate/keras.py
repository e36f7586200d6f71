"""`tb_varupdate.keras`: the tracker for Keras 3 `model.fit` (`writers/tf/callback.py`).

```python
model.fit(x, y, callbacks=[tb_varupdate.keras.VariableUpdateCallback("logs/run1")])
```
"""

from tb_varupdate.writers.tf.callback import VariableUpdateCallback

__all__ = ["VariableUpdateCallback"]
