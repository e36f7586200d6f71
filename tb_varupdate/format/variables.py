"""The variables record: which variable each row of an updates record is.

`varupdate/<name>/variables` holds a scalar UTF-8 JSON string, written when
the variable set changes: `{"names_hash": ..., "variables": [entry, ...],
"writer_id": ...}`. Entries are only ever appended, so the newest record names
every row of every updates record, and `names_hash` (also in each updates
record's header) lets a reader check that it does. The updates record and the
tags live in `metadata.py`; see docs/FORMAT.md.
"""

import json
import zlib

import numpy as np

from tb_varupdate.format.metadata import FormatError, short_repr


def names_hash(entries):
    """A 31-bit checksum of a variable list, stored in both tags.

    Args:
      entries: the variables record's list of dicts (name and trainable count).

    Returns:
      A non-negative int that fits an int32 column.
    """
    text = "\n".join("%s\t%d" % (e["name"], bool(e["trainable"])) for e in entries)
    return zlib.crc32(text.encode("utf-8")) & 0x7FFFFFFF


# Optional entry "role": what a non-trainable entry is, where the framework knows.
ROLE_PARAMETER = "parameter"  # a parameter (torch `requires_grad=False` when frozen): should not change.
ROLE_BUFFER = "buffer"  # state changed by assignment (BatchNorm running stats): expected to change.
ROLES = (ROLE_PARAMETER, ROLE_BUFFER)

# Optional entry "framework": which writer wrote the entry, so a diagnosis
# never gives a PyTorch row Keras advice (older records: guessed from "role").
FRAMEWORK_TF = "tensorflow"
FRAMEWORK_TORCH = "torch"
FRAMEWORKS = (FRAMEWORK_TF, FRAMEWORK_TORCH)
# Optional entry "via": how the records were written, which decides what
# advice a user can follow ("pass `gradients=` to `log()`" means nothing to a
# `model.fit` user). Absent: unknown (treated as "log").
VIA_FIT = "fit"  # the Keras `VariableUpdateCallback`
VIA_LOG = "log"  # the user's own `log()` calls (or a tracker's `attach`)
VIAS = (VIA_FIT, VIA_LOG)
# Optional entry "lr_slot": the header learning-rate slot
# (`metadata.HEADER_LEARNING_RATES + lr_slot`) of the optimizer (param group)
# that updates the variable; NOT_IN_OPTIMIZER where the writer knew every
# optimizer and the variable is in none. Absent: unknown.
NOT_IN_OPTIMIZER = -1
# Optional entry "differentiated" (Keras callback): whether the train step
# took the variable's gradient (`tf.GradientTape.gradient`) in any trace.
# False marks a model used like a fixed one (a distillation teacher, a target
# network); absent: not watched.


def encode_variables(entries, writer_id=None):
    """The variables record: a JSON document with its own checksum.

    Args:
      entries: list of dicts with keys name, shape (list of int or None),
        dtype (str), trainable (bool: when the variable was first tracked;
        version 3 records carry the current state in TRAINABLE), joined
        (HEADER_LOGGED before the variable's first record), and optionally
        role: ROLE_PARAMETER or ROLE_BUFFER where the framework tells them
        apart (PyTorch; absent for TensorFlow, whose non-trainable variables
        may be either), and optionally zero_init: true for a parameter that
        started at zero by design (LoRA's `lora_B`; PyTorch only), and
        optionally framework (FRAMEWORKS), via (VIAS) and lr_slot (a header
        learning-rate slot, or NOT_IN_OPTIMIZER).
      writer_id: the writing tracker's HEADER_WRITER_ID, or None.

    Returns:
      (json_bytes, names_hash).
    """
    digest = names_hash(entries)
    document = {"names_hash": digest, "variables": entries}
    if writer_id is not None:
        document["writer_id"] = int(writer_id)
    return json.dumps(document, separators=(",", ":")).encode("utf-8"), digest


_ENTRY_KEYS = ("name", "shape", "dtype", "trainable", "joined")


