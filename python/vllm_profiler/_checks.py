"""Checks of the public API's arguments: each names the parameter, what it takes and what it
got, and raises at the call (TypeError for a wrong type, ValueError for a value out of range),
so that a wrong argument is never taken silently nor converted (`8.7` is not the int 8)."""

from __future__ import annotations

import math
import numbers
import operator
import os
import tempfile
from typing import Any, Union

U32_MAX = 0xFFFFFFFF
# Device indices: the C ABI's int32.
DEVICE_MAX = 2**31 - 1

PathArg = Union[str, "os.PathLike[str]"]


def _got(value: Any) -> str:
    return f"got {value!r} ({type(value).__name__})"


def integer(name: str, value: Any, low: int, high: int) -> int:
    """An int (or an integer type such as numpy's, not a bool, float or str) in [low, high]."""
    shown = "2**32-1" if high == U32_MAX else high
    if type(value) is not int:
        if isinstance(value, bool):
            raise TypeError(f"{name} must be an int, {_got(value)}")
        try:
            value = operator.index(value)
        except TypeError:
            raise TypeError(
                f"{name} must be an int in [{low}, {shown}], {_got(value)}"
            ) from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be an int in [{low}, {shown}], got {value}")
    return int(value)


def u32(name: str, value: Any) -> int:
    return integer(name, value, 0, U32_MAX)


def device(name: str, value: Any) -> int:
    """A device index."""
    return integer(name, value, 0, DEVICE_MAX)


def number(name: str, value: Any) -> float:
    """A real number (int, float or another numbers.Real; not a bool or str). Its range is
    the agent's to check (its error names the setting)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, {_got(value)}")
    try:
        result = float(value)
    except OverflowError:
        raise ValueError(f"{name} must be a finite number, got {value!r}") from None
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
    if isinstance(value, (str, os.PathLike)):
        try:
            result = os.fspath(value)
        except TypeError as err:
            raise TypeError(f"{name} must be a str or os.PathLike path: {err}") from None
        if isinstance(result, str):
            if not result or "\0" in result:
                raise ValueError(f"{name} must be a non-empty path without NUL, got {value!r}")
            return result
    raise TypeError(f"{name} must be a str or os.PathLike path, {_got(value)}")


def writable_directory(name: str, value: str) -> str:
    """`value` is a directory this process can write in: made if missing, then written to (a
    file made and removed), so that what only trying tells (a read-only or virtual file system,
    a name too long, root's permissions) is known now; else ValueError naming the path and the
    reason."""
    full = os.path.abspath(value)
    if os.path.lexists(full) and not os.path.isdir(full):
        raise ValueError(f"{name} {value!r} is not a directory")
    try:
        os.makedirs(full, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{name} {value!r} cannot be made: {err.strerror or err}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".vllm-profiler-probe-", dir=full)
    except OSError as err:
        raise ValueError(f"{name} {value!r} is not writable: {err.strerror or err}") from None
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError:
        pass
    return value
