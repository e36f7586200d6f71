"""The `varupdate` record format: plugin name, version, tags, the updates record.

With `variables.py` (the other record), the only place that knows how
records are laid out. The writers build records with the constants and
encoders here; the backend and the CLI parse them with `parse_plugin_content`
and `parse_updates`. No TensorFlow import: TensorBoard loads this module at
start-up. See docs/FORMAT.md.

Each tracker writes two tags:

* `varupdate/<name>` ("updates"): one record per `log()` call, an int32 tensor
  of shape [1 + V, NUM_COLUMNS]. Row 0 is a header; row 1 + i describes
  variable i. Float columns hold IEEE-754 float32 bit patterns so that one
  tensor (one summary write) carries exact integer counters and measurements
  at 4 bytes a value.
* `varupdate/<name>/variables` ("variables"): a scalar UTF-8 JSON string that
  names the rows, written only when the variable set changes. Variables are
  only ever appended, so the newest variables record names every row of every
  updates record; `names_hash` in both lets a reader verify it. Built and
  parsed by `variables.py`.

Every updates row carries cumulative counters, so the newest record alone
gives an exact verdict however TensorBoard downsampled the older ones.
"""

import json

import numpy as np

from tensorboard.compat.proto import summary_pb2

from tb_varupdate.errors import VarUpdateError

PLUGIN_NAME = "varupdate"
# 2: DELTA_MAX_ABS dropped (a pass over every variable, never shown), 14 columns.
# 3: TRAINABLE per record (freeze/unfreeze mid-run), header fields for the
#    writer's identity, steps that did not grow and non-finite gradient runs.
# 4: two columns of replica checks (REPLICA_SPREAD, FIRST_DIVERGED_STEP),
#    written only by trackers under torch.distributed; every other writer
#    still writes version 3.
FORMAT_VERSION = 3
REPLICAS_VERSION = 4
# Versions this reader parses. A tag's metadata is kept from its first event
# only, so the version of each updates record is told by its column count.
READABLE_VERSIONS = (2, 3, 4)

KIND_UPDATES = "updates"
KIND_VARIABLES = "variables"
TAG_PREFIX = PLUGIN_NAME + "/"
VARIABLES_TAG_SUFFIX = "/variables"

# Header row (row 0) columns.
HEADER_LOGGED = 0  # log() calls recorded by this tracker so far.
HEADER_NAMES_HASH = 1  # `names_hash` of the variables record naming the rows.
HEADER_EVERY_N = 2  # the tracker's `every_n_steps`.
# Version 3 header fields (0 in version 2 records):
HEADER_WRITER_ID = 3  # a random 31-bit id of the tracker object that wrote the record.
HEADER_STEP_REGRESSIONS = 4  # records whose step was not greater than the previous record's.
# `logged` at the newest record whose given gradients were all finite (0 if none):
# `logged - this` records in a row have had a non-finite gradient.
HEADER_LOGS_AT_LAST_FINITE_GRADS = 5
# Header columns 6.. hold float32 bit patterns of learning rates, one per
# "slot" (an optimizer, or a PyTorch param group), read on the host when the
# record was taken; a variables entry's `lr_slot` says which one updates it.
# Writers before them left these columns 0, and wrote no `lr_slot`, so a
# reader uses a slot only where an entry names it.
HEADER_LEARNING_RATES = 6
LEARNING_RATE_SLOTS = 9


# Variable row columns. "f32" columns hold float32 bit patterns.
DELTA_L2 = 0  # f32: ||w_now - w_prev||, since the previous record.
VALUE_L2 = 1  # f32: ||w_now||.
GRAD_L2 = 2  # f32: gradient norm at this step, or a GRAD_* sentinel below.
CHANGED_STEPS = 3  # records in which the variable changed.
FIRST_UPDATE_STEP = 4  # step of the first change, -1 if none.
LAST_UPDATE_STEP = 5  # step of the latest change, -1 if none.
LOGS_AT_LAST_UPDATE = 6  # HEADER_LOGGED at the latest change, 0 if none.
GRAD_PRESENT_STEPS = 7  # records whose gradient was finite and non-zero.
GRAD_NONE_STEPS = 8  # records whose gradient was None (disconnected).
GRAD_ZERO_STEPS = 9  # records whose gradient was exactly zero.
GRAD_NON_FINITE_STEPS = 10  # records whose gradient held NaN or Inf.
FIRST_NON_FINITE_STEP = 11  # step the value first held NaN/Inf, -1 if never.
MAX_RELATIVE_UPDATE = 12  # f32: max over records of DELTA_L2 / VALUE scale.
ROWS_CHANGED = 13  # rows (first axis) changed at least once; -1 if not tracked.
TRAINABLE = 14  # 1 if the variable was trainable at this record, else 0 (version 3).
NUM_COLUMNS = 15
NUM_COLUMNS_V2 = 14  # version 2 records: no TRAINABLE column.
# Version 4 records append two columns to version 3's NUM_COLUMNS:
REPLICA_SPREAD = 15  # f32: largest difference between ranks' fingerprints of the value seen; NaN if never compared.
FIRST_DIVERGED_STEP = 16  # step of the first replica check whose ranks differed, -1 if none.
NUM_COLUMNS_V4 = 17

