"""VLLMPerformanceMonitor over the agent's C ABI."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from typing import Any, Callable, Dict, Optional

from . import _checks, _native, torch_ops
from ._checks import PathArg
from .schema import CompletedStep, PerformanceSummary

logger = logging.getLogger("vllm_profiler")

StepCallback = Callable[[CompletedStep], Any]


class VLLMPerformanceMonitor:
    """Records inference steps; the agent aggregates them.

    `max_history_size` bounds the steps and samples the agent keeps for the detailed reports
    (totals always cover every step). With `enable_detailed_profiling`, the layers of the
    model runner's model are hooked (`record_shapes` adds tensor shapes).

    `on_step_completed`, when set, is called after every step with the step's record, a
    `CompletedStep` (`step_id`, `batch_size`, `num_tokens`, `start_time`, `duration_ms`). It
    can never break the step: an exception in it is logged once and otherwise ignored.
    """

    def __init__(
        self,
        model_runner: Any = None,
        enable_realtime_monitoring: bool = True,
        enable_detailed_profiling: bool = False,
        output_dir: Optional[PathArg] = None,
        sample_interval: float = 0.1,
        max_history_size: Optional[int] = None,
        record_shapes: bool = False,
    ) -> None:
        if max_history_size is not None:
            # The agent bounds it further (`max_history`), naming the setting.
            max_history_size = _checks.integer("max_history_size", max_history_size, 1,
                                               _checks.U32_MAX)
        self.model_runner = model_runner
        self.max_history_size = max_history_size
        self.record_shapes = _checks.flag("record_shapes", record_shapes)
        self.enable_realtime_monitoring = _checks.flag("enable_realtime_monitoring",
                                                       enable_realtime_monitoring)
        self.enable_detailed_profiling = _checks.flag("enable_detailed_profiling",
                                                      enable_detailed_profiling)
        self.output_dir = None if output_dir is None else _checks.path("output_dir", output_dir)
        self.sample_interval = _checks.number("sample_interval", sample_interval)
        self.on_step_completed: Optional[StepCallback] = None
        self._steps = 0
        self._callback_failed = False
        self._started_here = False
        self._layers: Optional[Any] = None

    def start_monitoring(self) -> None:
        """Starts the profiler unless it already runs (from the environment, say). With
        `enable_detailed_profiling`, hooks every layer of the model runner's model."""
        if self.enable_detailed_profiling and self._layers is None:
            from .layers import LayerProfiler, find_model

            model = find_model(self.model_runner)
            if model is not None:
                self._layers = LayerProfiler(
                    model, prefix=None, record_shapes=self.record_shapes
                ).attach()
        if _native.is_enabled():
            if self.max_history_size is not None:
                _native.enable({"max_history": int(self.max_history_size)})
            return
        config: Dict[str, Any] = {
            "enable_gpu_monitoring": bool(self.enable_realtime_monitoring),
            "enable_layer_profiling": bool(self.enable_detailed_profiling),
            "sample_interval": float(self.sample_interval),
        }
        if self.output_dir is not None:
            config["output_dir"] = _checks.writable_directory("output_dir", self.output_dir)
        if self.max_history_size is not None:
            config["max_history"] = int(self.max_history_size)
        _native.enable(config)
        self._started_here = True

    def stop_monitoring(self) -> None:
        """Removes the layer hooks, and stops the profiler if this monitor started it,
        writing the reports."""
        if self._layers is not None:
            self._layers.detach()
            self._layers = None
        if self._started_here:
            self._started_here = False
            _native.disable_if_enabled()

    def profile_inference_step(self, batch_size: int, num_tokens: int) -> "_InferenceStep":
        """Records the block as one step. A step the profiler cannot record (profiling off)
        still runs; the block's exceptions pass through untouched. Also usable as a
        decorator. `batch_size` and `num_tokens` are ints in [0, 2**32-1] (TypeError or
        ValueError otherwise)."""
        # The common case without a call: this runs on every step.
        if not (type(batch_size) is int and 0 <= batch_size <= _checks.U32_MAX):
            batch_size = _checks.u32("batch_size", batch_size)
        if not (type(num_tokens) is int and 0 <= num_tokens <= _checks.U32_MAX):
            num_tokens = _checks.u32("num_tokens", num_tokens)
        return _InferenceStep(self, batch_size, num_tokens)

    def _completed(self, record: CompletedStep) -> None:
        callback = self.on_step_completed
        if callback is None:
            return
        try:
            callback(record)
        except Exception:  # noqa: BLE001 - a user callback must never break a step
            if not self._callback_failed:
                self._callback_failed = True
                logger.exception(
                    "on_step_completed raised; steps are still recorded (reported once)"
                )

    def get_performance_summary(
        self, last_n_steps: Optional[int] = None
    ) -> PerformanceSummary:
        """The performance summary: totals over every step, or over the last n kept steps
        (`last_n_steps` None or 0: every step)."""
        if last_n_steps is not None:
            last_n_steps = _checks.u32("last_n_steps", last_n_steps)
        return _native.summary(last_n_steps)

    def export_performance_report(self, path: PathArg) -> str:
        """Writes one JSON file with the summary, the detailed steps and the GPU history;
        returns its path."""
        path = _checks.path("path", path)
        pid = os.getpid()
        with tempfile.TemporaryDirectory(prefix="vllm-profiler-") as tmp:
            _native.export(tmp)
            report: Dict[str, Any] = {}
            for key, name in (
                ("performance_summary", f"performance_summary_{pid}.json"),
                ("detailed_steps", f"detailed_steps_{pid}.json"),
                ("gpu_history", f"gpu_history_{pid}.json"),
            ):
                file = os.path.join(tmp, name)
                if os.path.exists(file):
                    with open(file, encoding="utf-8") as f:
                        report[key] = json.load(f)
        if "performance_summary" not in report:
            report["performance_summary"] = _native.summary()
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd, partial = tempfile.mkstemp(prefix=".report-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(report, f, indent=2)
            os.chmod(partial, 0o644)  # mkstemp's 0600 would hide the report from others
            os.replace(partial, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise
        return path


class _InferenceStep(contextlib.ContextDecorator):
    """The context manager of `profile_inference_step`: a class rather than a generator,
    because it runs on every engine step (a generator-based one costs about twice as much)."""

    __slots__ = ("monitor", "batch_size", "num_tokens", "handle", "start_time", "start")

    def __init__(self, monitor: VLLMPerformanceMonitor, batch_size: int, num_tokens: int):
        self.monitor = monitor
        self.batch_size = batch_size
        self.num_tokens = num_tokens

    def _recreate_cm(self) -> "_InferenceStep":
        # As a decorator, each call is a step of its own (recursion and threads included).
        return _InferenceStep(self.monitor, self.batch_size, self.num_tokens)

    def __enter__(self) -> None:
        lib = _native._library or _native.library()
        # Checked by `profile_inference_step`.
        batch, tokens = self.batch_size, self.num_tokens
        user = _native._user_steps
        try:
            user.depth += 1
        except AttributeError:
            user.depth = 1
        self.start_time = _wall()
        self.start = _perf_ns()
        self.handle = handle = lib.vllm_profiler_step_begin(batch, tokens)
        if user.depth == 1 and (handle or torch_ops._orphans):
            # Also with profiling off: a window stopped from another thread stops here.
            torch_ops.step_begin(lib, handle)

    def __exit__(self, *exc_info: Any) -> None:
        duration_ns = _perf_ns() - self.start
        user = _native._user_steps
        depth = getattr(user, "depth", 0)
        user.depth = depth - 1 if depth > 0 else 0
        handle = self.handle
        if handle:
            lib = _native._library  # loaded: the handle came from it
            lib.vllm_profiler_step_end(handle)  # type: ignore[union-attr]
            torch_ops.step_end(lib, handle)
            monitor = self.monitor
            monitor._steps += 1
            if monitor.on_step_completed is not None:
                monitor._completed(
                    {
                        "step_id": monitor._steps - 1,
                        "batch_size": self.batch_size,
                        "num_tokens": self.num_tokens,
                        "start_time": self.start_time,
                        "duration_ms": duration_ns / 1e6,
                    }
                )


_wall = time.time
_perf_ns = time.perf_counter_ns
