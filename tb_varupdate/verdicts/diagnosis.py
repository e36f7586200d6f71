"""The diagnosis sentence of a verdict row: what happened and what to do. Pure.

Each sentence says only what the record supports. Rows of a PyTorch writer
(an entry's `framework`, or for older records its `role`) name PyTorch
causes, the others TensorFlow/Keras ones; rows the Keras callback wrote (entry
`via` "fit") get advice a `model.fit` user can follow. Where the record holds
the learning rate and whether the variable is in an optimizer (`lr_slot`),
the cause is decided from them rather than listed.
`analysis.verdicts` decides the status; this module only words it.
"""

import math

from tb_varupdate.format import metadata as md
from tb_varupdate.format import variables as vr
from tb_varupdate.verdicts import precision
from tb_varupdate.verdicts import vocabulary as vc

TF, TORCH = vr.FRAMEWORK_TF, vr.FRAMEWORK_TORCH

_NEVER_UPDATED_CAUSE = {
    TF: {
        vc.GRAD_PRESENT: (
            "a non-zero gradient arrived at {present} of {logged} logged steps but was never "
            "applied: the variable is likely not passed to the optimizer (left out of "
            "apply_gradients or of trainable_variables), its Python name was rebound with "
            "`v = v - lr * g` (which makes a new tensor; use `v.assign_sub(lr * g)` or "
            "`optimizer.apply_gradients`), or the learning rate is 0"
        ),
        vc.GRAD_MISSING: (
            "its gradient is None at every step: it is not connected to the loss (unused in "
            "the forward pass, or reached only through non-differentiable ops such as argmax, "
            "round or cast); call it on the path to the loss"
        ),
        vc.GRAD_INTERMITTENT: (
            "its gradient is None at some steps and never applied at the others: it is only "
            "connected to the loss in some steps (a conditional branch) and then not passed "
            "to the optimizer"
        ),
        vc.GRAD_NOT_LOGGED: (
            "no gradient was logged for it, so the likely causes are: it is not passed to the "
            "optimizer, its Python name was rebound with `v = v - lr * g` (use "
            "`v.assign_sub(lr * g)` or `optimizer.apply_gradients`), or the learning rate is "
            "0; pass `gradients=` to `log()` to tell a disconnected variable from an "
            "unapplied one"
        ),
    },
    TORCH: {
        vc.GRAD_PRESENT: (
            "a non-zero `p.grad` was there at {present} of {logged} logged steps but was never "
            "applied: the parameter is likely in none of the optimizer's `param_groups` (a "
            "layer replaced after the optimizer was created; `attach()` names them), its name "
            "was rebound with `p = p - lr * p.grad` (a new tensor; update in place under "
            "`torch.no_grad()` or use the optimizer), or the learning rate is 0"
        ),
        vc.GRAD_MISSING: (
            "`p.grad` is None at every step: it is not on the path to the loss (unused in "
            "forward, or behind `detach()` or `torch.no_grad()`), `zero_grad()` runs between "
            "`backward()` and `step()`, or under DDP with `find_unused_parameters=True` it is "
            "unused on every rank"
        ),
        vc.GRAD_INTERMITTENT: (
            "`p.grad` is None at some steps and never applied at the others: it is used only "
            "in some steps (a conditional branch) and is in none of the optimizer's "
            "`param_groups`"
        ),
        vc.GRAD_NOT_LOGGED: (
            "no gradient was read for it: it is likely in none of the optimizer's "
            "`param_groups`, rebound with `p = p - lr * p.grad`, or the learning rate is 0"
        ),
    },
}
# What differs for rows the Keras callback wrote: the callback records what
# every optimizer's `apply` got in the train step, so "not given" means no
# optimizer was handed the variable, and a present gradient was handed to one.
_FIT_CAUSE = {
    vc.GRAD_NOT_LOGGED: (
        "no optimizer was given a gradient for it in any train step (the callback records "
        "every optimizer `apply` of the step): the train step leaves it out of "
        "`apply_gradients`, for example by pairing one model's gradients with another "
        "model's variables (`zip(grads, other.trainable_variables)`), or the optimizer that "
        "updates it is not an attribute of the model, so the callback cannot see it (or "
        "`update_freq=\"epoch\"`, which records no gradients)"
    ),
    vc.GRAD_PRESENT: (
        "an optimizer was given a non-zero gradient for it at {present} of {logged} logged "
        "steps, but its value never moved: the learning rate is 0 (a schedule that reached "
        "0), or the update is undone (a constraint, or an `assign` after the step)"
    ),
}
_NOT_IN_OPTIMIZER = {
    TF: (
        "a non-zero gradient arrived at {present} of {logged} logged steps, but the variable is "
        "in none of the optimizers the writer saw apply gradients: pass it to the optimizer "
        "(`apply_gradients`, or the model's `trainable_variables` before `compile()`)"
    ),
    TORCH: (
        "a non-zero `p.grad` was there at {present} of {logged} logged steps, but the parameter is "
        "in none of the optimizers' `param_groups` (all the tracker was given), so no step applies it (a layer "
        "replaced, or unfrozen, after the optimizer was created): add it with "
        "`optimizer.add_param_group({{'params': [...]}})`, or create the optimizer after the "
        "last change to the model"
    ),
}
_LR_ZERO = (
    "a non-zero gradient arrived at {present} of {logged} logged steps, but the learning rate "
    "of its optimizer was 0 at the newest record, so every update is 0 (a schedule that "
    "reached 0, or a learning rate set to 0)"
)

