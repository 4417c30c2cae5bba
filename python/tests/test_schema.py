"""The TypedDicts of vllm_profiler.schema against their one source, the serde structs of
crates/format: each class has exactly its struct's keys (an `Option` field is a key whose value
is Optional, a `skip_serializing_if` field an optional key; nested structs are the nested
classes), read from the Rust source here; and the real agent, on the fake NVML and the fake
CUPTI, writes exactly those keys, every optional one included, in what the API returns and in
the report files. A key added on either side and not the other fails."""

import json
import re
import subprocess
import sys
import textwrap
import typing

import pytest

from conftest import PACKAGE_DIR, ROOT, build, clean_env, read_report

sys.path.insert(0, str(PACKAGE_DIR))

from vllm_profiler import schema  # noqa: E402

FORMAT_SRC = ROOT / "crates" / "format" / "src"
# Made by the package, not written by the agent: held to what the package gives (below).
PACKAGE_MADE = {"CompletedStep", "GpuMonitorMetrics"}
# Serde attributes of a field this test understands.
FIELD_ATTRS = {"default", 'skip_serializing_if = "Option::is_none"'}
NONE = type(None)


def typed_dicts():
    """Name -> class of every TypedDict the module exports."""
    return {name: getattr(schema, name) for name in schema.__all__
            if is_typed_dict(getattr(schema, name))}


def is_typed_dict(hint):
    return isinstance(hint, type) and issubclass(hint, dict) and hasattr(hint, "__total__")


def keys(td):
    return set(td.__required_keys__) | set(td.__optional_keys__)


def rust_items():
    """crates/format's structs (name -> {field: (rust type, its serde attributes)}, and
    under "" the struct's serde attributes and the lines of its body not understood) and
    snake_case enums (name -> [variant names as serialised]), read from the source."""
    structs, enums, other = {}, {}, set()
    for path in sorted(FORMAT_SRC.glob("*.rs")):
        attrs, body, name = [], None, None
        for line in path.read_text(encoding="utf-8").splitlines():
            text = line.strip()
            if text == "#[cfg(test)]":
                break
            if body is None:
                if text.startswith("#[serde("):
                    attrs.append(text)
                    continue
                struct = re.match(r"pub struct (\w+)(<.*>)? \{$", text)
                enum = re.match(r"pub enum (\w+) \{$", text)
                if struct or enum:
                    name = (struct or enum)[1]
                    assert name not in structs and name not in enums, f"{name} twice"
                    if struct:
                        body = structs[name] = {"": (set(attrs), [])}
                    else:
                        body = enums[name] = []
                        if not any('rename_all = "snake_case"' in a for a in attrs):
                            other.add(name)
                    attrs = []
                elif not text.startswith(("///", "//", "#[")):
                    attrs = []
                continue
            if text == "}":
                body, attrs = None, []
                continue
            if isinstance(body, dict):
                field = re.match(r"(?:pub(?:\(\w+\))? )?(\w+): (.+),$", text)
                if text.startswith("#[serde(") and text.endswith(")]"):
                    attrs.extend(a.strip() for a in text[len("#[serde("):-2].split(","))
                elif field:
                    body[field[1]] = (field[2], set(attrs))
                    attrs = []
                elif text and not text.startswith("///"):
                    body[""][1].append(text)
            elif isinstance(body, list) and re.match(r"\w+,$", text):
                body.append(re.sub(r"(?<!^)([A-Z])", r"_\1", text[:-1]).lower())
    enums = {k: v for k, v in enums.items() if k not in other}
    return structs, enums


def serialised(struct):
    """A struct's keys as serde writes them: name -> (rust type, optional key). Only the
    serde attributes known here: a rename or a flatten would need this reader taught."""
    struct_attrs, unread = struct[""]
    assert not [a for a in struct_attrs if "rename" in a or "untagged" in a], struct_attrs
    assert not unread, f"lines this reader does not understand: {unread}"
    fields = {}
    for field, (rust, attrs) in struct.items():
        if field:
            assert attrs <= FIELD_ATTRS, f"{field}: serde attributes {attrs - FIELD_ATTRS}"
            fields[field] = (rust, 'skip_serializing_if = "Option::is_none"' in attrs)
    return fields


STRUCTS, ENUMS = rust_items()


def nested_typed_dicts(hint):
    """The TypedDicts a hint names, at any depth (List[X], Dict[str, X], Optional[X])."""
    if is_typed_dict(hint):
        return {hint.__name__}
    found = set()
    for arg in typing.get_args(hint):
        found |= nested_typed_dicts(arg)
    return found


def test_the_source_reader_finds_the_structs():
    # A reader that silently read nothing would pass everything below.
    assert {"PerformanceSummary", "GpuHistory", "GpuSample", "StepRecord"} <= set(STRUCTS)
    summary = serialised(STRUCTS["PerformanceSummary"])
    assert len(summary) >= 30
    assert summary["export"] == ("Option<ExportStamp>", True)
    assert summary["rank"] == ("Option<u32>", False)
    assert ENUMS["Role"] == ["api_server", "engine_core", "worker", "process"]


