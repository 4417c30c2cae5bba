"""The ctypes binding of libvllm_profiler.so: finding the library, typing every function, and
turning error codes into exceptions with the library's own message.

Every foreign function gets `argtypes` and `restype`: without them ctypes truncates the 64-bit
step and span handles. This is the project's one Python binding of the C ABI: the examples and
the test drivers use it too, and python/tests/test_binding_signatures.py holds it to the header.
"""

from __future__ import annotations

import ctypes
import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

if TYPE_CHECKING:
    # For the type checker only: with the annotations left as strings (the __future__ import
    # above) nothing evaluates them at run time, so this module still imports nothing of the
    # package (tests/data/exits.py loads it alone). schema.py imports nothing of it either.
    from .schema import GpuHistory, GpuList, PerformanceSummary

LIBRARY_NAME = "libvllm_profiler.so"
# The copy the wheel ships next to this file, named as an abi3 extension (pyproject.toml).
PACKAGED_NAME = "libvllm_profiler.abi3.so"

_SIGNATURES = {
    "vllm_profiler_enable": ([ctypes.c_char_p], ctypes.c_int32),
    "vllm_profiler_disable": ([], ctypes.c_int32),
    "vllm_profiler_finish": ([], ctypes.c_int32),
    "vllm_profiler_flush": ([], ctypes.c_int32),
    "vllm_profiler_is_enabled": ([], ctypes.c_int32),
    "vllm_profiler_step_begin": ([ctypes.c_uint32, ctypes.c_uint32], ctypes.c_uint64),
    "vllm_profiler_step_end": ([ctypes.c_uint64], ctypes.c_int32),
    "vllm_profiler_step_set_counts": (
        [ctypes.c_uint64, ctypes.c_uint32, ctypes.c_uint32],
        ctypes.c_int32,
    ),
    "vllm_profiler_step_set_engine_step": ([ctypes.c_uint64, ctypes.c_uint64], ctypes.c_int32),
    "vllm_profiler_set_role": ([ctypes.c_char_p, ctypes.c_int32], ctypes.c_int32),
    "vllm_profiler_span_begin": ([ctypes.c_char_p], ctypes.c_uint64),
    "vllm_profiler_span_end": ([ctypes.c_uint64], ctypes.c_int32),
    "vllm_profiler_span_end_annotated": (
        [ctypes.c_uint64, ctypes.c_double, ctypes.c_char_p],
        ctypes.c_int32,
    ),
    "vllm_profiler_span_set_gpu_duration": ([ctypes.c_uint64, ctypes.c_uint64], ctypes.c_int32),
    "vllm_profiler_step_set_gpu_duration": ([ctypes.c_uint64, ctypes.c_uint64], ctypes.c_int32),
    "vllm_profiler_kernels_pause": ([], ctypes.c_int32),
    "vllm_profiler_kernels_resume": ([], ctypes.c_int32),
    "vllm_profiler_torch_op_schedule": ([], ctypes.c_uint64),
    "vllm_profiler_torch_op_window": ([ctypes.c_char_p, ctypes.c_size_t], ctypes.c_int32),
    "vllm_profiler_export": ([ctypes.c_char_p], ctypes.c_int32),
    "vllm_profiler_summary_json": (
        [ctypes.c_uint32, ctypes.c_char_p, ctypes.c_size_t],
        ctypes.c_int64,
    ),
    "vllm_profiler_last_error": ([ctypes.c_char_p, ctypes.c_size_t], ctypes.c_int32),
    "vllm_profiler_gpu_history_json": (
        [ctypes.c_int32, ctypes.c_double, ctypes.c_char_p, ctypes.c_size_t],
        ctypes.c_int64,
    ),
    "vllm_profiler_gpus_json": ([ctypes.c_char_p, ctypes.c_size_t], ctypes.c_int64),
    "vllm_profiler_version": ([], ctypes.c_char_p),
}

# The C ABI's error codes (vllm_profiler.h).
E_NOT_ENABLED = -1
E_INTERNAL = -9
_JSON_ATTEMPTS = 8