# An exactly-zero gradient at every record says the loss does not move with
# the variable; dead units are one reason, never the only one (a WGAN critic's
# output bias has a zero gradient by construction).
_ZERO_GRADIENT = {
    TF: (
        "its gradient is exactly zero at every logged step: the loss does not depend on it "
        "(a bias before a normalisation, or a loss that ignores a constant shift, such as a "
        "WGAN critic's output bias; then it is harmless: accept it with `--allow`), or "
        "there are dead units upstream (ReLUs that never fire), a saturated activation, or "
        "a masked or all-zero input"
    ),
    TORCH: (
        "`p.grad` is exactly zero at every logged step: `clip_grad_norm_(params, max_norm=0)` "
        "(0 does not disable clipping: it scales every gradient to zero), "
        "`zero_grad(set_to_none=False)` runs "
        "between `backward()` and `step()`, the loss does not depend on it (a bias before a "
        "normalisation, or a loss that ignores a constant shift; then accept it with "
        "`--allow`), or there are dead units upstream (ReLUs that never fire) or a "
        "saturated activation"
    ),
}
_NON_FINITE_GRADIENT = (
    "its gradient is NaN or Inf, so the optimizer skips it or poisons it: look for "
    "log(0), division by zero or an exploding loss; clip gradients or lower the "
    "learning rate"
)

_STALLED_HINT = {
    md.GRAD_STATE_NONE: "its gradient is now None (the variable was disconnected from the loss)",
    md.GRAD_STATE_ZERO: "its gradient is now zero (units died or saturated, or the loss stopped depending on it)",
    md.GRAD_STATE_NON_FINITE: "its gradient is now NaN or Inf",
    md.GRAD_STATE_PRESENT: (
        "its gradient is still present, so the update is no longer applied: a learning "
        "rate schedule that reached 0, a layer frozen mid-run, or the variable dropped "
        "from the optimizer's list"
    ),
    md.GRAD_STATE_NOT_GIVEN: (
        "likely a learning rate schedule that reached 0, a layer frozen mid-run, or the "
        "variable dropped from the optimizer's list"
    ),
}

# A parameter that starts at zero by design (LoRA's `lora_B`, entry
# `zero_init`) and never changed leaves its adapter a no-op: the adapted model
# is the base model. Said first, then why no update reached it.
_ZERO_INIT = (
    "Never changed: it is still at its zero init, so its adapter adds nothing and the "
    "module it adapts behaves as the frozen base (LoRA starts `lora_B` at zero); "
)
_ZERO_INIT_CAUSE = {
    vc.GRAD_MISSING: (
        "`p.grad` is None at every step, so no gradient reaches the adapter: the module it "
        "adapts is not on the path to the loss (a `target_modules` entry that matched a "
        "module forward never uses or whose output is ignored, such as a pooler the head "
        "skips), or it runs under `torch.no_grad()` or in a reentrant gradient-checkpointed "
        "block whose inputs do not require grad (`model.enable_input_require_grads()`); "
        "target a module on the path to the loss"
    ),
    vc.GRAD_ZERO: (
        "`p.grad` is exactly zero at every step: the adapter's input is zero or the loss "
        "does not depend on the adapted module's output"
    ),
    vc.GRAD_INTERMITTENT: (
        "`p.grad` is None at some steps and never applied at the others: the adapted "
        "module is used only in some steps and the adapter is in none of the optimizer's "
        "`param_groups`"
    ),
}
_ZERO_INIT_NOT_APPLIED = (
    "a gradient reached it but was never applied: it is in none of the optimizer's "
    "`param_groups` (an optimizer built before the adapters were added) or the learning "
    "rate is 0"
)

