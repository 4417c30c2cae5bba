"""`pip install ./python` builds libvllm_profiler.so and ships it next to the package, and the
installed package, alone in a clean process, loads that copy and profiles.

The installs use `--no-build-isolation` (no download of setuptools) and
VLLM_PROFILER_CARGO_PROFILE=dev, which reuses the debug build of the other tests."""

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = ROOT / "python"
LIBRARY_NAME = "libvllm_profiler.so"

STEPS = 6

# Runs in a fresh interpreter that sees only the installed package.
CHECK_INSTALLED = """
import json, os, sys
import vllm_profiler
from vllm_profiler import _native
from vllm_profiler.integration import disable_vllm_profiling, enable_vllm_profiling
from vllm_profiler.vllm_monitor import VLLMPerformanceMonitor

out, steps = sys.argv[1], int(sys.argv[2])
lib = _native.library()
enable_vllm_profiling(enable_gpu_monitoring=False, output_dir=out)
monitor = VLLMPerformanceMonitor()
for i in range(1, steps + 1):
    with monitor.profile_inference_step(batch_size=i, num_tokens=10 * i):
        pass
disable_vllm_profiling()
with open("/proc/self/maps", encoding="utf-8") as f:
    mapped = sorted({line.split()[-1] for line in f if line.rstrip().endswith(".so")})
print(json.dumps({
    "package": vllm_profiler.__file__,
    "library": lib._name,
    "mapped": [m for m in mapped if os.path.basename(m) == "libvllm_profiler.so"],
    "pid": os.getpid(),
    "version": vllm_profiler.__version__,
    "library_version": _native.library_version(),
}))
"""


def cargo_version():
    """The workspace version in Cargo.toml, which every crate takes."""
    import re

    text = (ROOT / "Cargo.toml").read_text()
    section = text[text.index("[workspace.package]"):]
    return re.search(r'^version = "([^"]+)"', section, re.M).group(1)


def pip_env(**extra):
    """The caller's environment without any profiler setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
    env.pop("LD_PRELOAD", None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    env.update(extra)
    return env


def pip_install(target, source=PACKAGE_DIR, env=None):
    """`pip install --no-build-isolation --target TARGET SOURCE`; returns the completed process
    with stdout and stderr together."""
    return subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-index",
            "--no-cache-dir", "--target", str(target), str(source),
        ],
        env=env if env is not None else pip_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )


def without_cargo(tmp_path):
    """An environment in which setup.py finds no cargo: PATH holds only an empty folder and
    HOME has no .cargo (the user site stays where it was)."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    env = pip_env(PATH=str(empty), HOME=str(home), PYTHONUSERBASE=site.getuserbase())
    env.pop("CARGO", None)
    return env


# Asked in a subprocess: importing setuptools here could clash with a distutils already
# imported by this process.
BUILD_TOOLS = """
import importlib.util
missing = [m for m in ("setuptools",) if importlib.util.find_spec(m) is None]
if not missing:
    import setuptools
    if int(setuptools.__version__.split(".")[0]) < 61:  # the first to read [project]
        missing.append("setuptools>=61")
if not missing and importlib.util.find_spec("setuptools.command.bdist_wheel") is None:
    if importlib.util.find_spec("wheel") is None:
        missing.append("wheel")  # setuptools older than 70.1 builds wheels with it
# Last: finding pip turns off setuptools' distutils shim in this process.
missing += [m for m in ("pip",) if importlib.util.find_spec(m) is None]
print(" ".join(missing))
"""


@pytest.fixture(scope="module", autouse=True)
def build_tools():
    missing = subprocess.run(
        [sys.executable, "-c", BUILD_TOOLS], stdout=subprocess.PIPE, text=True, check=True
    ).stdout.split()
    if missing:
        pytest.fail(
            "pip install --no-build-isolation needs "
            + ", ".join(missing)
            + f" in {sys.executable}: python3 -m pip install 'setuptools>=61' wheel"
        )


def build_outputs_in_checkout():
    return {p.name for p in PACKAGE_DIR.iterdir() if p.name == "build" or p.suffix == ".egg-info"}


@pytest.fixture(scope="module")
def install(tmp_path_factory):
    """Installs the package from ./python with the dev profile; returns its target directory
    and what the build left in the checkout."""
    target = tmp_path_factory.mktemp("site") / "target"
    before = build_outputs_in_checkout()
    proc = pip_install(target, env=pip_env(VLLM_PROFILER_CARGO_PROFILE="dev"))
    assert proc.returncode == 0, proc.stdout
    return target, build_outputs_in_checkout() - before


@pytest.fixture
def installed(install):
    return install[0]


def test_install_ships_library_pth_and_py_typed(install):
    installed, left_in_checkout = install
    library = installed / "vllm_profiler" / LIBRARY_NAME
    assert library.is_file()
    assert os.access(library, os.X_OK)
    with open(library, "rb") as f:
        assert f.read(4) == b"\x7fELF"
    assert (installed / "vllm_profiler" / "py.typed").is_file()
    pth = installed / "vllm_profiler.pth"
    assert pth.read_text() == (PACKAGE_DIR / "vllm_profiler.pth").read_text()
    # The in-tree build leaves no build/ or egg-info in the checkout.
    assert not left_in_checkout


