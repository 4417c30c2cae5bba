"""A minimal ctypes binding of libvllm_profiler.so's C ABI.

Every foreign function gets its argtypes and restype: without them ctypes truncates the 64-bit
handles. Finds the library already preloaded (LD_PRELOAD), or at $VLLM_PROFILER_LIBRARY, or at
the path given. The full Python package (seed 004's API) builds on the same calls.
"""

import ctypes
import json
import os

_SIGNATURES = {
    "vllm_profiler_enable": ([ctypes.c_char_p], ctypes.c_int32),
    "vllm_profiler_disable": ([], ctypes.c_int32),
    "vllm_profiler_finish": ([], ctypes.c_int32),
    "vllm_profiler_flush": ([], ctypes.c_int32),
    "vllm_profiler_is_enabled": ([], ctypes.c_int32),
    "vllm_profiler_set_role": ([ctypes.c_char_p, ctypes.c_int32], ctypes.c_int32),
    "vllm_profiler_step_begin": ([ctypes.c_uint32, ctypes.c_uint32], ctypes.c_uint64),
    "vllm_profiler_step_set_counts": (
        [ctypes.c_uint64, ctypes.c_uint32, ctypes.c_uint32],
        ctypes.c_int32,
    ),
    "vllm_profiler_step_set_engine_step": ([ctypes.c_uint64, ctypes.c_uint64], ctypes.c_int32),
    "vllm_profiler_step_end": ([ctypes.c_uint64], ctypes.c_int32),
    "vllm_profiler_span_begin": ([ctypes.c_char_p], ctypes.c_uint64),
    "vllm_profiler_span_end": ([ctypes.c_uint64], ctypes.c_int32),
    "vllm_profiler_span_end_annotated": (
        [ctypes.c_uint64, ctypes.c_double, ctypes.c_char_p],
        ctypes.c_int32,
    ),
    "vllm_profiler_export": ([ctypes.c_char_p], ctypes.c_int32),
    "vllm_profiler_summary_json": (
        [ctypes.c_uint32, ctypes.c_char_p, ctypes.c_size_t],
        ctypes.c_int64,
    ),
    "vllm_profiler_last_error": ([ctypes.c_char_p, ctypes.c_size_t], ctypes.c_int32),
}


def load(path=None):
    """Returns the library with every function typed: the one at `path`, else the preloaded
    one, else the one at $VLLM_PROFILER_LIBRARY."""
    if path is None:
        preloaded = ctypes.CDLL(None)
        if hasattr(preloaded, "vllm_profiler_step_begin"):
            return _typed(preloaded)
        path = os.environ.get("VLLM_PROFILER_LIBRARY")
        if not path:
            raise OSError(
                "libvllm_profiler.so not found: it is not preloaded (LD_PRELOAD) "
                "and VLLM_PROFILER_LIBRARY is unset"
            )
    return _typed(ctypes.CDLL(path))


def _typed(lib):
    for name, (argtypes, restype) in _SIGNATURES.items():
        func = getattr(lib, name)
        func.argtypes = argtypes
        func.restype = restype
    return lib


def last_error(lib):
    buf = ctypes.create_string_buffer(512)
    lib.vllm_profiler_last_error(buf, len(buf))
    return buf.value.decode("utf-8", "replace")


def summary(lib, last_n_steps=0):
    """The performance summary as a dict."""
    while True:
        need = lib.vllm_profiler_summary_json(last_n_steps, None, 0)
        if need < 0:
            raise RuntimeError(last_error(lib))
        buf = ctypes.create_string_buffer(need + 1)
        got = lib.vllm_profiler_summary_json(last_n_steps, buf, len(buf))
        if 0 <= got < len(buf):
            return json.loads(buf.value)
