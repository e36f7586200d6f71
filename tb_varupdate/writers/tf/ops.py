"""`counters.Ops` over TensorFlow: the counter semantics as graph ops.

The tracker folds each record inside its own `tf.function` or the user's, so
these build graph ops; `tests/test_summary.py` checks them against
`counters.NumPyOps`.
"""

import tensorflow as tf

from tb_varupdate.writers import counters


class TFOps(counters.Ops):
    """`Ops` over tf.Tensors (works eagerly and inside `tf.function`)."""

    def where(self, condition, x, y):
        return tf.where(condition, x, y)

    def int64(self, x):
        return tf.cast(x, tf.int64)

    def int32(self, x):
        return tf.cast(x, tf.int32)

    def float32(self, x):
        return tf.cast(x, tf.float32)

    def isfinite(self, x):
        return tf.math.is_finite(x)

    def maximum(self, x, y):
        return tf.maximum(x, y)

    def all(self, x):
        return tf.reduce_all(x)

    def stack_columns(self, columns):
        return tf.stack(columns, axis=1)

    def stack(self, values):
        return tf.stack(values)

    def concat_rows(self, parts):
        return tf.concat(parts, axis=0)

    def bitcast_to_int32(self, x):
        return tf.bitcast(tf.cast(x, tf.float32), tf.int32)

    def clip_int32(self, x):
        return tf.cast(tf.clip_by_value(tf.cast(x, tf.int64), counters.INT32_MIN, counters.INT32_MAX), tf.int32)

    def constant(self, values, like_int64):
        return tf.constant(values, tf.int64)
