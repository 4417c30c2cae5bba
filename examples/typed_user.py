"""A small user script with full annotations: CI type-checks it with `mypy --strict` against
the package (so the package's public types stay usable), and the tests run it.

    PYTHONPATH=python VLLM_PROFILER_LIBRARY=target/release/libvllm_profiler.so \
        python examples/typed_user.py OUTPUT_DIR
"""

from __future__ import annotations

import pathlib
import sys
from typing import List

from vllm_profiler import (
    CompletedStep,
    PerformanceSummary,
    VLLMPerformanceMonitor,
    VLLMProfilingContext,
    profile_vllm_function,
)


@profile_vllm_function(enable_gpu_monitoring=False, output_dir="unused")
def decorated(x: int) -> int:
    return x + 1


def main(output_dir: pathlib.Path) -> int:
    monitor = VLLMPerformanceMonitor(enable_realtime_monitoring=False, max_history_size=100)
    completed: List[CompletedStep] = []
    monitor.on_step_completed = completed.append
    with VLLMProfilingContext(enable_gpu_monitoring=False, output_dir=output_dir):
        for i in range(1, 4):
            with monitor.profile_inference_step(batch_size=i, num_tokens=10 * i):
                pass
        summary: PerformanceSummary = monitor.get_performance_summary()
    # Typed keys: mypy knows each value's type (and rejects a key the schema lacks).
    steps: int = summary["total_steps"]
    kept: int = summary["counters"]["kept_steps"]
    tokens = sum(step["num_tokens"] for step in completed)
    print(steps)
    return 0 if steps == kept == len(completed) == 3 and tokens == 60 else 1


if __name__ == "__main__":
    sys.exit(main(pathlib.Path(sys.argv[1])))
