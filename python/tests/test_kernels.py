"""The kernel tracer steps aside for the torch profiler: with VLLM_PROFILING_KERNELS=1 on the
fake CUPTI (crates/fake-cupti), a torch profiler with CUDA activity makes the agent release
CUPTI before it prepares its trace and take it back after it exits. Real torch, CPU build: the
fake stands in for CUPTI, and a small class for torch's profiler where CUDA activity stays on
(torch turns it off without a GPU); that torch's own class is wrapped is checked on the real
one."""

import json
import subprocess
import sys
import textwrap

from conftest import build, clean_env

CHILD = textwrap.dedent(
    """
    import ctypes, json, os, sys, time
    from vllm_profiler import _vllm_hook, _native
    _vllm_hook.install()  # what vllm_profiler.pth does at start-up
    import torch
    from torch.profiler import profile, ProfilerActivity

    fake = ctypes.CDLL(os.environ["FAKE_CUPTI_PATH"])
    fake.fake_cupti_external_depth.argtypes = [ctypes.c_uint32]
    fake.fake_cupti_external_depth.restype = ctypes.c_uint32
    fake.fake_cupti_launch.argtypes = [ctypes.c_char_p, ctypes.c_uint32, ctypes.c_uint32,
        ctypes.c_uint64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint16, ctypes.c_uint32,
        ctypes.c_uint32]
    fake.fake_cupti_launch.restype = ctypes.c_uint32
    lib = _native.library()

    def step(name, launches):
        s = lib.vllm_profiler_step_begin(1, 1)
        depth = fake.fake_cupti_external_depth(5)
        for _ in range(launches):
            fake.fake_cupti_launch(name, 0, 0, 1000, None, None, 8, 0, 0)
        lib.vllm_profiler_step_end(s)
        return depth

    for _ in range(1000):
        if step(b"warmup", 0) == 1:
            break
        time.sleep(0.01)
    else:
        sys.exit("the tracer never correlated")
    from vllm_profiler import _torch_profiler_hook as hook
    import torch.autograd.profiler as autograd_profiler
    wrapped = hook.wrapped(autograd_profiler.profile._prepare_trace)
    step(b"before_profiler", 2)
    # Real torch: a profiler without CUDA activity (torch turns it off where there is no GPU)
    # never touches CUPTI, so it stays ours.
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]):
        inside_cpu_only = step(b"cpu_only_profiler", 3)

    # A stand-in for torch's class where CUDA activity stays on (only a GPU keeps it): the
    # same wrapping, around a profiler that would take CUPTI.
    class CudaProfile:
        use_device = "cuda"
        def _prepare_trace(self):
            pass
        def __exit__(self, *exc):
            return False
    import types
    hook.patch(types.SimpleNamespace(profile=CudaProfile))
    p = CudaProfile()
    p._prepare_trace()
    inside = step(b"inside_profiler", 5)
    p.__exit__(None, None, None)
    after = step(b"after_profiler", 4)
    print(json.dumps({"wrapped": wrapped, "inside_cpu_only": inside_cpu_only, "inside": inside,
                      "after": after}))
    """
)


def test_torch_profiler_gets_cupti_while_it_runs(agent_library, tmp_path):
    fake = build("fake-cupti", "libfake_cupti.so")
    calls = tmp_path / "calls.log"
    out = tmp_path / "out"
    env = clean_env()
    env.update(
        {
            "LD_PRELOAD": str(agent_library),
            "VLLM_ENABLE_PROFILING": "1",
            "VLLM_PROFILING_OUTPUT_DIR": str(out),
            "VLLM_PROFILING_KERNELS": "1",
            "VLLM_PROFILING_CUPTI_LIBRARY": str(fake),
            "FAKE_CUPTI_PATH": str(fake),
            "FAKE_CUPTI_SCRIPT": json.dumps({"call_log": str(calls)}),
        }
    )
    proc = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    # torch's profiler class is wrapped at import; a CPU-only profiler leaves CUPTI to us; one
    # with CUDA activity gets it while it runs, and we take it back after.
    assert seen == {"wrapped": True, "inside_cpu_only": 1, "inside": 0, "after": 1}
    log = [line.split()[1] for line in calls.read_text().splitlines()]
    # Taken at start, released for the profiler, taken back, released at exit.
    assert log.count("cuptiSubscribe") == 2 and log.count("cuptiUnsubscribe") == 2, log
    kernels = _summary(out)["kernel_performance"]
    assert {name: k["call_count"] for name, k in kernels.items()} == {
        "before_profiler": 2, "cpu_only_profiler": 3, "after_profiler": 4,
    }


def _summary(out):
    [path] = out.glob("performance_summary_*.json")
    return json.loads(path.read_text())
