"""Tracker options that every writer (TensorFlow and PyTorch) validates the same way. No framework import."""


def check_name(name):
    """The tracker name, used in the tag `varupdate/<name>`.

    Raises:
      ValueError: `name` is not a non-empty string without '/'.
    """
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(
            "name must be a non-empty string without '/', used in the tag "
            "'varupdate/<name>'. Received: name=%r" % (name,)
        )
    return name


def check_positive_int(option, value):
    """`value` of the option named `option`, an int >= 1 (bools are not counts).

    Raises:
      ValueError: it is not.
    """
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError("%s must be an int >= 1. Received: %s=%r" % (option, option, value))
    return value


def check_every_n_steps(every_n_steps):
    """`every_n_steps`, an int >= 1."""
    return check_positive_int("every_n_steps", every_n_steps)
