"""Whether a low-precision weight's updates round away, with the sizes that show it. Pure.

A weight stored in bfloat16 keeps 8 significant bits: near |w| its values are
about 2^-8 |w| apart, and `w - lr * g` rounds back to `w` whenever the step is
under half that spacing. Pure-bf16 training (no float32 master weights, no
stochastic rounding) then stalls with every gradient present and the
optimizer stepping. The record holds what it takes to tell (docs/FORMAT.md):
the dtype, the value and gradient norms, the element count and, where the
writer knew it, the learning rate; `diagnosis` words it. No framework import.
"""

import math

# Stored mantissa bits per dtype name (as the writers spell them): a value in
# [2^e, 2^(e+1)) has neighbours 2^(e - bits) away.
MANTISSA_BITS = {
    "bfloat16": 7,
    "float16": 10,
    "half": 10,
    "float8_e4m3fn": 3,
    "float8_e5m2": 2,
    "float32": 23,
}
# Dtypes whose rounding stalls training at ordinary learning rates.
LOW_PRECISION = frozenset(("bfloat16", "float16", "half", "float8_e4m3fn", "float8_e5m2"))


def is_low_precision(dtype):
    return str(dtype) in LOW_PRECISION


def spacing(dtype, magnitude):
    """The distance between neighbouring `dtype` numbers near `magnitude` (> 0), or None."""
    bits = MANTISSA_BITS.get(str(dtype))
    if bits is None or not magnitude or not math.isfinite(magnitude) or magnitude <= 0:
        return None
    return 2.0 ** (math.floor(math.log2(magnitude)) - bits)


class Sizes:
    """The typical sizes of one row: |w| and |g| per element, the step and the spacing.

    Attributes:
      weight: root-mean-square |w| (value norm / sqrt(elements)), or None.
      grad: root-mean-square |g| of the newest gradient, or None.
      lr: the learning rate recorded at the newest record, or None.
      step: lr * grad, the typical plain-SGD step per element (an adaptive
        optimizer such as Adam steps about lr), or None.
      spacing: the dtype's spacing near `weight`, or None.
    """

    def __init__(self, row, learning_rate):
        elements = 1
        for dim in row["shape"] or ():
            elements *= dim if dim else 1
        root = math.sqrt(max(elements, 1))
        value, grad = row.get("value_l2"), row.get("gradient_l2")
        self.weight = value / root if value else None
        self.grad = grad / root if grad else None
        self.lr = learning_rate
        self.step = learning_rate * self.grad if learning_rate is not None and self.grad is not None else None
        self.spacing = spacing(row["dtype"], self.weight) if self.weight else None

    @property
    def rounds_away(self):
        """Whether the step rounds away: "yes", "no", "sgd" / "adaptive" (only that kind of optimizer's), or None.

        A plain SGD step is lr * |g|, an adaptive one (Adam) about lr; the
        record does not say which optimizer ran, so where the two disagree the
        answer names the kind whose step rounds away. None when the record
        cannot tell (no learning rate, gradient or value).
        """
        if self.step is None or self.spacing is None:
            return None
        half = self.spacing / 2
        sgd, adaptive = self.step < half, self.lr < half
        if sgd and adaptive:
            return "yes"
        if not sgd and not adaptive:
            return "no"
        return "sgd" if sgd else "adaptive"

    def describe(self, dtype):
        """The sizes as a clause: step vs half the spacing near |w|."""
        text = "half the %s spacing near its typical |w| of %.2g is %.1e" % (dtype, self.weight, self.spacing / 2)
        if self.step is not None:
            text += ", while lr * |g| per element is %.1e (learning rate %.1e)" % (self.step, self.lr)
        return text


# The fixes, in the words of each framework (keys: `format.variables.FRAMEWORKS`).
FIXES = {
    "torch": (
        "keep float32 master weights (a float32 model under `torch.autocast(dtype=torch.bfloat16)` "
        "computes in bfloat16 and updates in float32), raise the learning rate, or use stochastic "
        "rounding or a compensated (Kahan-summation) optimizer"
    ),
    "tensorflow": (
        "keep float32 variables (the `mixed_bfloat16` / `mixed_float16` dtype policy computes in "
        "low precision and keeps variables in float32, unlike `bfloat16`), raise the learning "
        "rate, or use stochastic rounding or a compensated (Kahan-summation) optimizer"
    ),
}


def rounding_cause(row, learning_rate, framework="torch", tiny=False):
    """The rounding sentence of a never-changed or tiny-update low-precision row, or None.

    None when the dtype is not low precision, or when the recorded sizes show
    that the step is large enough not to round away.

    Args:
      row: the verdict row (dtype, shape, value_l2, gradient_l2).
      learning_rate: the recorded learning rate, or None when the record holds none.
      framework: whose fixes to name ("torch" or "tensorflow").
      tiny: the row changed a little (`tiny_updates`): most steps round away.
    """
    fixes = FIXES.get(framework, FIXES["torch"])
    dtype = row["dtype"]
    low = is_low_precision(dtype)
    sizes = Sizes(row, learning_rate)
    if sizes.spacing is None:
        return None
    verdict = sizes.rounds_away
    # float32 rounds a step away only when it is absurdly small for any
    # optimizer; then rounding is how, and the small step is the cause.
    if verdict == "no" or (not low and verdict in (None, "adaptive")):
        return None
    if verdict is None:
        return (
            "it is stored in %s, where updates smaller than half the spacing of %s numbers "
            "near |w| round away (%s); the record holds no learning rate, so it cannot tell "
            "this from an update that was never applied. If the optimizer does step it: %s"
            % (dtype, dtype, "half the spacing near its typical |w| of %.2g is %.1e" % (sizes.weight, sizes.spacing / 2),
               fixes)
        )
    if not low:
        # No dtype to blame: the step itself is far too small (the caller says why it may be).
        return "its step is below float32's resolution and rounds away: %s" % sizes.describe(dtype)
    which = {
        "yes": "",
        "sgd": " with a plain SGD step (an adaptive optimizer such as Adam steps about lr, which would not round away)",
        "adaptive": " with an adaptive optimizer such as Adam, which steps about lr (a plain SGD step would not round away)",
    }[verdict]
    result = "`w - lr * g` rounds back to `w`"
    if tiny:
        result += " for most elements (only those near 0, where the spacing is finer, move)"
    return (
        "updates smaller than the weight's %s spacing are rounded away%s: %s, so %s. Fix: %s"
        % (dtype, which, sizes.describe(dtype), result, fixes)
    )
