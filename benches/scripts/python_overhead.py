"""P3: Python per-step overhead of the vllm_profiler package against a bare timing baseline.

Measures, in one process, with the agent enabled (no GPU sampling, so nothing competes):
- baseline: `t = time.perf_counter_ns(); ...; lst.append(time.perf_counter_ns() - t)`, the
  least a Python step timer costs;
- step: `with VLLMPerformanceMonitor().profile_inference_step(batch, tokens): pass`;
- layer pair: one pre- and post-hook of vllm_profiler.layers. With torch: a forward of an
  nn.Module with a LayerProfiler attached minus the same forward without it (what the hooks
  add), and also the two hook functions called directly. Without torch: the direct calls only.

Every figure is the median over rounds of (loop time / iterations), in ns. Prints one JSON
object. Run with PYTHONPATH=python and VLLM_PROFILER_LIBRARY=target/release/libvllm_profiler.so.
"""

import argparse
import json
import statistics
import sys
import time

TARGET_NS = 2000.0
TARGET_RATIO = 2.5


def per_iter(fns, n, rounds):
    """{name: median over rounds of ns per iteration}; fns[name](k) runs k iterations. The
    rounds of the candidates alternate, so a noisy neighbour hits them all alike."""
    for fn in fns.values():
        fn(min(n, 1000))  # warm up
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter_ns()
            fn(n)
            samples[name].append((time.perf_counter_ns() - t0) / n)
    return {name: statistics.median(v) for name, v in samples.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a run of a few seconds")
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    n = args.iterations or (5_000 if args.smoke else 100_000)
    rounds = args.rounds or (3 if args.smoke else 15)

    from vllm_profiler import _native
    from vllm_profiler.layers import _hooks
    from vllm_profiler.vllm_monitor import VLLMPerformanceMonitor

    if not _native.is_enabled():
        _native.enable({"enable_gpu_monitoring": False})
    lib = _native.library()
    monitor = VLLMPerformanceMonitor()
    perf = time.perf_counter_ns

    def baseline(k):
        lst = []
        append = lst.append
        for _ in range(k):
            t = perf()
            append(perf() - t)

    def step(k):
        profile = monitor.profile_inference_step
        for _ in range(k):
            with profile(8, 512):
                pass

    pre, post = _hooks(lib, b"bench.layer", None, False)

    def hooks_direct(k):
        # Inside one open step, as in a forward; a new step every 1000 pairs.
        done = 0
        while done < k:
            chunk = min(1000, k - done)
            handle = lib.vllm_profiler_step_begin(1, 1)
            for _ in range(chunk):
                pre(None, ())
                post(None, (), None)
            lib.vllm_profiler_step_end(handle)
            done += chunk

    results = per_iter(
        {"baseline_ns": baseline, "step_ns": step, "layer_pair_direct_ns": hooks_direct},
        n,
        rounds,
    )

    layer_mode = "hook functions called directly (torch absent)"
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torch
    except ImportError:
        torch = None
    if torch is not None:
        from vllm_profiler.layers import LayerProfiler

        module = torch.nn.Identity()
        x = torch.zeros(1)

        tn = max(n // 2, 1000)
        noop = torch.nn.Identity()
        noop.register_forward_pre_hook(lambda m, i: None)
        noop.register_forward_hook(lambda m, i, o: None)
        hooked_module = torch.nn.Identity()
        LayerProfiler(hooked_module, prefix="bench", memory_probe=None).attach()

        def forward_of(mod):
            def run(k):
                done = 0
                while done < k:
                    chunk = min(1000, k - done)
                    handle = lib.vllm_profiler_step_begin(1, 1)
                    for _ in range(chunk):
                        mod(x)
                    lib.vllm_profiler_step_end(handle)
                    done += chunk

            return run

        torch_results = per_iter(
            {"plain": forward_of(module), "noop": forward_of(noop), "hooked": forward_of(hooked_module)},
            tn,
            rounds,
        )
        plain, noop_hooks, hooked = (torch_results[k] for k in ("plain", "noop", "hooked"))
        results["torch_forward_plain_ns"] = plain
        results["torch_forward_noop_hooks_ns"] = noop_hooks
        results["torch_forward_hooked_ns"] = hooked
        results["layer_pair_torch_added_ns"] = hooked - plain
        layer_mode = (
            f"torch {torch.__version__} nn.Identity forward with LayerProfiler minus without"
        )
        layer_ns = hooked - plain
    else:
        layer_ns = results["layer_pair_direct_ns"]

    base = results["baseline_ns"]
    out = {
        "id": "P3",
        "python": sys.version.split()[0],
        "iterations": n,
        "rounds": rounds,
        "layer_mode": layer_mode,
        **{k: round(v, 1) for k, v in results.items()},
        "step_ratio": round(results["step_ns"] / base, 2),
        "layer_pair_ns": round(layer_ns, 1),
        "layer_pair_ratio": round(layer_ns / base, 2),
        "target": f"<= {TARGET_NS:.0f} ns per step and <= {TARGET_RATIO}x the bare baseline",
        "target_ns": TARGET_NS,
        "target_ratio": TARGET_RATIO,
    }
    out["step_met"] = out["step_ns"] <= TARGET_NS and out["step_ratio"] <= TARGET_RATIO
    out["layer_pair_met"] = layer_ns <= TARGET_NS and out["layer_pair_ratio"] <= TARGET_RATIO
    out["met"] = out["step_met"] and out["layer_pair_met"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
