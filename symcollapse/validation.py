"""Input validation: every check names the parameter and its allowed range."""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import numpy as np

from .errors import InvalidParameterError


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` as an int in ``[minimum, maximum]`` or raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        else:
            raise InvalidParameterError(
                f"{name} must be an integer{_range(minimum, maximum)}; got {value!r}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise InvalidParameterError(f"{name} must be an integer{_range(minimum, maximum)}; got {value}")
    return value


def check_real(name: str, value: Any, minimum: float | None = None, maximum: float | None = None,
               *, strict_min: bool = False, strict_max: bool = False) -> float:
    """Return ``value`` as a finite float in the given range or raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (Real, np.floating, np.integer)):
        raise InvalidParameterError(f"{name} must be a real number{_range(minimum, maximum, strict_min, strict_max)}; got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise InvalidParameterError(f"{name} must be finite{_range(minimum, maximum, strict_min, strict_max)}; got {v}")
    bad = False
    if minimum is not None:
        bad |= v <= minimum if strict_min else v < minimum
    if maximum is not None:
        bad |= v >= maximum if strict_max else v > maximum
    if bad:
        raise InvalidParameterError(f"{name} must be{_range(minimum, maximum, strict_min, strict_max)}; got {v}")
    return v


def check_rate(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """A learning rate: finite and > 0 (or >= 0 with ``allow_zero``)."""
    return check_real(name, value, 0.0, None, strict_min=not allow_zero)


def check_array(name: str, value: Any, *, ndim: int | None = None, shape: tuple | None = None,
                nonnegative: bool = False) -> np.ndarray:
    """Return ``value`` as a finite float ndarray of the required shape or raise naming ``name``."""
    if np.iscomplexobj(value):
        raise InvalidParameterError(f"{name} must be real; got complex values")
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InvalidParameterError(f"{name} must be a numeric array; got {type(value).__name__}") from exc
    if ndim is not None and arr.ndim != ndim:
        raise InvalidParameterError(f"{name} must be a {ndim}-D array; got shape {arr.shape}")
    if shape is not None:
        for i, (got, want) in enumerate(zip(arr.shape, shape)):
            if want is not None and got != want:
                raise InvalidParameterError(f"{name} must have shape {_shape(shape)}; got {arr.shape}")
    if arr.size == 0:
        raise InvalidParameterError(f"{name} must not be empty; got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InvalidParameterError(f"{name} must contain only finite values (no NaN or inf)")
    if nonnegative and np.any(arr < 0):
        raise InvalidParameterError(f"{name} must be non-negative (>= 0) everywhere; min is {arr.min()}")
    return arr


def _shape(shape: tuple) -> str:
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"


def _range(lo, hi, strict_lo=False, strict_hi=False) -> str:
    if lo is None and hi is None:
        return ""
    if hi is None:
        return f" {'>' if strict_lo else '>='} {lo}"
    if lo is None:
        return f" {'<' if strict_hi else '<='} {hi}"
    return f" in {'(' if strict_lo else '['}{lo}, {hi}{')' if strict_hi else ']'}"