# A trainable variable that nothing differentiated and nothing changed: by
# the writer's evidence a model used as a fixed one (a distillation teacher,
# a target network). A warning: say how to mark it.
_FIXED_MODEL = {
    TF: (
        "Never changed in %d logged steps, and the train step never took its gradient: it is used "
        "like a fixed model (a distillation teacher, a target network), which is fine. Mark it "
        "`trainable=False` (e.g. `teacher.trainable = False`), or accept it with `allow=` / "
        "`--allow`; if it should train, take its gradient in the train step and apply it with an "
        "optimizer. If `assign` should move it (an EMA copy, a target network's soft update), that "
        "update never ran: `w = ...` rebinds a Python name, `w.assign(...)` changes the variable."
    ),
    TORCH: (
        "Never changed in %d logged steps, its `p.grad` stayed None and it is in none of the "
        "attached optimizers: it is used like a fixed model (a distillation teacher, a target "
        "network), which is fine. Mark it with `requires_grad_(False)`, or accept it with "
        "`allow=` / `--allow`; if it should train, put it on the path to the loss and in the "
        "optimizer. If an in-place update should move it (an EMA copy, a target network's soft "
        "update), that update never ran: `p = ...` rebinds a Python name, `p.copy_(...)` or "
        "`p.lerp_(...)` under `torch.no_grad()` changes the tensor."
    ),
}

_SKIPPED = {
    TF: "as loss scaling does with mixed precision",
    TORCH: "as `GradScaler` does with AMP",
}


def _not_trainable(row, facts):
    status = row["status"]
    if status == vc.NON_FINITE:
        return (
            "Not trainable, but its value became NaN or Inf at step %d: a statistic "
            "(e.g. BatchNorm moving variance) was fed non-finite activations."
            % row["first_non_finite_step"]
        )
    if facts["role"] == vr.ROLE_PARAMETER and row["changed_steps"]:
        return (
            "A parameter with `requires_grad=False`, but its value changed at %d of %d logged "
            "steps: weight decay applied to a zero-filled gradient (the optimizer still holds "
            "it), or a manual `.data` / in-place write. Remove it from the optimizer, or set "
            "its gradient to None." % (row["changed_steps"], row["logged_steps"])
        )
    if facts["first_trainable"] and row["changed_steps"]:
        return (
            "Frozen (trainable=False now, trainable when first tracked); it last changed at "
            "step %d. Not a problem." % row["last_update_step"]
        )
    if status == vc.NEVER_UPDATED:
        if facts["role"] == vr.ROLE_BUFFER:
            return "A buffer that never changed: not a problem."
        return (
            "Not trainable and never changed: frozen on purpose (trainable=False). "
            "Not a problem unless you meant to train it."
        )
    if facts["role"] == vr.ROLE_BUFFER:
        return "A buffer (running statistics, counters), changed by assignments: expected."
    return (
        "Not trainable, changed by assignments (BatchNorm moving statistics, counters, "
        "EMA): expected."
    )


def _never_updated(row, facts):
    gradient, framework = row["gradient"], facts["framework"]
    if not facts["first_trainable"]:
        if framework == TORCH:
            fix = "add it to the optimizer (`optimizer.add_param_group`) when you set `requires_grad=True`"
        elif facts["via"] == vr.VIA_FIT:
            fix = (
                "call `model.compile(...)` again after changing `trainable`: `fit` keeps training "
                "the set of variables it compiled"
            )
        else:
            fix = (
                "with Keras, call `compile()` again after setting `trainable = True` (fit keeps "
                "the train step it compiled); in a custom loop, pass it to the optimizer"
            )
        return (
            "Made trainable after it was first tracked (unfrozen), but never changed: the "
            "optimizer still updates the old set of variables; %s." % fix
        )
    if facts.get("zero_init") and gradient != vc.GRAD_NON_FINITE:
        return _ZERO_INIT + _ZERO_INIT_CAUSE.get(gradient, _ZERO_INIT_NOT_APPLIED) + "."
    if gradient == vc.GRAD_ZERO:
        cause = _ZERO_GRADIENT[framework]
    elif gradient == vc.GRAD_NON_FINITE:
        cause = _NON_FINITE_GRADIENT
    elif gradient == vc.GRAD_PRESENT:
        cause = _present_not_applied(row, facts)
    elif framework == TF and facts["via"] == vr.VIA_FIT and gradient in _FIT_CAUSE:
        cause = _FIT_CAUSE[gradient]
    else:
        cause = _NEVER_UPDATED_CAUSE[framework][gradient]
    return "Never changed: " + cause.format(
        present=row["gradient_steps"]["present"], logged=row["logged_steps"], dtype=row["dtype"]
    ) + "."


