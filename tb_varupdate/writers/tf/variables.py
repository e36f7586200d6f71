"""Which variables a tracker follows, and their record names.

A tracker is given a variable, a module (`tf.Module`, `keras.Model`,
`keras.Layer`), or a list of either. Modules are re-read at every `log()`
(eagerly and at trace time), so a lazily built model and a module that gains
variables inside a `tf.function` join the record from their first step. Rows
are only ever appended (docs/FORMAT.md).
"""

import tensorflow as tf

from tb_varupdate.format import variables as vr


def is_keras_variable(obj):
    """True for a Keras 3 variable (not a tf.Variable: it holds one in `.value`)."""
    # Duck typing, so Keras stays optional.
    return not isinstance(obj, tf.Variable) and hasattr(obj, "path") and isinstance(
        getattr(obj, "value", None), tf.Variable
    )


def is_variable(obj):
    return isinstance(obj, tf.Variable) or is_keras_variable(obj)


def is_module(obj):
    return not is_variable(obj) and hasattr(obj, "variables") and not isinstance(obj, (list, tuple, dict))


def display_name(variable):
    """How a message names a variable: its Keras path or its tf name."""
    return str(getattr(variable, "path", None) or getattr(variable, "name", None) or type(variable).__name__)


def _is_model(obj):
    """A Keras model (it has `layers`) with variables, not a variable or a plain layer."""
    return is_module(obj) and hasattr(obj, "layers") and isinstance(getattr(obj, "name", None), str)


def initialized(source):
    """False for a variable created in this very trace of a `tf.function` (it reads as empty).

    Called under `tf.init_scope`.
    """
    variable = source.value if is_keras_variable(source) else source
    try:
        return bool(variable.is_initialized())
    except Exception:  # pylint: disable=broad-except
        return True  # a variable type without the check: assume it can be read


class Tracked:
    """One tracked variable.

    Attributes:
      source: what the user gave (a keras.Variable or a tf.Variable).
      variable: the underlying tf.Variable.
      name: its unique record name.
      joined: the tracker's record count before the variable's first record.
    """

    __slots__ = ("source", "variable", "name", "dtype", "is_float", "joined", "first_trainable", "lr_slot",
                 "differentiated")

    def __init__(self, source, name, joined):
        self.source = source
        self.variable = source.value if is_keras_variable(source) else source
        self.name = name
        self.dtype = self.variable.dtype.base_dtype
        self.is_float = self.dtype.is_floating
        self.joined = joined
        # The variables record keeps the flag at first sight (its names_hash
        # covers it); each updates record carries the current one.
        self.first_trainable = self.trainable
        self.lr_slot = None  # the header learning-rate slot of its optimizer, where the writer knows it
        self.differentiated = None  # whether the train step took its gradient, where the writer watched

    @property
    def trainable(self):
        """Read now: a layer frozen or unfrozen between records shows in the record."""
        return bool(getattr(self.source, "trainable", True))

    @property
    def shape(self):
        return self.variable.shape

    @property
    def empty(self):
        """A variable with no element (a dimension of 0): it can never change."""
        return self.variable.shape.num_elements() == 0

    def entry(self, via=vr.VIA_LOG):
        """The variables record's entry (docs/FORMAT.md)."""
        shape = self.variable.shape
        entry = {
            "name": self.name,
            "shape": shape.as_list() if shape.rank is not None else None,
            "dtype": self.dtype.name,
            "trainable": self.first_trainable,
            "joined": self.joined,
            "framework": vr.FRAMEWORK_TF,
            "via": via,
        }
        if self.lr_slot is not None:
            entry["lr_slot"] = self.lr_slot
        if self.differentiated is not None:
            entry["differentiated"] = self.differentiated
        return entry


