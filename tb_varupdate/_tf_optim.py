"""What the Keras callback records about the optimizers: which one updates each variable, and its learning rate.

The callback sees every optimizer `apply` of the train step while it is
traced (`_fit.FitHooks`), so it knows which optimizer each variable went to;
each record then carries those optimizers' current learning rates in its
header's slots and each variables entry its optimizer's slot (`lr_slot`,
docs/FORMAT.md). A verdict can then say "the learning rate is 0" or
"updates round away in bfloat16" instead of listing both. The entries also
say that the callback wrote them (`via`), so the advice is for `fit`.
"""

import tensorflow as tf

from tb_varupdate import metadata as md
from tb_varupdate import variables_record as vr


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