@pytest.mark.parametrize("name", sorted(set(typed_dicts()) - PACKAGE_MADE))
def test_each_typed_dict_has_its_structs_keys(name):
    td = typed_dicts()[name]
    assert name in STRUCTS, f"{name} mirrors no struct of crates/format"
    fields = serialised(STRUCTS[name])
    required = {f for f, (_, optional) in fields.items() if not optional}
    assert set(td.__required_keys__) == required, (
        f"{name}: missing {sorted(required - set(td.__required_keys__))}, "
        f"not in the struct {sorted(set(td.__required_keys__) - required)}")
    assert set(td.__optional_keys__) == set(fields) - required
    hints = typing.get_type_hints(td)
    for field, (rust, optional) in fields.items():
        hint = hints[field]
        # Written as null when unset: Optional; left out when unset: an optional key of the
        # inner type.
        nullable = rust.startswith("Option<") and not optional
        assert (NONE in typing.get_args(hint)) == nullable, f"{name}.{field}: {hint} vs {rust}"
        if rust in ENUMS:
            assert hint == getattr(schema, rust), f"{name}.{field}: {hint} vs {rust}"
        named = {n for n in re.findall(r"\w+", rust) if n in STRUCTS}
        mirrored = named & set(typed_dicts())
        assert nested_typed_dicts(hint) == mirrored, f"{name}.{field}: {hint} vs {rust}"


@pytest.mark.parametrize("name", ["MemorySource", "Role"])
def test_the_literals_are_the_enums_names(name):
    assert list(typing.get_args(getattr(schema, name))) == ENUMS[name]


def test_the_step_callbacks_record_has_detailed_step_keys():
    assert keys(schema.CompletedStep) <= set(serialised(STRUCTS["StepRecord"]))


GPU_SCRIPT = {
    "devices": [{
        "name": "Fake GPU Zero", "uuid": "GPU-0", "memory_total_mb": 81920, "frames": [{
            "gpu_utilization": 37, "memory_controller_utilization": 5, "memory_used_mb": 20480,
            "temperature": 51, "power_draw_mw": 123500, "power_limit_mw": 700000,
            "sm_clock_mhz": 1980, "memory_clock_mhz": 2619,
            "processes": [{"pid": "self", "used_memory_mb": 512}]}]},
    ]
}

# Records steps with spans (one annotated: memory delta and shapes), kernels through the fake
# CUPTI and a torch-op window, samples the fake GPU, and prints what the API returned.
CHILD = textwrap.dedent(
    """
    import ctypes, json, os, sys, time
    from vllm_profiler import _native, torch_ops
    from vllm_profiler.detector import UnifiedGPUDetector
    from vllm_profiler.gpu_monitor import GPUMonitor
    from vllm_profiler.vllm_monitor import VLLMPerformanceMonitor

    fake = ctypes.CDLL(os.environ["FAKE_CUPTI_PATH"])
    fake.fake_cupti_external_depth.argtypes = [ctypes.c_uint32]
    fake.fake_cupti_external_depth.restype = ctypes.c_uint32
    fake.fake_cupti_launch.argtypes = [ctypes.c_char_p, ctypes.c_uint32, ctypes.c_uint32,
        ctypes.c_uint64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint16, ctypes.c_uint32,
        ctypes.c_uint32]
    fake.fake_cupti_launch.restype = ctypes.c_uint32
    lib = _native.library()
    monitor = VLLMPerformanceMonitor(sample_interval=0.05)
    monitor.start_monitoring()  # on from the environment: this monitor starts nothing
    completed = []
    monitor.on_step_completed = completed.append
    shapes = json.dumps({"input_shapes": [[2, 3]], "output_shapes": [[2, 3]]}).encode()

    def step(i, launches):
        with monitor.profile_inference_step(batch_size=i, num_tokens=10 * i):
            depth = fake.fake_cupti_external_depth(5)
            span = lib.vllm_profiler_span_begin(b"attention")
            for _ in range(launches):
                fake.fake_cupti_launch(b"gemm_kernel", 0, 0, 1000, None, None, 32, 0, 0)
            _native.check(lib.vllm_profiler_span_end_annotated(span, 1.5, shapes))
            _native.check(lib.vllm_profiler_span_end(lib.vllm_profiler_span_begin(b"mlp")))
        return depth

    deadline = time.time() + 30
    while step(1, 0) != 1:  # until the kernel tracer correlates
        assert time.time() < deadline, "the tracer never correlated"
        time.sleep(0.01)
    for i in range(2, 5):
        step(i, 2)
    start = time.time_ns()
    handle = lib.vllm_profiler_step_begin(1, 1)
    _native.check(lib.vllm_profiler_step_end(handle))
    op = {"name": "aten::mm", "calls": 2, "host_ns": 3000, "self_host_ns": 2000,
          "device_ns": 1000, "self_device_ns": 1000, "self_cpu_memory_bytes": 0,
          "self_device_memory_bytes": 512}
    window = {"start_ns": start, "end_ns": time.time_ns(), "steps": [handle], "ops": [op],
              "events": [], "kernels": [], "dropped_events": 0}
    assert torch_ops.send(lib, window) == 0, _native.last_error()
    while len(_native.gpu_history()["gpu_history"]) < 2:
        assert time.time() < deadline, "no GPU samples"
        time.sleep(0.02)
    _native.check(lib.vllm_profiler_flush())
    detector = UnifiedGPUDetector()
    print(json.dumps({
        "pid": os.getpid(),
        "summary": monitor.get_performance_summary(),
        "summary_last_2": monitor.get_performance_summary(last_n_steps=2),
        "gpu_history": _native.gpu_history(),
        "gpu_list": _native.gpu_list(),
        "api_response": detector.as_api_response(),
        "gpu_info": detector.get_gpu_info(0),
        "gpu_monitor_metrics": GPUMonitor(0).get_metrics(),
        "completed": completed,
    }))
    """
)