class Variables:
    """The tracked variables of one tracker, in record row order.

    Args:
      source: a variable, a module, or a list of variables and modules.

    Raises:
      ValueError: the source is empty or holds something else.
    """

    def __init__(self, source):
        items = list(source) if isinstance(source, (list, tuple)) else [source]
        for item in items:
            if not (is_variable(item) or is_module(item)):
                raise ValueError(
                    "VariableUpdateTracker tracks tf.Variable / keras.Variable objects and "
                    "tf.Module / keras.Model / keras.Layer objects (or a list of them). "
                    "Received: %r. If this is a tensor, the name was probably rebound with "
                    "`v = v - lr * g`; keep the variable and update it with "
                    "`v.assign_sub(lr * g)`." % (item,)
                )
        if not items:
            raise ValueError(
                "VariableUpdateTracker needs variables to track: a tf.Variable, a "
                "keras.Variable, a list of them, or a tf.Module / keras.Model. "
                "Received: an empty %s" % type(source).__name__
            )
        self._items = items
        # How the records are written: VIA_FIT when the Keras callback owns the tracker.
        self.via = vr.VIA_LOG
        self.has_modules = any(is_module(item) for item in items)
        self.tracked = []
        self._index = {}
        self._names = set()

    def __len__(self):
        return len(self.tracked)

    def index_of(self, variable):
        """The row of `variable` (a keras.Variable, its tf.Variable, or a distributed one), or None."""
        return self._index.get(id(variable))

    def _found(self):
        for item in self._items:
            if is_variable(item):
                yield item
            else:
                yield from item.variables

    def _owners(self):
        """{id(variable): label} of the models held as attributes or used as layers of the tracked modules.

        Keras 3 paths drop the name of a functional model whose layers were
        built outside its scope (keras-io's CycleGAN generators read
        `conv2d_10/kernel`; a `clone_model` EMA copy repeats its source's
        paths; the transfer-learning guide's Xception base reads
        `block1_conv1/kernel`). The tracker walked those models, so it names
        them: by the model's name, or by the attribute where two share a name.
        """
        found = []
        for item in self._items:
            if is_variable(item):
                continue
            for attribute, value in vars(item).items():
                if attribute.startswith("_") or value is item or not _is_model(value):
                    continue
                if all(value is not model for _, model in found):
                    found.append((attribute, value))
        # Then the models used as layers of a functional model, unless one of that name is already named.
        for item in self._items:
            for layer in getattr(item, "layers", ()) if not is_variable(item) else ():
                if _is_model(layer) and all(layer is not model and layer.name != model.name for _, model in found):
                    found.append((layer.name, layer))
        names = [model.name for _, model in found]
        owners = {}
        for attribute, model in found:
            label = model.name if names.count(model.name) == 1 else attribute
            for variable in model.variables:
                owners.setdefault(id(variable), (label, model.name))
        return owners

    def _unique_name(self, source, owners=None):
        if is_keras_variable(source):
            base = source.path
        else:
            base = source.name[:-2] if source.name.endswith(":0") else source.name
        owner = (owners or {}).get(id(source))
        if owner is not None and base.split("/", 1)[0] not in owner:
            base = "%s/%s" % (owner[0], base)
        name, suffix = base, 1
        while name in self._names:
            name = "%s_%d" % (base, suffix)
            suffix += 1
        self._names.add(name)
        return name

    def refresh(self, joined):
        """Tracks the variables that appeared since the last call.

        Args:
          joined: the tracker's record count now, stored in each new entry.

        Returns:
          The new `Tracked` objects (possibly none).
        """
        added = []
        owners = None
        for source in self._found():
            if id(source) in self._index:
                continue
            if owners is None:
                owners = self._owners()  # only when variables join: a walk of the attributes
            tracked = Tracked(source, self._unique_name(source, owners), joined)
            row = len(self.tracked)
            self._index[id(source)] = row
            self._index.setdefault(id(tracked.variable), row)
            self.tracked.append(tracked)
            added.append(tracked)
        return added

    def trainable_mask(self):
        # A tf.Variable's flag is fixed at creation; a Keras variable's can change.
        return tuple(t.trainable if t.source is not t.variable else t.first_trainable for t in self.tracked)

    def entries(self):
        return [t.entry(self.via) for t in self.tracked]