class Variables:
    """One parsed variables record.

    Attributes:
      entries: list of entry dicts (see `encode_variables`), types checked.
      names_hash: the record's checksum.
      writer_id: the document's `writer_id`, or None (older writers).
    """

    __slots__ = ("entries", "names_hash", "writer_id")

    def __init__(self, entries, names_hash, writer_id):
        self.entries = entries
        self.names_hash = names_hash
        self.writer_id = writer_id


def _is_int(value):
    return type(value) is int  # pylint: disable=unidiomatic-typecheck  (bool is not a count)


def _entry_problem(entry):
    """Why `entry` is not a valid variables entry, or None."""
    if not isinstance(entry, dict):
        return "an entry is not an object"
    missing = [key for key in _ENTRY_KEYS if key not in entry]
    if missing:
        return "an entry lacks %s" % ", ".join(missing)
    if not isinstance(entry["name"], str):
        return "a name is not a string"
    shape = entry["shape"]
    if shape is not None and not (
        isinstance(shape, list) and all(dim is None or (_is_int(dim) and dim >= 0) for dim in shape)
    ):
        return "a shape is not a list of sizes"
    if not isinstance(entry["dtype"], str):
        return "a dtype is not a string"
    if not isinstance(entry["trainable"], (bool, int)):
        return "trainable is not a boolean"
    if not _is_int(entry["joined"]) or entry["joined"] < 0:
        return "joined is not a record count"
    if "role" in entry and entry["role"] not in ROLES:
        return "role is not one of %s" % ", ".join(ROLES)
    if "zero_init" in entry and not isinstance(entry["zero_init"], bool):
        return "zero_init is not a boolean"
    if "framework" in entry and entry["framework"] not in FRAMEWORKS:
        return "framework is not one of %s" % ", ".join(FRAMEWORKS)
    if "via" in entry and entry["via"] not in VIAS:
        return "via is not one of %s" % ", ".join(VIAS)
    if "differentiated" in entry and not isinstance(entry["differentiated"], bool):
        return "differentiated is not a boolean"
    if "lr_slot" in entry and not (_is_int(entry["lr_slot"]) and NOT_IN_OPTIMIZER <= entry["lr_slot"] < 64):
        return "lr_slot is not a slot number"
    return None


def parse_variables_record(value):
    """Parses a variables record (bytes, str or a 0-d array of them) into `Variables`.

    Raises:
      FormatError: the value is not the JSON document `encode_variables`
        writes, with entries of the documented types. Nothing else, whatever
        `value` is.
    """
    if isinstance(value, np.ndarray):
        if value.shape != ():
            raise FormatError("a variables record must be a scalar string. Received: shape=%s" % (value.shape,))
        value = value.item()
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogatepass")
    if not isinstance(value, (bytes, bytearray, memoryview)):
        # Never bytes(value): bytes(2**50) would try to allocate a petabyte.
        raise FormatError(
            "a variables record must be a scalar string. Received: %s %s"
            % (type(value).__name__, short_repr(value))
        )
    value = bytes(value)
    problem = None
    try:
        document = json.loads(value.decode("utf-8"))
        if not isinstance(document, dict):
            problem = "not a JSON object"
        elif not isinstance(document.get("variables"), list):
            problem = "no variables list"
        elif not _is_int(document.get("names_hash")):
            problem = "no integer names_hash"
        elif "writer_id" in document and not _is_int(document["writer_id"]):
            problem = "writer_id is not an integer"
        else:
            problem = next(filter(None, map(_entry_problem, document["variables"])), None)
    except (ValueError, TypeError, RecursionError) as err:
        problem = "not UTF-8 JSON (%s)" % type(err).__name__
    if problem is not None:
        raise FormatError(
            "a variables record must be JSON with names_hash and variables "
            "(each with %s): %s. Received: %r" % (", ".join(_ENTRY_KEYS), problem, value[:120])
        )
    return Variables(document["variables"], document["names_hash"], document.get("writer_id"))


def parse_variables(value):
    """Parses a variables record (bytes, str or a 0-d object array).

    Returns:
      (entries, names_hash): the list of variable dicts and the checksum
      (`parse_variables_record` also gives the writer id).

    Raises:
      FormatError: the value is not the JSON document `encode_variables` writes.
    """
    parsed = parse_variables_record(value)
    return parsed.entries, parsed.names_hash
