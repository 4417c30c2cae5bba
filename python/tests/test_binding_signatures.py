"""Every binding of the C ABI against the generated header, crates/agent/include/vllm_profiler.h.

The Python binding (vllm_profiler._native, the only one) must declare every function the header
exports, with the same number of arguments, ctypes types matching the C types and the same
restype, and nothing the header lacks. The benches' Rust copy (benches/common/mod.rs) must load
only functions the header has, each with the Rust types of its C signature. A native Python
module may come later: this same test will cover it (add its signatures to PYTHON_BINDINGS).

ctypes cannot tell apart what is one type on this platform (size_t and uint64_t are both
c_ulong on LP64): such a mix-up passes here.
"""

import ctypes
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = ROOT / "python"
HEADER = ROOT / "crates/agent/include/vllm_profiler.h"
BENCH_ABI = ROOT / "benches/common/mod.rs"
sys.path.insert(0, str(PACKAGE_DIR))

from vllm_profiler import _native  # noqa: E402

# Name -> {function name: ([argtypes], restype)}.
PYTHON_BINDINGS = {"vllm_profiler._native": _native._SIGNATURES}

# The ctypes types a C type may be bound as. A `char *` buffer may be passed as c_char_p (a
# create_string_buffer) or as POINTER(c_char).
CTYPES = {
    "int32_t": (ctypes.c_int32,),
    "uint32_t": (ctypes.c_uint32,),
    "int64_t": (ctypes.c_int64,),
    "uint64_t": (ctypes.c_uint64,),
    "double": (ctypes.c_double,),
    "size_t": (ctypes.c_size_t,),
    "const char *": (ctypes.c_char_p,),
    "char *": (ctypes.c_char_p, ctypes.POINTER(ctypes.c_char)),
    "void": (None,),
}

RUST = {
    "int32_t": "i32",
    "uint32_t": "u32",
    "int64_t": "i64",
    "uint64_t": "u64",
    "double": "f64",
    "size_t": "usize",
    "const char *": "*const c_char",
    "char *": "*mut c_char",
}


def _c_type(declaration, named=True):
    """`const char *config_json` -> `const char *`; `uint32_t n` -> `uint32_t`."""
    tokens = declaration.replace("*", " * ").split()
    if named and len(tokens) > 1:
        tokens = tokens[:-1]  # the parameter's name
    words = [t for t in tokens if t != "*"]
    stars = tokens.count("*")
    return " ".join(words) + (" " + "*" * stars if stars else "")


