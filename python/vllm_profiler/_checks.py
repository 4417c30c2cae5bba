"""Checks of the public API's arguments: each names the parameter, what it takes and what it
got, and raises at the call (TypeError for a wrong type, ValueError for a value out of range),
so that a wrong argument is never taken silently nor converted (`8.7` is not the int 8)."""

from __future__ import annotations

import math
import numbers
import operator
import os
from typing import Any, Optional, Union

U32_MAX = 0xFFFFFFFF

PathArg = Union[str, "os.PathLike[str]"]


def _got(value: Any) -> str:
    return f"got {value!r} ({type(value).__name__})"


def integer(name: str, value: Any, low: int, high: int, high_text: Optional[str] = None) -> int:
    """An int (or an integer type such as numpy's, not a bool, float or str) in [low, high]."""
    if type(value) is not int:
        if isinstance(value, bool):
            raise TypeError(f"{name} must be an int, {_got(value)}")
        try:
            value = operator.index(value)
        except TypeError:
            raise TypeError(
                f"{name} must be an int in [{low}, {high_text or high}], {_got(value)}"
            ) from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be an int in [{low}, {high_text or high}], got {value}")
    return int(value)


def u32(name: str, value: Any) -> int:
    return integer(name, value, 0, U32_MAX, "2**32-1")


def number(name: str, value: Any) -> float:
    """A real number (int, float or another numbers.Real; not a bool or str). Its range is
    the agent's to check (its error names the setting)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, {_got(value)}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return result


def flag(name: str, value: Any) -> bool:
    """A bool (or 0 and 1, which Python code often passes for one)."""
    if isinstance(value, bool):
        return value
    if type(value) is int and value in (0, 1):
        return bool(value)
    raise TypeError(f"{name} must be a bool, {_got(value)}")


def path(name: str, value: Any) -> str:
    """A str or os.PathLike path, as a str."""
    if isinstance(value, str) or isinstance(value, os.PathLike):
        result = os.fspath(value)
        if isinstance(result, str):
            if not result or "\0" in result:
                raise ValueError(f"{name} must be a non-empty path without NUL, got {value!r}")
            return result
    raise TypeError(f"{name} must be a str or os.PathLike path, {_got(value)}")


def writable_directory(name: str, value: str) -> str:
    """`value` is a directory this process can write in, or one it can make: the nearest part
    of the path that exists is a writable directory. Makes nothing (the agent makes it when it
    writes); ValueError naming the path and the reason otherwise."""
    full = os.path.abspath(value)
    probe = full
    while not os.path.lexists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        what = ("is not a directory" if probe == full
                else f"cannot be made: {probe} is not a directory")
        raise ValueError(f"{name} {value!r} {what}")
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "is not writable" if probe == full else f"cannot be made: {probe} is not writable"
        raise ValueError(f"{name} {value!r} {what} by this process")
    return value
