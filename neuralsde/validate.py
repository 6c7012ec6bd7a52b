"""The library's rules for the numbers it takes: seeds, counts, positive finite numbers.

One rule for seeds, wherever the library takes one: a seed is an integer in
``[0, 2**63)``: a Python ``int``, a NumPy integer or a 0-d integer tensor, each giving
the same draws as the equal Python ``int``. Booleans, floats (even integral ones),
strings and values out of range are refused with one ``ValueError`` that names the
argument, so a seed is never silently truncated.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

__all__ = ["MAX_SEED", "check_count", "check_positive", "check_seed"]

#: The largest seed accepted.
MAX_SEED = 2**63 - 1


def check_seed(value: object, name: str = "seed", *, optional: bool = False) -> int | None:
    """``value`` as a Python int, if it is a valid seed.

    Args:
        value: the seed.
        name: the argument's name, for the message.
        optional: None is allowed (and returned).

    Raises:
        ValueError: unless ``value`` is an integer (Python, NumPy or a 0-d integer
            tensor, not a bool) in ``[0, 2**63)``.
    """
    if value is None and optional:
        return None
    seed = None
    if torch.is_tensor(value):
        if value.dim() == 0 and not value.is_floating_point() and not value.is_complex() and value.dtype != torch.bool:
            seed = int(value.item())
    elif isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_)):
        seed = int(value)
    if seed is None or not 0 <= seed <= MAX_SEED:
        what = "an integer in [0, 2**63)" + (" or None" if optional else "")
        raise ValueError(f"{name} must be {what}, got {value!r} ({type(value).__name__})")
    return seed


def check_count(value: object, name: str, minimum: int = 1) -> int:
    """``value`` as a Python int, if it is an integer >= ``minimum`` (an integral float such as 2.0 too).

    Raises:
        ValueError: for a bool, a non-integral or non-finite number, a string, or a value below ``minimum``.
    """
    value = _scalar(value)
    ok = isinstance(value, (numbers.Real, np.number)) and not isinstance(value, (bool, np.bool_))
    if ok:
        number = float(value)
        ok = math.isfinite(number) and number == int(number) and number >= minimum
    if not ok:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_positive(value: object, name: str) -> float:
    """``value`` as a float, if it is a finite number > 0.

    Raises:
        ValueError: for a bool, a string, NaN, an infinity, zero or a negative number.
    """
    value = _scalar(value)
    ok = isinstance(value, (numbers.Real, np.number)) and not isinstance(value, (bool, np.bool_))
    if not ok or not (math.isfinite(float(value)) and float(value) > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _scalar(value: object) -> object:
    """A 0-d real tensor as a Python number (anything else as it came)."""
    if torch.is_tensor(value) and value.dim() == 0 and value.dtype != torch.bool and not value.is_complex():
        return value.item()
    return value