FLOAT_COLUMNS = (DELTA_L2, VALUE_L2, GRAD_L2, MAX_RELATIVE_UPDATE)

# GRAD_L2 sentinels. A norm is >= 0, so negative values are free to mean states.
GRAD_NOT_GIVEN = -2.0  # log() got no gradient for this variable.
GRAD_NONE = -1.0  # the gradient was None.
# A non-finite gradient is written as +inf; an all-zero one as 0.0.

# Gradient states per record, as the series route reports them.
GRAD_STATE_PRESENT = "present"
GRAD_STATE_ZERO = "zero"
GRAD_STATE_NONE = "none"
GRAD_STATE_NON_FINITE = "non_finite"
GRAD_STATE_NOT_GIVEN = "not_given"


class FormatError(VarUpdateError, ValueError):
    """A record that is not a valid `varupdate` record of a known version."""


def updates_tag(name):
    """The updates tag of the tracker called `name`."""
    return TAG_PREFIX + name


def variables_tag(name):
    """The variables tag of the tracker called `name`."""
    return TAG_PREFIX + name + VARIABLES_TAG_SUFFIX


def create_summary_metadata(kind, version=FORMAT_VERSION):
    """A `SummaryMetadata` for a record of `kind` (KIND_UPDATES or KIND_VARIABLES) of format `version`.

    `data_class` must be set: TensorBoard only fills it in for its built-in
    plugins, and without it neither loader serves the tensors.
    """
    if kind not in (KIND_UPDATES, KIND_VARIABLES):
        raise ValueError(
            "kind must be %r or %r. Received: kind=%r"
            % (KIND_UPDATES, KIND_VARIABLES, kind)
        )
    content = json.dumps({"version": version, "kind": kind}).encode("utf-8")
    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name=PLUGIN_NAME, content=content
        ),
        data_class=summary_pb2.DATA_CLASS_TENSOR,
    )


def parse_plugin_content(content):
    """The record kind from a tag's plugin content bytes.

    Raises:
      FormatError: the content is not JSON of this plugin, or its version is
        not one of READABLE_VERSIONS. Nothing else, whatever `content` is.
    """
    if isinstance(content, str):
        content = content.encode("utf-8", "surrogatepass")
    if not isinstance(content, (bytes, bytearray, memoryview)):
        raise FormatError("plugin content must be bytes. Received: %s" % type(content).__name__)
    content = bytes(content)
    try:
        parsed = json.loads(content.decode("utf-8"))
        version, kind = parsed["version"], parsed["kind"]
    except (ValueError, TypeError, KeyError, IndexError, RecursionError) as err:
        raise FormatError(
            "plugin content is not a varupdate header. Received: %r" % content[:80]
        ) from err
    if type(version) is not int or version not in READABLE_VERSIONS:  # pylint: disable=unidiomatic-typecheck
        # `type(...) is int`: JSON true is a bool, which is an int subclass.
        older = type(version) is int and version < min(READABLE_VERSIONS)  # pylint: disable=unidiomatic-typecheck
        raise FormatError(
            "record format version %s is not supported (this tb-varupdate reads "
            "versions %s); %s" % (
                short_repr(version), ", ".join(str(v) for v in READABLE_VERSIONS),
                "it was written by an older tb-varupdate: train again to rewrite it, or read "
                "it with the version that wrote it." if older else "upgrade tb-varupdate to read it.",
            )
        )
    if not isinstance(kind, str) or kind not in (KIND_UPDATES, KIND_VARIABLES):
        raise FormatError("unknown record kind. Received: kind=%s" % short_repr(kind))
    return kind