class ProfilerError(RuntimeError):
    """A call into libvllm_profiler.so failed; `code` is its VLLM_PROFILER_E_* value."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message


class LibraryNotFoundError(OSError):
    """libvllm_profiler.so was found nowhere; the message lists where it looked."""


_lock = threading.Lock()
_library: Optional[ctypes.CDLL] = None
# Steps the user records himself on this thread (VLLMPerformanceMonitor), so that the vLLM
# engine hook does not record a second, nested step inside one.
_user_steps = threading.local()


def user_step_open() -> bool:
    return getattr(_user_steps, "depth", 0) > 0


def enter_user_step() -> None:
    _user_steps.depth = getattr(_user_steps, "depth", 0) + 1


def leave_user_step() -> None:
    _user_steps.depth = max(getattr(_user_steps, "depth", 0) - 1, 0)


def _packaged() -> str:
    """Where the wheel puts the library: next to this file."""
    return str(Path(__file__).resolve().parent / PACKAGED_NAME)


def _candidates() -> List[str]:
    places = ["already loaded in this process (LD_PRELOAD)"]
    env = os.environ.get("VLLM_PROFILER_LIBRARY")
    places.append(f"$VLLM_PROFILER_LIBRARY ({env!r})" if env else "$VLLM_PROFILER_LIBRARY (unset)")
    places.append(_packaged())
    return places


def library() -> ctypes.CDLL:
    """The agent library, loaded once: the preloaded one, else $VLLM_PROFILER_LIBRARY, else
    the copy next to this package."""
    global _library
    with _lock:
        if _library is None:
            _library = _typed(_find())
        return _library


def load(path: str) -> ctypes.CDLL:
    """Loads the agent at `path` with ctypes.CDLL and makes it the library of this process,
    for a host that names the file itself; the one already loaded if there is one."""
    global _library
    with _lock:
        if _library is None:
            _library = _typed(ctypes.CDLL(path))
        return _library


def _find() -> ctypes.CDLL:
    preloaded = ctypes.CDLL(None)
    if hasattr(preloaded, "vllm_profiler_step_begin"):
        return preloaded
    env = os.environ.get("VLLM_PROFILER_LIBRARY")
    if env:
        # The user named a file: that one or an error saying why, never another copy.
        return _load_named(env)
    packaged = _packaged()
    if not os.path.exists(packaged):
        raise LibraryNotFoundError(
            f"{LIBRARY_NAME} not found. Looked: " + "; ".join(_candidates()) + ". "
            + "Preload it (LD_PRELOAD), or set VLLM_PROFILER_LIBRARY to its path."
        )
    try:
        return ctypes.CDLL(packaged)
    except OSError as err:
        raise LibraryNotFoundError(f"{packaged} cannot be loaded: {err}") from None


def _load_named(path: str) -> ctypes.CDLL:
    """The library at $VLLM_PROFILER_LIBRARY, or LibraryNotFoundError naming the path and
    the reason: missing, not loadable, or not the agent."""
    where = f"VLLM_PROFILER_LIBRARY={path!r}"
    if not os.path.exists(path):
        raise LibraryNotFoundError(
            f"{where}: no such file. Point it at {LIBRARY_NAME} or unset it.")
    try:
        # The file named, not one of that name the loader's search would find elsewhere.
        lib = ctypes.CDLL(os.path.abspath(path))
    except OSError as err:
        raise LibraryNotFoundError(f"{where} cannot be loaded: {err}") from None
    if not hasattr(lib, "vllm_profiler_step_begin"):
        raise LibraryNotFoundError(
            f"{where} is a shared library but not {LIBRARY_NAME} (it has no "
            "vllm_profiler_step_begin)"
        )
    return lib


# The recording calls: nanoseconds each, never blocking on anything that needs Python. They
# are called through `ctypes.PyDLL`, which keeps the GIL: a ctypes call through `CDLL` lets
# the GIL go and takes it back, and where another thread of the host waits for it (vLLM's
# engine core has its output thread serialising results) that thread runs first, for up to
# the interpreter's switch interval. Everything else (exports, enable, flush: file writes and
# thread starts) keeps `CDLL` and lets the GIL go.
_KEEP_GIL = (
    "vllm_profiler_step_begin",
    "vllm_profiler_step_end",
    "vllm_profiler_step_set_counts",
    "vllm_profiler_step_set_engine_step",
    "vllm_profiler_span_begin",
    "vllm_profiler_span_end",
    "vllm_profiler_span_end_annotated",
    "vllm_profiler_span_set_gpu_duration",
    "vllm_profiler_step_set_gpu_duration",
    "vllm_profiler_set_role",
    "vllm_profiler_is_enabled",
)


def releasing_gil(lib: ctypes.CDLL) -> ctypes.CDLL:
    """The agent `lib` bound anew so that every call lets the GIL go, as a plain `ctypes.CDLL`
    does: for test drivers whose other Python threads must run while one thread is inside the
    agent (a fork from another thread in the middle of a call). The package itself keeps the
    GIL for the recording calls (see `_KEEP_GIL`)."""
    return _bind(ctypes.CDLL(lib._name, handle=lib._handle), keep_gil=())


def _typed(lib: ctypes.CDLL) -> ctypes.CDLL:
    return _bind(lib, keep_gil=_KEEP_GIL)


def _bind(lib: ctypes.CDLL, keep_gil: Any) -> ctypes.CDLL:
    """Sets every C signature on `lib`; the functions named in `keep_gil` go through
    `ctypes.PyDLL`, which keeps the GIL."""
    keeping = ctypes.PyDLL(lib._name, handle=lib._handle) if keep_gil else lib
    for name, (argtypes, restype) in _SIGNATURES.items():
        func = getattr(keeping if name in keep_gil else lib, name)
        func.argtypes = argtypes
        func.restype = restype
        setattr(lib, name, func)
    return lib


def library_version() -> str:
    """The agent library's version (its crate's), which `vllm_profiler.__version__` matches."""
    return (library().vllm_profiler_version() or b"").decode()


def last_error() -> str:
    buf = ctypes.create_string_buffer(1024)
    library().vllm_profiler_last_error(buf, len(buf))
    return buf.value.decode("utf-8", "replace")


def check(code: int) -> int:
    """Raises ProfilerError for a negative code; returns it otherwise."""
    if code < 0:
        raise ProfilerError(code, last_error())
    return code


def enable(config: Optional[Dict[str, Any]] = None) -> None:
    raw = None if config is None else json.dumps(config).encode()
    check(library().vllm_profiler_enable(raw))


def disable() -> None:
    check(library().vllm_profiler_disable())


def disable_if_enabled() -> None:
    """Stops profiling and writes the reports; nothing when profiling is already off."""
    try:
        disable()
    except ProfilerError as err:
        if err.code != E_NOT_ENABLED:
            raise


def is_enabled() -> bool:
    return bool(library().vllm_profiler_is_enabled() == 1)


def export(directory: Optional[str] = None) -> int:
    raw = None if directory is None else os.fsencode(directory)
    return check(library().vllm_profiler_export(raw))


def _json_call(call: Any, *args: Any) -> Any:
    """Calls a snprintf-style JSON function, growing the buffer until the text fits. The
    first buffer is large, because some calls sample hardware again on every call."""
    size = 1 << 16
    for _ in range(_JSON_ATTEMPTS):
        buf = ctypes.create_string_buffer(size)
        need = check(call(*args, buf, len(buf)))
        if need < len(buf):
            return json.loads(buf.value)
        # The text can grow between two calls (a history being sampled every millisecond):
        # ask for room to spare, or the buffer chases the text for ever.
        size = need + need // 4 + 4096
    raise ProfilerError(
        E_INTERNAL,
        f"the JSON text kept outgrowing its buffer ({size} bytes, {_JSON_ATTEMPTS} tries)",
    )


def gpu_history(device_id: Optional[int] = None, since_unix: float = 0.0) -> GpuHistory:
    """Kept GPU samples of one device (all when None) since a Unix time."""
    # The public API checks its arguments (gpu_monitor); this module imports nothing of the
    # package, since tests/data/exits.py loads it alone.
    device = -1 if device_id is None else int(device_id)
    since = float(since_unix)
    history: GpuHistory = _json_call(library().vllm_profiler_gpu_history_json, device, since)
    return history


def gpu_list() -> GpuList:
    """The GPU list from the Rust detector chain, sampled now."""
    listed: GpuList = _json_call(library().vllm_profiler_gpus_json)
    return listed


def summary(last_n_steps: Optional[int] = None) -> PerformanceSummary:
    """The performance summary; over the last n kept steps when `last_n_steps` is given."""
    n = 0 if last_n_steps is None else int(last_n_steps)
    if not 0 <= n <= 0xFFFFFFFF:
        raise ValueError(f"last_n_steps must be an int in [0, 2**32-1], got {last_n_steps}")
    lib = library()
    while True:
        need = check(lib.vllm_profiler_summary_json(n, None, 0))
        buf = ctypes.create_string_buffer(need + 1)
        got = check(lib.vllm_profiler_summary_json(n, buf, len(buf)))
        if got < len(buf):
            result: PerformanceSummary = json.loads(buf.value)
            return result
