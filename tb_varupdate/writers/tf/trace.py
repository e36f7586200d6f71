"""The eager path's trace cache: one concrete function per gradient layout, called with flat tensors.

This module holds the package's only uses of private TensorFlow API, each
with a public fallback that `tests/test_summary.py` runs.

A `tf.function` call re-checks the structure of every argument (~25 µs per
gradient, 7.5 ms for 300 variables); a concrete function called with a flat
list of tensors takes a fraction of that. The flat call is TensorFlow's private
`ConcreteFunction._call_flat`, used only when its signature is the one this was written
against; the public call is the tested fallback. A traced function captures
the default summary writer of its trace, so the writer is part of the cache
key; TensorFlow has no public getter for it (`current_writer`), nor for
whether a writer was closed (`writer_closed`, which only words a warning).
"""

import inspect

import tensorflow as tf

from tb_varupdate.writers.tf import measure


def _flat_call_ok():
    try:
        from tensorflow.python.eager.polymorphic_function import concrete_function  # pylint: disable=import-outside-toplevel
        parameters = list(inspect.signature(concrete_function.ConcreteFunction._call_flat).parameters)
    except (ImportError, AttributeError, TypeError, ValueError):
        return False
    return parameters == ["self", "tensor_inputs", "captured_inputs"]


FLAT_CALL_OK = _flat_call_ok()

# `current_writer()` when TensorFlow's summary state cannot be read.
UNKNOWN_WRITER = "unknown"


def current_writer():
    """The default summary writer now, None if there is none, or UNKNOWN_WRITER."""
    try:
        from tensorflow.python.ops import summary_ops_v2  # pylint: disable=import-outside-toplevel
        return summary_ops_v2._summary_state.writer  # pylint: disable=protected-access
    except (ImportError, AttributeError):
        return UNKNOWN_WRITER


def writer_closed(writer):
    """Whether `writer.close()` ran; TensorFlow keeps that in a private flag (False when it has none)."""
    return bool(getattr(writer, "_closed", False))


def call_flat(concrete, tensors, flat_ok=None):
    """Calls a concrete function with the flat tensors it was traced for.

    `ConcreteFunction.__call__` binds and type-checks each argument against
    the signature again: ~10 µs per tensor, 2.5 ms for 300 gradients, where
    the flat call takes 0.4 ms.

    Args:
      concrete: a `ConcreteFunction` traced for `tensors`' specs.
      tensors: the flat list of input tensors.
      flat_ok: use the private flat call; None means "if its signature is known".
    """
    if FLAT_CALL_OK if flat_ok is None else flat_ok:
        return concrete._call_flat(tensors, concrete.captured_inputs)  # pylint: disable=protected-access
    return concrete(*tensors)


def flatten(grads, kinds):
    """Gradients as flat tensors, and how many tensors each row has (0 for None / not given)."""
    flat, parts = [], []
    for grad, kind in zip(grads, kinds):
        if kind == measure.DENSE:
            pieces = [grad]
        elif kind == measure.SPARSE:
            pieces = [grad.values, grad.indices] + ([] if grad.dense_shape is None else [grad.dense_shape])
        else:
            pieces = []
        flat.extend(pieces)
        parts.append(len(pieces))
    return flat, tuple(parts)


def unflatten(tensors, kinds, parts):
    grads = []
    for kind, count in zip(kinds, parts):
        pieces, tensors = tensors[:count], tensors[count:]
        if kind == measure.DENSE:
            grads.append(pieces[0])
        elif kind == measure.SPARSE:
            grads.append(tf.IndexedSlices(*pieces))
        else:
            grads.append(None)
    return grads


class TraceCache:
    """Concrete functions of `body(step, grads, kinds, extra_key)` keyed by gradient layout.

    Args:
      body: builds the record's ops; called at trace time with a 0-d int64
        step (or None), the gradients per row, their kinds and the key's
        `extra` part. Returns a tensor, which the call returns.
    """

    def __init__(self, body):
        self._body = body
        self._functions = {}

    def __len__(self):
        return len(self._functions)

    def clear(self):
        self._functions = {}

    def call(self, step, grads, kinds, extra=()):
        flat, parts = flatten(grads, kinds)
        key = (step is not None, kinds, parts, tuple(t.dtype for t in flat), extra)
        function = self._functions.get(key)
        if function is None:
            function = self._functions[key] = self._trace(step is not None, kinds, parts, flat, extra)
        return call_flat(function, ([step] if step is not None else []) + flat)

    def _trace(self, has_step, kinds, parts, flat, extra):
        specs, position = [tf.TensorSpec([], tf.int64)] if has_step else [], 0
        for kind, count in zip(kinds, parts):
            for offset, tensor in enumerate(flat[position:position + count]):
                shape = tensor.shape
                if kind == measure.SPARSE and offset < 2:
                    shape = [None] + shape.as_list()[1:]  # a different number of rows each step
                specs.append(tf.TensorSpec(shape, tensor.dtype))
            position += count

        def run(*args):
            step, tensors = (args[0], list(args[1:])) if has_step else (None, list(args))
            return self._body(step, unflatten(tensors, kinds, parts), kinds, extra)

        return tf.function(run, autograph=False).get_concrete_function(*specs)
