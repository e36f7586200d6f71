"""Matching the gradients given to `log()` to the tracked rows, and the advice when they do not fit.

Gradients come as `(gradient, variable)` pairs (matched by the variable's
identity) or as a bare list (by position, aligned with all or with the
trainable tracked variables). Each gradient is checked against its variable
before any op is built: a gradient whose shape or dtype does not fit is
recorded as not given, with one warning that names the pair, rather than
giving a confident wrong verdict or a raw graph error; pairs naming one
variable twice keep the last gradient, with one warning. Under
`tf.distribute`, a per-replica gradient is read from the first replica.
"""

import tensorflow as tf

from tb_varupdate.writers.tf import measure
from tb_varupdate.writers.tf.variables import display_name, is_variable


def first_replica(value):
    """The first local replica's value of a `tf.distribute` per-replica value; other values as they are."""
    # A distributed variable is one tracked variable, matched as a whole.
    if isinstance(value, tf.distribute.DistributedValues) and not isinstance(value, tf.Variable):
        return value.values[0]
    return value


class Matcher:
    """Turns `log(gradients=...)` into one gradient and kind per row.

    Args:
      variables: the tracker's `variables.Variables`.
      warn: a `common.Warnings`.

    Attributes:
      given: gradients (not None) passed to `log()` so far.
      matched: of those, the ones recorded against a row.
    """

    def __init__(self, variables, warn):
        self._variables = variables
        self._warn = warn
        self.given = 0
        self.matched = 0
        self._fits = {}  # (row, sparse, dtype) -> (shape, kind) of the gradient checked last

    def match(self, gradients):
        """Returns (gradients per row, kinds per row as a tuple of measure.* kinds)."""
        tracked = self._variables.tracked
        count = len(tracked)
        grads, given = [None] * count, [False] * count
        if gradients is not None:
            items = list(gradients)
            if items and all(isinstance(item, (tuple, list)) and len(item) == 2 for item in items):
                positions, twice = {}, []  # row -> the pair that gave its gradient; (row, pair, later pair)
                for position, (grad, variable) in enumerate(items):
                    grad, variable = first_replica(grad), first_replica(variable)
                    index = self._variables.index_of(variable)
                    if index is None:
                        self._explain_unmatched(position, grad, variable)
                        continue
                    if index in positions:
                        twice.append((index, positions[index], position))
                    grads[index], given[index] = grad, True
                    positions[index] = position
                if twice:
                    self._explain_duplicates(twice)
            else:
                items = [first_replica(item) for item in items]
                trainable = [i for i, t in enumerate(tracked) if t.trainable]
                if len(items) == count:
                    order = range(count)
                elif len(items) == len(trainable):
                    order = trainable
                else:
                    self._warn.once(
                        "grad-length",
                        "tb_varupdate: log(gradients=...) got %d gradients but tracks %d "
                        "variables (%d trainable); pass them aligned with the tracked or "
                        "trainable variables, or as (gradient, variable) pairs. Gradients "
                        "are recorded as not given." % (len(items), count, len(trainable)),
                    )
                    order = ()
                for index, grad in zip(order, items):
                    grads[index], given[index] = grad, True
            self.given += sum(1 for item in items if not isinstance(item, (tuple, list)) or item[0] is not None)
        kinds = []
        for index, (grad, was_given) in enumerate(zip(grads, given)):
            kind = self._kind(index, grad) if was_given else measure.NOT_GIVEN
            if kind in (measure.DENSE, measure.SPARSE):
                self.matched += 1
            if kind == measure.DENSE and not isinstance(grad, tf.Tensor):
                grads[index] = tf.convert_to_tensor(grad)
            kinds.append(kind)
        return grads, tuple(kinds)

    def _kind(self, index, grad):
        """The kind of a given gradient, or NOT_GIVEN (with a warning) when it does not fit its variable."""
        if grad is None:
            return measure.NONE
        sparse = isinstance(grad, tf.IndexedSlices)
        values = grad.values if sparse else grad
        if not isinstance(values, tf.Tensor):
            try:
                values = tf.convert_to_tensor(values)
            except (TypeError, ValueError) as err:
                return self._misfit(self._variables.tracked[index], "is not a tensor (%s: %s)" % (type(grad).__name__, err))
        # The checks below cost ~10 µs a gradient: done once per row, dtype and shape.
        key = (index, sparse, values.dtype, values.shape if not sparse else values.shape[1:])
        known = self._fits.get(key[:3])
        if known is not None and known[0] == key[3]:
            return known[1]
        kind = self._check(index, values, sparse)
        self._fits[key[:3]] = (key[3], kind)
        return kind

    def _check(self, index, values, sparse):
        tracked = self._variables.tracked[index]
        if not (values.dtype.is_floating or values.dtype.is_complex):
            return self._misfit(tracked, "has dtype %s, expected a float gradient for this %s variable" % (
                values.dtype.name, tracked.dtype.name))
        shape = values.shape
        expected = tracked.shape
        if sparse:
            shape, expected = shape[1:], expected[1:] if expected.rank else expected
        if not shape.is_compatible_with(expected):
            return self._misfit(tracked, "has shape %s, expected %s (the variable's%s)%s" % (
                shape, expected, " row shape" if sparse else "",
                "; gradients given as a list are matched by position: pass (gradient, variable) "
                "pairs, e.g. zip(grads, variables), to match them by variable" if not sparse else ""))
        return measure.SPARSE if sparse else measure.DENSE

    def _misfit(self, tracked, what):
        self._warn.once(
            "misfit:%s" % tracked.name,
            "tb_varupdate: the gradient given for %r %s. It is recorded as not given for this "
            "variable." % (tracked.name, what),
        )
        return measure.NOT_GIVEN

    def _explain_duplicates(self, twice):
        # A row holds one gradient: the last pair's is kept, and the warning says
        # which pairs were dropped (a variable listed twice, or in two optimizers).
        shown = ["pairs #%d and #%d both name variable %r" % (first, later, self._variables.tracked[index].name)
                 for index, first, later in twice[:5]]
        self._warn.once(
            "duplicate",
            "tb_varupdate: log(gradients=...) got a variable more than once: %s%s. A record holds one "
            "gradient per variable, so the last pair's gradient is recorded and the earlier ones are "
            "dropped. Pass each variable once (sum its gradients first if both are applied)."
            % ("; ".join(shown), " and %d more" % (len(twice) - 5) if len(twice) > 5 else ""),
        )

    def _explain_unmatched(self, position, grad, variable):
        if tf.is_tensor(variable) and not is_variable(variable):
            self._warn.once(
                "rebound",
                "tb_varupdate: gradient pair #%d holds a tf.Tensor where a tracked "
                "variable was expected. The Python name of the variable was likely "
                "rebound with `v = v - lr * g`: that creates a new tensor and leaves the "
                "tf.Variable unchanged, so it never trains. Update it in place with "
                "`v.assign_sub(lr * g)` or `optimizer.apply_gradients([(g, v)])`." % position,
            )
        elif is_variable(variable):
            self._warn.once(
                "untracked:%s" % id(variable),
                "tb_varupdate: gradient pair #%d names a variable this tracker does not "
                "track (%s); it is ignored. Pass it (or its model) to VariableUpdateTracker."
                % (position, display_name(variable)),
            )
        else:
            self._warn.once(
                "pair-order",
                "tb_varupdate: gradient pair #%d is not (gradient, variable): received "
                "(%s, %s). Pass pairs as zip(gradients, variables)."
                % (position, type(grad).__name__, type(variable).__name__),
            )