def test_installed_package_loads_shipped_library_and_profiles(installed, tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("VLLM_") and k not in ("LD_PRELOAD", "PYTHONPATH", "CARGO")
    }
    env["PYTHONPATH"] = str(installed)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", CHECK_INSTALLED, str(out), str(STEPS)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    r = json.loads(proc.stdout)
    shipped = os.path.realpath(installed / "vllm_profiler" / LIBRARY_NAME)
    assert os.path.realpath(r["package"]) == os.path.realpath(
        installed / "vllm_profiler" / "__init__.py"
    )
    assert os.path.realpath(r["library"]) == shipped
    assert [os.path.realpath(m) for m in r["mapped"]] == [shipped]
    # One version: the crates', in the package, its metadata and the library.
    assert r["version"] == r["library_version"] == cargo_version()
    [dist_info] = installed.glob("vllm_profiler-*.dist-info")
    metadata = (dist_info / "METADATA").read_text()
    assert f"\nVersion: {cargo_version()}\n" in metadata

    with open(out / f"performance_summary_{r['pid']}.json", encoding="utf-8") as f:
        summary = json.load(f)
    assert summary["total_steps"] == STEPS
    assert summary["total_batch_size"] == sum(range(1, STEPS + 1))
    assert summary["total_tokens"] == 10 * sum(range(1, STEPS + 1))
    with open(out / f"detailed_steps_{r['pid']}.json", encoding="utf-8") as f:
        steps = json.load(f)["detailed_steps"]
    assert [s["num_tokens"] for s in steps] == [10 * i for i in range(1, STEPS + 1)]


def test_missing_prebuilt_library_fails_install(tmp_path):
    missing = tmp_path / "nowhere" / LIBRARY_NAME
    target = tmp_path / "target"
    proc = pip_install(target, env=pip_env(VLLM_PROFILER_PREBUILT_LIBRARY=str(missing)))
    assert proc.returncode != 0, proc.stdout
    assert f"VLLM_PROFILER_PREBUILT_LIBRARY={str(missing)!r}: {missing} is not a file" in (
        proc.stdout
    ), proc.stdout
    assert not (target / "vllm_profiler").exists()


def test_prebuilt_library_installs_without_cargo(tmp_path):
    # Any file will do: the build copies it as it is (a small one keeps the wheel quick).
    prebuilt = tmp_path / "prebuilt" / LIBRARY_NAME
    prebuilt.parent.mkdir()
    prebuilt.write_bytes(b"\x7fELF prebuilt stand-in " + bytes(range(256)))
    target = tmp_path / "target"
    env = without_cargo(tmp_path)
    env["VLLM_PROFILER_PREBUILT_LIBRARY"] = str(prebuilt)
    proc = pip_install(target, env=env)
    assert proc.returncode == 0, proc.stdout
    with open(prebuilt, "rb") as a, open(target / "vllm_profiler" / LIBRARY_NAME, "rb") as b:
        assert a.read() == b.read()
    assert (target / "vllm_profiler.pth").is_file()


def test_missing_cargo_fails_install(tmp_path):
    target = tmp_path / "target"
    proc = pip_install(target, env=without_cargo(tmp_path))
    assert proc.returncode != 0, proc.stdout
    assert "cannot build libvllm_profiler.so: cargo was not found" in proc.stdout, proc.stdout
    assert "Install Rust" in proc.stdout and "VLLM_PROFILER_PREBUILT_LIBRARY=" in proc.stdout
    assert not (target / "vllm_profiler").exists()


def test_install_without_rust_sources_fails_install(tmp_path):
    """An sdist, or a copy of python/ away from the checkout: no workspace above setup.py."""
    copy = tmp_path / "python"
    skip = shutil.ignore_patterns("tests", "__pycache__", ".pytest_cache", "build", "*.egg-info")
    shutil.copytree(PACKAGE_DIR, copy, ignore=skip)
    target = tmp_path / "target"
    proc = pip_install(target, source=copy)
    assert proc.returncode != 0, proc.stdout
    assert "the Rust workspace is not in" in proc.stdout, proc.stdout
    assert "VLLM_PROFILER_PREBUILT_LIBRARY=" in proc.stdout
    assert not (target / "vllm_profiler").exists()


def elf_section_names(data):
    """The section names of a 64-bit little-endian ELF file's bytes."""
    import struct

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


def test_the_wheel_ships_the_library_stripped_and_under_10_mib(tmp_path):
    """`pip wheel` with the default profile (`wheel`: a build of its own, as a user's)."""
    import zipfile

    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-index",
         "--no-deps", "--no-cache-dir", "-w", str(tmp_path), str(PACKAGE_DIR)],
        env=pip_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout
    [wheel] = tmp_path.glob("*.whl")
    assert wheel.name == f"vllm_profiler-{cargo_version()}-py3-none-linux_x86_64.whl"
    with zipfile.ZipFile(wheel) as archive:
        # At the wheel's root or under .data/purelib: both install into site-packages.
        [member] = [n for n in archive.namelist() if n.endswith(f"vllm_profiler/{LIBRARY_NAME}")]
        library = archive.read(member)
    sections = elf_section_names(library)
    assert ".text" in sections and ".dynsym" in sections
    assert [s for s in sections if s.startswith(".debug") or s == ".symtab"] == []
    assert wheel.stat().st_size <= 10 << 20 and len(library) <= 10 << 20, (
        wheel.stat().st_size, len(library))
