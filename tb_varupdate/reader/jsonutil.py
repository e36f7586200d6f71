"""JSON for the routes: NaN and Inf as null, compact bytes, rounded floats. Pure NumPy.

docs/HTTP_API.md promises `null` for numbers that are not finite and sends
float32 measurements rounded to what they hold; these helpers do both
without walking large documents more than once.
"""

import json
import math

import numpy as np

def json_safe(value):
    """`value` with NaN and Inf floats (also inside lists and dicts) as None.

    TensorBoard's `Respond` would send them as the strings "NaN" and
    "Infinity"; docs/HTTP_API.md promises `null`.
    """
    # Exact types first: a verdicts document of 2,000 variables holds ~60,000
    # values, and most are str, int or bool.
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float or isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, np.generic):
        return json_safe(value.item())
    return value


def encode_json(document):
    """`document` as compact JSON bytes, NaN and Inf sent as null (see `json_safe`).

    The plugin answers with these bytes, so TensorBoard's `Respond` does not
    walk the document again (its `Cleanse` pass) before encoding it.
    """
    try:
        text = json.dumps(document, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError):
        # A NaN or a NumPy scalar somewhere: the exact pass, only when needed.
        text = json.dumps(json_safe(document), allow_nan=False, separators=(",", ":"))
    return text.encode("ascii")


def nan_to_none(matrix):
    """`matrix.tolist()` with None for NaN and Inf, without a Python pass per cell."""
    matrix = np.asarray(matrix, dtype=np.float64)
    cells = matrix.astype(object)
    cells[~np.isfinite(matrix)] = None
    return cells.tolist()


def round_significant(values, digits):
    """`values` rounded to `digits` significant digits (NaN, Inf and 0 kept).

    Float32 measurements widened to float64 print as 0.10000000149011612;
    rounding to what float32 holds (7 digits) or what a colour shows (4)
    halves the JSON without losing information.
    """
    values = np.asarray(values, dtype=np.float64)
    magnitude = np.abs(values)
    usable = np.isfinite(values) & (magnitude > 0)
    exponent = np.floor(np.log10(np.where(usable, magnitude, 1.0)))
    scale = 10.0 ** (digits - 1 - exponent)
    return np.where(usable, np.round(values * scale) / scale, values)