def header_functions(text):
    """{name: ([C argument types], C return type)} of every function the header declares."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"^\s*#[^\n]*", "", text, flags=re.M)
    functions = {}
    for ret, name, args in re.findall(
        r"([A-Za-z_][\w \t]*?\**)\s*\b(vllm_profiler_\w+)\s*\(([^)]*)\)\s*;", text
    ):
        ret = _c_type(ret, named=False)
        params = [] if args.strip() in ("", "void") else [_c_type(a) for a in args.split(",")]
        functions[name] = (params, ret)
    return functions


def ctypes_name(t):
    return "None" if t is None else getattr(t, "__name__", repr(t))


def check_python_binding(name, signatures, header):
    problems = []
    for function, (c_args, c_ret) in header.items():
        if function not in signatures:
            problems.append(f"{name}: {function} is in the header but not bound")
            continue
        argtypes, restype = signatures[function]
        if len(argtypes) != len(c_args):
            problems.append(
                f"{name}: {function} takes {len(c_args)} arguments in the header, "
                f"{len(argtypes)} in the binding"
            )
            continue
        for i, (c_type, bound) in enumerate(zip(c_args, argtypes)):
            if bound not in CTYPES[c_type]:
                problems.append(
                    f"{name}: {function} argument {i} is {c_type} in the header, "
                    f"{ctypes_name(bound)} in the binding"
                )
        if restype not in CTYPES[c_ret]:
            problems.append(
                f"{name}: {function} returns {c_ret} in the header, "
                f"{ctypes_name(restype)} in the binding"
            )
    for function in signatures:
        if function not in header:
            problems.append(f"{name}: {function} is bound but not in the header")
    return problems


def bench_functions(text):
    """{C name: ([Rust argument types], Rust return type or None)} of what the bench loads."""
    fields = {
        field: ([a.strip() for a in args.split(",") if a.strip()], ret)
        for field, args, ret in re.findall(
            r'pub (\w+): unsafe extern "C" fn\(([^)]*)\)(?:\s*->\s*([^,\n]+))?,', text
        )
    }
    loaded = dict(re.findall(r'(\w+): sym!\(b"(vllm_profiler_\w+)\\0"\)', text))
    problems = [f"bench field {f} has no sym! lookup" for f in fields if f not in loaded]
    problems += [f"bench looks up {c} into {f}, not a field" for f, c in loaded.items()
                 if f not in fields]
    return {c: fields[f] for f, c in loaded.items() if f in fields}, problems


def check_bench(bench, header):
    problems = []
    for function, (rust_args, rust_ret) in bench.items():
        if function not in header:
            problems.append(f"benches/common/mod.rs: {function} is not in the header")
            continue
        c_args, c_ret = header[function]
        expected = [RUST[t] for t in c_args]
        if rust_args != expected:
            problems.append(
                f"benches/common/mod.rs: {function} takes ({', '.join(rust_args)}), "
                f"the header ({', '.join(expected)})"
            )
        expected_ret = None if c_ret == "void" else RUST[c_ret]
        if (rust_ret or None) != expected_ret:
            problems.append(
                f"benches/common/mod.rs: {function} returns {rust_ret}, the header {expected_ret}"
            )
    return problems


@pytest.fixture(scope="module")
def header():
    functions = header_functions(HEADER.read_text())
    # The parse itself: it sees functions of every shape (no argument, pointers, a return of
    # a pointer).
    assert functions["vllm_profiler_disable"] == ([], "int32_t")
    assert functions["vllm_profiler_version"] == ([], "const char *")
    assert functions["vllm_profiler_gpu_history_json"] == (
        ["int32_t", "double", "char *", "size_t"], "int64_t")
    return functions


@pytest.mark.parametrize("name", sorted(PYTHON_BINDINGS))
def test_python_binding_matches_the_header(name, header):
    problems = check_python_binding(name, PYTHON_BINDINGS[name], header)
    assert not problems, "\n".join(problems)


def test_bench_abi_matches_the_header(header):
    bench, problems = bench_functions(BENCH_ABI.read_text())
    assert "vllm_profiler_summary_json" in bench, bench  # the parse sees the struct
    problems += check_bench(bench, header)
    assert not problems, "\n".join(problems)


def test_a_wrong_or_missing_signature_is_named(header):
    broken = dict(_native._SIGNATURES)
    del broken["vllm_profiler_flush"]
    args, ret = broken["vllm_profiler_step_end"]
    broken["vllm_profiler_step_end"] = ([ctypes.c_uint32], ret)
    broken["vllm_profiler_span_begin"] = (broken["vllm_profiler_span_begin"][0], ctypes.c_int32)
    broken["vllm_profiler_extra"] = ([], ctypes.c_int32)
    problems = "\n".join(check_python_binding("broken", broken, header))
    for said in ("vllm_profiler_flush is in the header but not bound",
                 "vllm_profiler_step_end argument 0 is uint64_t",
                 "vllm_profiler_span_begin returns uint64_t",
                 "vllm_profiler_extra is bound but not in the header"):
        assert said in problems, problems
    bench_text = BENCH_ABI.read_text().replace(
        "pub step_begin: unsafe extern \"C\" fn(u32, u32) -> u64",
        "pub step_begin: unsafe extern \"C\" fn(u32, u64) -> u64")
    bench, _ = bench_functions(bench_text)
    problems = "\n".join(check_bench(bench, header))
    assert "vllm_profiler_step_begin takes (u32, u64)" in problems, problems
