"""The code-integration API of vLLM's profiling design: a function pair, a context manager and a
decorator.

```python
from vllm_profiler.integration import enable_vllm_profiling, disable_vllm_profiling
enable_vllm_profiling(enable_gpu_monitoring=True, output_dir="./profiling_results")
...
disable_vllm_profiling()   # stops the threads and writes the reports
```
"""

from __future__ import annotations

import functools
import inspect
import os
from typing import Any, Callable, Dict, Optional, TypeVar

from . import _checks, _native, _vllm_hook, layers
from ._checks import PathArg
from ._stderr import warn_once

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_OUTPUT_DIR = "./profiling_results"


def _config(
    enable_gpu_monitoring: bool,
    enable_layer_profiling: bool,
    output_dir: PathArg,
    sample_interval: float,
    auto_export_interval: Optional[float],
    enable_torch_op_profiling: Optional[bool] = None,
    record_shapes: bool = False,
) -> Dict[str, Any]:
    """The agent's settings of the API's arguments, each checked for its type (the agent
    checks ranges, naming the setting); raises TypeError or ValueError naming the parameter."""
    _checks.flag("record_shapes", record_shapes)
    config: Dict[str, Any] = {
        "enable_gpu_monitoring": _checks.flag("enable_gpu_monitoring", enable_gpu_monitoring),
        "enable_layer_profiling": _checks.flag("enable_layer_profiling", enable_layer_profiling),
        "output_dir": _checks.path("output_dir", output_dir),
        "sample_interval": _checks.number("sample_interval", sample_interval),
    }
    if auto_export_interval is not None:
        config["auto_export_interval"] = _checks.number("auto_export_interval",
                                                        auto_export_interval)
    if enable_torch_op_profiling is not None:
        config["enable_torch_op_profiling"] = _checks.flag("enable_torch_op_profiling",
                                                           enable_torch_op_profiling)
    return config


# Environment values replaced by `_start`, restored by `disable_vllm_profiling`.
_saved_environment: Optional[Dict[str, Optional[str]]] = None


def _flag(value: bool) -> str:
    return "1" if value else "0"


def _export_to_children(config: Dict[str, Any], record_shapes: bool) -> None:
    """vLLM runs its engine and workers in processes of their own (spawned): the settings go
    into the environment, so that those processes profile themselves (each writes its own
    reports, under its own pid) through the agent and the package's start-up hook."""
    global _saved_environment
    values = {
        "VLLM_ENABLE_PROFILING": "1",
        "VLLM_ENABLE_GPU_MONITORING": _flag(config["enable_gpu_monitoring"]),
        "VLLM_ENABLE_LAYER_PROFILING": _flag(config["enable_layer_profiling"]),
        "VLLM_PROFILING_RECORD_SHAPES": _flag(record_shapes),
        "VLLM_PROFILING_OUTPUT_DIR": os.path.abspath(config["output_dir"]),
        "VLLM_PROFILING_SAMPLE_INTERVAL": repr(config["sample_interval"]),
    }
    if "auto_export_interval" in config:
        values["VLLM_PROFILING_EXPORT_INTERVAL"] = repr(config["auto_export_interval"])
    if "enable_torch_op_profiling" in config:
        values["VLLM_PROFILING_TORCH_OPS"] = _flag(config["enable_torch_op_profiling"])
    if _saved_environment is None:
        _saved_environment = {}
    for key, value in values.items():
        _saved_environment.setdefault(key, os.environ.get(key))
        os.environ[key] = value


def _restore_environment() -> None:
    global _saved_environment
    for key, value in (_saved_environment or {}).items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _saved_environment = None


def _start(config: Dict[str, Any], record_shapes: bool) -> None:
    """Starts the agent, then profiles vLLM: its engine steps, and with layer profiling the
    layers of every model it loads (or has loaded), in this process and in the processes it
    starts from now on."""
    # A directory the reports cannot go to is an error now, not at the first export.
    _checks.writable_directory("output_dir", config["output_dir"])
    _native.enable(config)
    _export_to_children(config, record_shapes)
    layers.configure_auto_attach(config["enable_layer_profiling"], record_shapes)
    try:
        _vllm_hook.install()
        _vllm_hook.discover_running_engine(hook_layers=config["enable_layer_profiling"])
    except Exception as err:  # noqa: BLE001 - the agent runs; only the vLLM hook failed
        warn_once(f"could not hook vLLM ({err}): record steps with VLLMPerformanceMonitor")


