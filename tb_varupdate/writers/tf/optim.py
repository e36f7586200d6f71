"""What the Keras callback records about the optimizers: which one updates each variable, and its learning rate.

The callback sees every optimizer `apply` of the train step while it is
traced (`_fit.FitHooks`), so it knows which optimizer each variable went to;
each record then carries those optimizers' current learning rates in its
header's slots and each variables entry its optimizer's slot (`lr_slot`,
docs/FORMAT.md). A verdict can then say "the learning rate is 0" or
"updates round away in bfloat16" instead of listing both. The entries also
say that the callback wrote them (`via`), so the advice is for `fit`.
"""

import threading

import tensorflow as tf

from tb_varupdate.format import metadata as md
from tb_varupdate.format import variables as vr


def mark_fit(tracker):
    """Marks the tracker's entries as written by the Keras callback (`via` "fit"), with live trainable flags.

    Called before the first trace, so every trace reads the flags from a
    variable that `refresh_trainable` sets at the start of each fit.
    """
    variables = tracker._variables  # pylint: disable=protected-access
    recorder = tracker._recorder  # pylint: disable=protected-access
    if variables.via != vr.VIA_FIT:
        variables.via = vr.VIA_FIT
        recorder.reencode()
    if recorder.live_trainable is None:
        with tf.init_scope():
            recorder.live_trainable = tf.Variable(tf.zeros([0], tf.bool), shape=tf.TensorShape([None]),
                                                  trainable=False, name="varupdate_trainable")


def refresh_trainable(tracker):
    """At the start of a fit: the records' trainable flags are the variables' flags now."""
    recorder = tracker._recorder  # pylint: disable=protected-access
    if recorder.live_trainable is not None:
        mask = tracker._variables.trainable_mask()  # pylint: disable=protected-access
        with tf.init_scope():
            recorder.live_trainable.assign(tf.constant(mask, tf.bool, shape=[len(mask)]))


def read_learning_rates(tracker, optimizers):
    """Makes each record hold the learning rates of `optimizers` (the first LEARNING_RATE_SLOTS), in order."""
    optimizers = list(optimizers)[:md.LEARNING_RATE_SLOTS]
    tracker._recorder.learning_rates = [  # pylint: disable=protected-access
        (lambda optimizer=optimizer: optimizer.learning_rate) for optimizer in optimizers
    ]


def note_apply(tracker, optimizers, optimizer, variables):
    """At trace time: `optimizer` applies gradients to `variables`; gives them its slot.

    Re-encodes the variables record when a slot changed, before the step's
    record ops are built (they capture it).
    """
    slots = {id(o): index for index, o in enumerate(optimizers[:md.LEARNING_RATE_SLOTS])}
    slot = slots.get(id(optimizer))
    if slot is None:
        return
    tracked_vars = tracker._variables  # pylint: disable=protected-access
    changed = False
    for variable in variables:
        index = tracked_vars.index_of(variable)
        if index is None:
            continue
        tracked = tracked_vars.tracked[index]
        if tracked.lr_slot != slot:
            tracked.lr_slot = slot
            changed = True
    if changed:
        tracker._recorder.reencode()  # pylint: disable=protected-access


class watch_gradients:  # pylint: disable=invalid-name  (used as a context manager)
    """While the train step is traced: notes which variables any `tf.GradientTape.gradient` was asked about.

    Evidence the record alone lacks: a distillation teacher or a target
    network is used in the step but never differentiated, while a variable
    whose gradient was taken and then never applied (one model's gradients
    zipped with another's variables) is a bug. Each entry gets
    `differentiated` (docs/FORMAT.md) when the trace ends. Only tracing runs
    this; the traced step is unchanged.

    Args:
      tracker: the callback's `VariableUpdateTracker`.
    """

    _lock = threading.Lock()
    _depth = 0
    _original = None
    _sinks = []

    def __init__(self, tracker):
        self._tracker = tracker
        self._seen = set()

    @classmethod
    def _gradient(cls, tape, target, sources, *args, **kwargs):
        for sink in list(cls._sinks):
            for source in tf.nest.flatten(sources, expand_composites=False):
                sink.add(id(source))
                sink.add(id(getattr(source, "value", source)))
        return cls._original(tape, target, sources, *args, **kwargs)

    def __enter__(self):
        cls = type(self)
        with cls._lock:
            if cls._depth == 0:
                cls._original = tf.GradientTape.gradient
                tf.GradientTape.gradient = lambda tape, target, sources, *a, **k: cls._gradient(
                    tape, target, sources, *a, **k)
            cls._depth += 1
            cls._sinks.append(self._seen)
        return self

    def __exit__(self, *exc_info):
        cls = type(self)
        with cls._lock:
            cls._sinks.remove(self._seen)
            cls._depth -= 1
            if cls._depth == 0:
                tf.GradientTape.gradient = cls._original
        if exc_info[0] is None:
            self._mark()
        return False

    def _mark(self):
        # Variables a lazily built model created in this very step are tracked first.
        self._tracker._refresh()  # pylint: disable=protected-access
        variables = self._tracker._variables  # pylint: disable=protected-access
        changed = False
        for tracked in variables.tracked:
            differentiated = id(tracked.source) in self._seen or id(tracked.variable) in self._seen
            # Once differentiated in any trace, it stays so: a later trace may skip a branch.
            if tracked.differentiated is not True and tracked.differentiated != differentiated:
                tracked.differentiated = differentiated
                changed = True
        if changed:
            self._tracker._recorder.reencode()  # pylint: disable=protected-access
