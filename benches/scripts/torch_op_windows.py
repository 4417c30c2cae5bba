"""P12: host slowdown of torch-op windows at their defaults (5 steps of every 200), issue 17.

In one process, on real torch (CPU, one intra-op thread): a transformer of 2 encoder layers runs
steps through `VLLMPerformanceMonitor`, in arms of two windows' periods (400 steps at the
defaults) that alternate between windows off and windows on (`enable_torch_op_profiling`, set
on the running agent between arms). An on arm
holds exactly 2 windows: their profiled steps, the torch profiler's start and stop, and the
folding of its events into the agent's document are all in its time. A warm-up arm with
windows on pays the torch profiler's one-time start first. Two sizes, the same ops per step
(about 250): `small` (d_model 128, 4 x 32 tokens: about 10 us of work per op, where the
profiler's own cost per op weighs most) and `large` (d_model 256, 8 x 96 tokens: about ten times
the work per op, nearer a decode step on a GPU, where each op waits on its kernels).

Each step is timed around its `profile_inference_step` block, which holds everything a window
does (its start in the first profiled step's begin, its stop and folding in the last one's
end). The figure is robust to this machine's noise: an on arm starts just after a window, so
its windows are the last K steps of each period (195-199 and 395-399 at the defaults, read
from the agent's schedule); what they add is the sum of those steps' times less 2K times the
arm's median step (an unprofiled one's), and the slowdown is that over the arm's length in
median steps. Per size: the
median over rounds of that slowdown and of what one window adds, and the median step of the off
and on arms (what the schedule check costs an unprofiled step).
Prints one JSON object. Run with PYTHONPATH=python and VLLM_PROFILER_LIBRARY=<release library>.
"""

import argparse
import json
import statistics
import sys
import time

TARGET_PCT = 5.0
SIZES = (("small", 128, (4, 32)), ("large", 256, (8, 96)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one round")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.smoke else 10)

    import torch
    from vllm_profiler import _native
    from vllm_profiler.vllm_monitor import VLLMPerformanceMonitor

    torch.set_num_threads(1)
    monitor = VLLMPerformanceMonitor()

    def windows(on):
        _native.enable({"enable_gpu_monitoring": False, "enable_torch_op_profiling": on})

    # The defaults, as the agent gives them: the last `profiled` of every `every` steps.
    windows(True)
    schedule = _native.library().vllm_profiler_torch_op_schedule()
    every, profiled = schedule >> 32, schedule & 0xFFFFFFFF
    steps_per_arm = 2 * every
    window_steps = [*range(every - profiled, every), *range(2 * every - profiled, 2 * every)]

    def windows_seen():
        return _native.summary()["counters"]["torch_op_windows"]

    result = {"rounds": rounds, "every": every, "steps": profiled, "steps_per_arm": steps_per_arm,
              "target_pct": TARGET_PCT}
    for size, d_model, shape in SIZES:
        torch.manual_seed(0)
        layer = torch.nn.TransformerEncoderLayer(d_model=d_model, nhead=4,
                                                 dim_feedforward=4 * d_model, batch_first=True)
        model = torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        model = model.eval()
        x = torch.randn(*shape, d_model)

        def arm(steps=steps_per_arm):
            times = []
            clock = time.perf_counter_ns
            with torch.no_grad():
                for _ in range(steps):
                    t0 = clock()
                    with monitor.profile_inference_step(shape[0], shape[0] * shape[1]):
                        model(x)
                    times.append(clock() - t0)
            return times

        windows(False)
        arm(20)
        windows(True)
        # Up to the next window's end: the first one pays the profiler's one-time start.
        seen = windows_seen()
        while windows_seen() == seen:
            arm(5)
        before = windows_seen()
        off, on, slowdown, per_window_ms = [], [], [], []
        for r in range(rounds):
            pair = {}
            for state in ((False, True) if r % 2 == 0 else (True, False)):
                windows(state)
                pair[state] = arm()
            off.append(statistics.median(pair[False]))
            median = statistics.median(pair[True])
            on.append(median)
            extra = sum(pair[True][i] - median for i in window_steps)
            slowdown.append(extra / (steps_per_arm * median) * 100)
            per_window_ms.append(extra / 2 / 1e6)
        seen = windows_seen() - before
        if seen != 2 * rounds:
            sys.exit(f"{size}: expected {2 * rounds} windows in the on arms, the agent saw {seen}")
        result[size] = {
            "windows": seen,
            "off_step_ms_median": statistics.median(off) / 1e6,
            "on_step_ms_median": statistics.median(on) / 1e6,
            "slowdown_pct_median": statistics.median(slowdown),
            "slowdown_pct_min": min(slowdown),
            "slowdown_pct_max": max(slowdown),
            "per_window_ms_median": statistics.median(per_window_ms),
            "met": statistics.median(slowdown) <= TARGET_PCT,
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