def _present_not_applied(row, facts):
    """Why a present gradient never moved the value, decided from the record where it can be.

    The writer's facts come first: a variable in no optimizer, a learning
    rate of 0, then a step that rounds away in a low-precision dtype; only
    where the record holds none of them are the possible causes listed.
    """
    framework, learning_rate = facts["framework"], facts["learning_rate"]
    if facts["in_optimizer"] is False:
        return _NOT_IN_OPTIMIZER[framework]
    if learning_rate is not None and learning_rate == 0:
        return _LR_ZERO
    rounding = precision.rounding_cause(row, learning_rate, framework)
    if rounding is not None:
        text = "a non-zero gradient arrived at {present} of {logged} logged steps, but " + rounding
        if not precision.is_low_precision(row["dtype"]):
            # Rounding in float32 means a step far below any training: say why it is that small.
            text += ". " + _why_so_small(facts)
        return text.replace("{", "{{").replace("}", "}}").replace("{{present}}", "{present}").replace(
            "{{logged}}", "{logged}")
    if framework == TF and facts["via"] == vr.VIA_FIT:
        cause = _FIT_CAUSE[vc.GRAD_PRESENT]
    else:
        cause = _NEVER_UPDATED_CAUSE[framework][vc.GRAD_PRESENT]
    if learning_rate is not None:
        # The record rules the learning rate out: say so rather than list it.
        cause = cause.replace(", or the learning rate is 0", "").replace(
            "the learning rate is 0 (a schedule that reached 0), or ", "")
        cause += " (its learning rate at the newest record, %.1e, is not 0)" % learning_rate
    return cause


def _non_finite_run(row, facts):
    text = (
        "Its gradient has been NaN or Inf at each of the last %d logged steps: skipped "
        "steps %s recover within a few steps, not this many, so it no longer trains. Look "
        "for an exploding loss, log(0) or division by zero; lower the learning rate or clip "
        "gradients." % (facts["non_finite_run"], _SKIPPED[facts["framework"]])
    )
    if row["changed_steps"]:
        text += " It last changed at step %d." % row["last_update_step"]
    return text


def _updating(row, facts):
    text = "Updating."
    if row["gradient"] == vc.GRAD_ZERO:
        text = "Updating although its gradient is zero: changed by something else (weight decay, assignments)."
    elif row["gradient"] == vc.GRAD_MISSING:
        text = "Updating although its gradient is None: changed by assignments, not by gradients."
    skipped = row["gradient_steps"]["non_finite"]
    if skipped:
        text += (
            " %d steps had a non-finite gradient and were skipped, %s; not a problem while "
            "values stay finite." % (skipped, _SKIPPED[facts["framework"]])
        )
    if row["max_relative_update"] is None and row["changed_steps"]:
        text += " Its relative update is unknown (no change was measured against a non-zero norm)."
    return text


def _replicas_diverged(row):
    return (
        "Its copies on the ranks differ (first seen at step %d; largest spread of the ranks' "
        "fingerprints, the value's L2 norm and sum, %.3g): each rank now trains a different "
        "model. Look for a write to the parameter on some ranks only (an in-place edit or a "
        "load under `if rank == 0`), a parameter DDP does not synchronise (created after "
        "wrapping, or ignored with `_ddp_params_and_buffers_to_ignore`), non-deterministic "
        "kernels in the optimizer, or a replicated DTensor written locally; broadcast it "
        "from rank 0 and find the write." % (row["replicas_diverged_step"], row["replica_spread"] or 0.0)
    )


def _tiny(row, facts):
    """The `tiny_updates` sentence: rounding, stuck-small causes, or a small learning rate."""
    largest = row["max_relative_update"]
    head = "Changes, but its largest relative update was %.1e (below %.0e)" % (largest, facts["tiny"])
    rounding = precision.rounding_cause(row, facts["learning_rate"], facts["framework"], tiny=True)
    if rounding is not None and row["gradient"] == vc.GRAD_PRESENT and precision.is_low_precision(row["dtype"]):
        return head + ": " + rounding + "."
    if largest < facts["stuck_tiny"]:
        # Nine orders below healthy: this is not slow training, it is none.
        text = head + ", %d orders of magnitude below healthy training (1e-4 to 1e-2): it is not training. " % round(
            -4 - _log10(largest))
        return text + _why_so_small(facts) + "."
    text = head + ": the learning rate is likely too small or the gradients vanish; raise the " \
        "learning rate or check the gradient scale."
    if facts["learning_rate"] is not None:
        text += " Its learning rate was %.1e at the newest record." % facts["learning_rate"]
    return text