def walk(hint, value, seen, where):
    """Records the keys of every dict in `value` under the TypedDict that types it."""
    if value is None:
        return
    if is_typed_dict(hint):
        assert isinstance(value, dict), f"{where}: {value!r}"
        seen.setdefault(hint.__name__, []).append((where, set(value)))
        hints = typing.get_type_hints(hint)
        for key, item in value.items():
            if key in hints:
                walk(hints[key], item, seen, f"{where}.{key}")
        return
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        for arg in args:
            walk(arg, value, seen, where)
    elif origin is list:
        for i, item in enumerate(value):
            walk(args[0], item, seen, f"{where}[{i}]")
    elif origin is dict:
        for key, item in value.items():
            walk(args[1], item, seen, f"{where}[{key!r}]")


@pytest.fixture(scope="module")
def written(agent_library, fake_nvml, tmp_path_factory):
    """What the API returned in the child, and the report files it left."""
    tmp = tmp_path_factory.mktemp("schema")
    cupti = build("fake-cupti", "libfake_cupti.so")
    script = tmp / "nvml.json"
    script.write_text(json.dumps(GPU_SCRIPT))
    out = tmp / "out"
    env = clean_env()
    env.update({
        "LD_PRELOAD": str(agent_library),
        "VLLM_ENABLE_PROFILING": "1",
        "VLLM_ENABLE_GPU_MONITORING": "1",
        "VLLM_PROFILING_SAMPLE_INTERVAL": "0.05",
        "VLLM_PROFILING_OUTPUT_DIR": str(out),
        "VLLM_PROFILING_NVML_LIBRARY": str(fake_nvml),
        "FAKE_NVML_SCRIPT": str(script),
        "VLLM_PROFILING_KERNELS": "1",
        "VLLM_PROFILING_CUPTI_LIBRARY": str(cupti),
        "FAKE_CUPTI_PATH": str(cupti),
        "FAKE_CUPTI_SCRIPT": "{}",
    })
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, cwd=tmp,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    pid = got["pid"]
    got["summary_file"] = read_report(out, "performance_summary", pid)
    got["gpu_history_file"] = read_report(out, "gpu_history", pid)
    got["detailed_steps"] = read_report(out, "detailed_steps", pid)["detailed_steps"]
    return got


TYPED = {
    "summary": schema.PerformanceSummary,
    "summary_last_2": schema.PerformanceSummary,
    "summary_file": schema.PerformanceSummary,
    "gpu_history": schema.GpuHistory,
    "gpu_history_file": schema.GpuHistory,
    "gpu_list": schema.GpuList,
    "api_response": schema.GpuList,
    "gpu_info": schema.GpuListEntry,
    "gpu_monitor_metrics": schema.GpuMonitorMetrics,
    "completed": typing.List[schema.CompletedStep],
}


def test_the_agent_writes_exactly_the_typed_keys(written):
    seen = {}
    for key, hint in TYPED.items():
        assert written[key] is not None, key
        walk(hint, written[key], seen, key)
    # Every class met a real dict, at any depth: none is left to the source check alone.
    assert set(seen) == set(typed_dicts()), sorted(set(typed_dicts()) - set(seen))
    for name, instances in sorted(seen.items()):
        td = typed_dicts()[name]
        for where, found in instances:
            assert set(td.__required_keys__) <= found <= keys(td), (
                f"{where} ({name}): missing {sorted(set(td.__required_keys__) - found)}, "
                f"untyped {sorted(found - keys(td))}")
        # Every optional key was written somewhere.
        assert set().union(*(found for _, found in instances)) == keys(td), name


def test_a_summary_asked_for_has_no_export_stamp_and_the_files_have_one(written):
    assert "export" not in written["summary"] and "export" not in written["gpu_history"]
    assert "export" in written["summary_file"] and "export" in written["gpu_history_file"]


def test_the_step_callbacks_records_are_the_detailed_steps(written):
    # The monitor's steps came first, and no step was dropped from the kept history.
    steps, completed = written["detailed_steps"], written["completed"]
    assert len(completed) >= 4
    for record, step in zip(completed, steps):
        assert set(record) <= set(step)
        assert {k: step[k] for k in ("step_id", "batch_size", "num_tokens")} == {
            k: record[k] for k in ("step_id", "batch_size", "num_tokens")}