def short_repr(value, limit=80):
    """repr(value), cut at `limit` characters: error messages quote hostile input."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class Updates:
    """One parsed updates record.

    Attributes:
      version: 2, 3 or 4, from the record's column count.
      logged: records written by the tracker up to this one (HEADER_LOGGED).
      names_hash: checksum of the variables record naming the rows.
      every_n: the tracker's `every_n_steps`.
      writer_id: HEADER_WRITER_ID (0 in version 2 records).
      step_regressions: HEADER_STEP_REGRESSIONS (0 in version 2 records).
      logs_at_last_finite_grads: HEADER_LOGS_AT_LAST_FINITE_GRADS, or None in
        version 2 records.
      ints: int64 array [V, NUM_COLUMNS] of the integer columns (a version 2
        record's TRAINABLE column is -1: read `trainable` from its variables record).
      floats: float64 array [V, NUM_COLUMNS] of the float32 columns (the
        integer columns of this view hold garbage; read them from `ints`).
      trainable: bool array [V] of TRAINABLE, or None in version 2 records.
      replica_spread: float64 array [V] of REPLICA_SPREAD, or None before version 4
        (`ints` and `floats` hold the NUM_COLUMNS columns of version 3 in every version).
      first_diverged: int64 array [V] of FIRST_DIVERGED_STEP, or None before version 4.
      learning_rates: list of LEARNING_RATE_SLOTS floats from the header's
        learning-rate slots (0.0 from writers that did not fill them: read a
        slot only where a variables entry's `lr_slot` names it).
    """

    __slots__ = ("version", "logged", "names_hash", "every_n", "writer_id", "step_regressions",
                 "logs_at_last_finite_grads", "ints", "floats", "trainable", "replica_spread", "first_diverged",
                 "learning_rates")

    def __init__(self, version, header, ints, floats, replicas=None):
        self.version = version
        self.logged = int(header[HEADER_LOGGED])
        self.names_hash = int(header[HEADER_NAMES_HASH])
        self.every_n = int(header[HEADER_EVERY_N])
        self.writer_id = int(header[HEADER_WRITER_ID])
        self.step_regressions = int(header[HEADER_STEP_REGRESSIONS])
        self.logs_at_last_finite_grads = int(header[HEADER_LOGS_AT_LAST_FINITE_GRADS]) if version >= 3 else None
        self.ints = ints
        self.floats = floats
        self.trainable = ints[:, TRAINABLE] > 0 if version >= 3 else None
        self.replica_spread, self.first_diverged = replicas if replicas is not None else (None, None)
        # Meaningful only for the slots a variables entry names (`lr_slot`).
        lr_bits = np.ascontiguousarray(header[HEADER_LEARNING_RATES:HEADER_LEARNING_RATES + LEARNING_RATE_SLOTS])
        self.learning_rates = lr_bits.astype(np.int32).view(np.float32).astype(np.float64).tolist()

    @property
    def num_variables(self):
        return self.ints.shape[0]


def updates_version(array):
    """The format version (2, 3 or 4) of an updates tensor, checked without copying it.

    Raises:
      FormatError: the array does not have dtype int32 and shape
        [1 + V, NUM_COLUMNS] (or [1 + V, NUM_COLUMNS_V2], [1 + V, NUM_COLUMNS_V4]).
    """
    if not isinstance(array, np.ndarray):
        raise FormatError("an updates record must be an int32 array. Received: %s" % type(array).__name__)
    widths = (NUM_COLUMNS, NUM_COLUMNS_V2, NUM_COLUMNS_V4)
    if array.dtype != np.int32 or array.ndim != 2 or array.shape[1] not in widths:
        raise FormatError(
            "an updates record must be int32 of shape [1 + variables, %d] (or %d for "
            "version 2, %d for version 4). Received: dtype=%s, shape=%s"
            % (NUM_COLUMNS, NUM_COLUMNS_V2, NUM_COLUMNS_V4, array.dtype, array.shape)
        )
    if array.shape[0] < 1:
        raise FormatError("an updates record needs its header row. Received: shape=%s" % (array.shape,))
    return {NUM_COLUMNS: 3, NUM_COLUMNS_V2: 2, NUM_COLUMNS_V4: 4}[array.shape[1]]


def parse_updates(array):
    """Parses an updates tensor (as loaded by TensorBoard) into `Updates`.

    Version 3 records have NUM_COLUMNS columns, version 2 ones NUM_COLUMNS_V2;
    a version 2 record is widened with TRAINABLE = -1 (unknown).

    Raises:
      FormatError: the array does not have dtype int32 and shape
        [1 + V, NUM_COLUMNS] (or [1 + V, NUM_COLUMNS_V2]).
    """
    if not isinstance(array, np.ndarray):
        try:
            array = np.asarray(array)
        except Exception as err:  # pylint: disable=broad-except
            # Arbitrary objects can fail to convert in many ways; all are "not a record".
            raise FormatError("an updates record must be an int32 array. Received: %s"
                              % type(array).__name__) from err
    version = updates_version(array)
    if version == 2:
        array = np.concatenate([array, np.full((array.shape[0], 1), -1, np.int32)], axis=1)
        array[0, NUM_COLUMNS_V2:] = 0
    replicas = None
    if version == 4:
        extra = np.ascontiguousarray(array[1:, NUM_COLUMNS:])
        replicas = (extra[:, REPLICA_SPREAD - NUM_COLUMNS].view(np.float32).astype(np.float64),
                    extra[:, FIRST_DIVERGED_STEP - NUM_COLUMNS].astype(np.int64))
        array = array[:, :NUM_COLUMNS]
    header = array[0]
    body = np.ascontiguousarray(array[1:])
    return Updates(version, header, ints=body.astype(np.int64), floats=body.view(np.float32).astype(np.float64),
                   replicas=replicas)


def grad_state(grad_l2):
    """The gradient state names of GRAD_L2 values (vectorised over NumPy arrays).

    Returns:
      An object array of GRAD_STATE_* strings.
    """
    grad_l2 = np.asarray(grad_l2, dtype=np.float64)
    states = np.full(grad_l2.shape, GRAD_STATE_PRESENT, dtype=object)
    states[grad_l2 == 0.0] = GRAD_STATE_ZERO
    states[grad_l2 == GRAD_NONE] = GRAD_STATE_NONE
    states[grad_l2 == GRAD_NOT_GIVEN] = GRAD_STATE_NOT_GIVEN
    states[~np.isfinite(grad_l2)] = GRAD_STATE_NON_FINITE
    return states
