"""vllm_profiler: seed 004's profiling API over libvllm_profiler.so.

Import paths follow seed 004 with `vllm_profiler` in place of `vllm.profiler`:
`vllm_profiler.integration`, `vllm_profiler.vllm_monitor`.
"""

from ._native import LibraryNotFoundError, ProfilerError
from .integration import (
    VLLMProfilingContext,
    disable_vllm_profiling,
    enable_vllm_profiling,
    is_profiling_enabled,
    profile_vllm_function,
)
from .vllm_monitor import VLLMPerformanceMonitor

__all__ = [
    "LibraryNotFoundError",
    "ProfilerError",
    "VLLMPerformanceMonitor",
    "VLLMProfilingContext",
    "disable_vllm_profiling",
    "enable_vllm_profiling",
    "is_profiling_enabled",
    "profile_vllm_function",
]