def enable_vllm_profiling(
    enable_gpu_monitoring: bool = True,
    enable_layer_profiling: bool = False,
    output_dir: PathArg = DEFAULT_OUTPUT_DIR,
    sample_interval: float = 0.1,
    auto_export_interval: Optional[float] = None,
    *,
    record_shapes: bool = False,
    enable_torch_op_profiling: Optional[bool] = None,
) -> None:
    """Starts profiling in this process, or applies these settings to a running profiler
    (for example one started by VLLM_ENABLE_PROFILING=1). vLLM's engine steps become profiler
    steps; with `enable_layer_profiling` its model's layers are hooked too (`record_shapes`
    adds tensor shapes to each layer); `enable_torch_op_profiling` runs the torch profiler
    for 5 steps of every 200 (`vllm_profiler.torch_ops`; None keeps what the environment
    says). Python processes started from now on (vLLM's engine
    and workers) inherit the settings through the environment and profile themselves. Raises
    ProfilerError on a bad setting, changing nothing."""
    _start(
        _config(
            enable_gpu_monitoring,
            enable_layer_profiling,
            output_dir,
            sample_interval,
            auto_export_interval,
            enable_torch_op_profiling,
            record_shapes,
        ),
        record_shapes,
    )


def disable_vllm_profiling() -> None:
    """Removes the layer hooks, stops profiling and writes the reports; child processes
    started from now on are not profiled. Does nothing if profiling is off."""
    layers.detach_auto_attached()
    layers.configure_auto_attach(False)
    _restore_environment()
    if _native.is_enabled():
        from . import torch_ops

        torch_ops.close(_native.library())
    _native.disable_if_enabled()


def is_profiling_enabled() -> bool:
    return _native.is_enabled()


class VLLMProfilingContext:
    """`with VLLMProfilingContext(...):` profiles the block and writes the reports at its end,
    also when the block raises."""

    def __init__(
        self,
        enable_gpu_monitoring: bool = True,
        enable_layer_profiling: bool = False,
        output_dir: PathArg = DEFAULT_OUTPUT_DIR,
        sample_interval: float = 0.1,
        auto_export_interval: Optional[float] = None,
        *,
        record_shapes: bool = False,
        enable_torch_op_profiling: Optional[bool] = None,
    ) -> None:
        self._record_shapes = record_shapes
        self._config = _config(
            enable_gpu_monitoring,
            enable_layer_profiling,
            output_dir,
            sample_interval,
            auto_export_interval,
            enable_torch_op_profiling,
            record_shapes,
        )

    def __enter__(self) -> "VLLMProfilingContext":
        _start(self._config, self._record_shapes)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        disable_vllm_profiling()

    async def __aenter__(self) -> "VLLMProfilingContext":
        return self.__enter__()

    async def __aexit__(self, *exc_info: Any) -> None:
        self.__exit__(*exc_info)


def profile_vllm_function(
    enable_gpu_monitoring: bool = True,
    enable_layer_profiling: bool = False,
    output_dir: PathArg = DEFAULT_OUTPUT_DIR,
    sample_interval: float = 0.1,
    auto_export_interval: Optional[float] = None,
    *,
    record_shapes: bool = False,
    enable_torch_op_profiling: Optional[bool] = None,
) -> Callable[[F], F]:
    """Decorator: each call of the function (sync or async) runs inside a
    VLLMProfilingContext. Keeps the function's name, docstring and signature."""

    # Wrong types fail at the decoration; values out of range at the first call, where the
    # agent checks them (its table is the one source of the ranges).
    _config(enable_gpu_monitoring, enable_layer_profiling, output_dir, sample_interval,
            auto_export_interval, enable_torch_op_profiling, record_shapes)

    def decorate(func: F) -> F:
        def context() -> VLLMProfilingContext:
            return VLLMProfilingContext(
                enable_gpu_monitoring, enable_layer_profiling, output_dir, sample_interval,
                auto_export_interval, record_shapes=record_shapes,
                enable_torch_op_profiling=enable_torch_op_profiling,
            )

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with context():
                    return await func(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with context():
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