def _why_so_small(facts):
    """The causes of a step many orders below healthy (no final period)."""
    if facts["framework"] == TORCH:
        text = (
            "With AMP, clipping before `scaler.unscale_(optimizer)` clips the scaled gradients "
            "(65,536x too large) to max_norm, so the real step is max_norm / scale: call "
            "`scaler.unscale_(optimizer)` before `clip_grad_norm_`. Otherwise the "
        )
    else:
        text = (
            "With a LossScaleOptimizer, clipping the scaled gradients in your own train step "
            "has the same effect: clip after unscaling. Otherwise the "
        )
    text += "learning rate or the gradients are almost 0"
    if facts["learning_rate"] is not None:
        text += " (the learning rate was %.1e at the newest record)" % facts["learning_rate"]
    return text


def _log10(value):
    return math.log10(value) if value > 0 else -30.0


def _rows_note(row):
    total, changed = row["rows_total"], row["rows_changed"]
    if changed is None or changed < 0 or not total or changed >= total:
        return ""
    if changed == 0:
        if row["gradient_steps"]["present"]:
            # Gradients arrived and no row moved: the update was not applied,
            # which says nothing about which ids occur in the data.
            return " No row ever changed although gradients arrived: the update was not applied."
        return ""
    never = total - changed
    return " %d%% of rows (%d of %d) never updated: ids that never occur in the data." % (
        round(100.0 * never / total), never, total,
    )


def diagnose(row, latest_grad_state, facts):
    """The diagnosis of a verdict row.

    Args:
      row: the row so far (status, gradient, counters, steps).
      latest_grad_state: the newest record's `metadata.GRAD_STATE_*`.
      facts: dict with "framework" (TF or TORCH), "role" (the entry's role
        or None), "first_trainable" (trainable when first tracked),
        "non_finite_run" (records in a row with a non-finite gradient at the
        end of the run when that is a problem, else 0), "empty" (no elements)
        and optionally "zero_init" (started at zero by design: LoRA's `lora_B`).

    Returns:
      One or a few sentences.
    """
    status = row["status"]
    if facts["empty"]:
        return "Has no elements (shape %s): there is nothing to update. Not a problem." % (row["shape"],)
    if status == vc.REPLICAS_DIVERGED:
        return _replicas_diverged(row)
    if not row["trainable"]:
        return _not_trainable(row, facts)
    if status == vc.NON_FINITE:
        text = (
            "Its value became NaN or Inf at step %d; everything downstream is poisoned. "
            "Look for an exploding loss, log(0) or division by zero; lower the learning "
            "rate, clip gradients, or use loss scaling with mixed precision."
            % row["first_non_finite_step"]
        )
        if row["gradient_steps"]["non_finite"]:
            text += " Its gradient was non-finite at %d steps." % row["gradient_steps"]["non_finite"]
        return text
    if facts["non_finite_run"]:
        return _non_finite_run(row, facts)
    if status == vc.NEVER_UPDATED:
        if facts.get("fixed_model"):
            return _FIXED_MODEL[facts["framework"]] % row["logged_steps"]
        return _never_updated(row, facts) + _rows_note(row)
    if status == vc.STALLED:
        hint = _STALLED_HINT[latest_grad_state]
        if latest_grad_state in (md.GRAD_STATE_PRESENT, md.GRAD_STATE_NOT_GIVEN):
            # The record may hold the fact: say it instead of listing it.
            if facts["learning_rate"] == 0:
                hint = ("its optimizer's learning rate is 0 at the newest record: a learning rate schedule "
                        "that reached 0 (a LambdaLR or warmup/decay lambda that returns 0); keep it above 0")
            elif facts["in_optimizer"] is False:
                hint = "it is in none of the optimizers now (dropped from the optimizer's param groups)"
        return "Changed until step %d, then stopped for %d logged steps: %s." % (
            row["last_update_step"], row["logs_since_update"], hint,
        )
    if status == vc.TINY_UPDATES:
        return _tiny(row, facts) + _rows_note(row)
    return _updating(row, facts) + _rows_note(row)
