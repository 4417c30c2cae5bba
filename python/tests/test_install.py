"""`pip install .` builds libvllm_profiler.so and the `vllm-profiler` command with cargo
(setuptools-rust) and installs them with the package and its start-up hook; the installed
package, alone in a clean process, loads that copy and profiles. The sdist carries the Rust
workspace and builds with cargo; without cargo, the build says what to install.

The installs use `--no-build-isolation` (no download of setuptools) and
SETUPTOOLS_RUST_CARGO_PROFILE=dev, which reuses the debug build of the other tests.
test_wheel.py builds the release wheel and installs it into a fresh venv."""

import json
import os
import shutil
import site
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGED_NAME = "libvllm_profiler.abi3.so"

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
    "mapped": [m for m in mapped if os.path.basename(m).startswith("libvllm_profiler")],
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


def dev_env(**extra):
    """pip_env with the dev profile, and cargo's target directory the checkout's, as
    setuptools-rust would find it from the checkout (an unpacked sdist has none)."""
    return pip_env(SETUPTOOLS_RUST_CARGO_PROFILE="dev", CARGO_TARGET_DIR=str(ROOT / "target"),
                   **extra)


def pip_install(target, source=ROOT, env=None):
    """`pip install --no-build-isolation --target TARGET SOURCE`; returns the completed process
    with stdout and stderr together."""
    return subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-index",
            "--no-cache-dir", "--target", str(target), str(source),
        ],
        env=env if env is not None else dev_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=900,
    )


def without_cargo(tmp_path):
    """An environment in which setup.py finds no cargo: PATH holds only an empty folder and
    HOME has no .cargo (the user site stays where it was)."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    env = dev_env(PATH=str(empty), HOME=str(home), PYTHONUSERBASE=site.getuserbase())
    env.pop("CARGO", None)
    return env


# Asked in a subprocess: importing setuptools here could clash with a distutils already
# imported by this process.
BUILD_TOOLS = """
import importlib.util
missing = [m for m in ("setuptools", "setuptools_rust") if importlib.util.find_spec(m) is None]
if not missing:
    import setuptools
    if int(setuptools.__version__.split(".")[0]) < 77:  # the first to read an SPDX license
        missing.append("setuptools>=77")
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
            + f" in {sys.executable}: python3 -m pip install 'setuptools>=77' setuptools-rust"
        )


def build_outputs_in_checkout():
    return {
        str(p.relative_to(ROOT))
        for d in (ROOT, ROOT / "python")
        for p in d.iterdir()
        if p.name in ("build", "dist") or p.suffix == ".egg-info"
    }


@pytest.fixture(scope="module")
def install(tmp_path_factory):
    """Installs the package from the checkout with the dev profile; returns its target
    directory and what the build left in the checkout."""
    target = tmp_path_factory.mktemp("site") / "target"
    before = build_outputs_in_checkout()
    proc = pip_install(target)
    assert proc.returncode == 0, proc.stdout
    return target, build_outputs_in_checkout() - before


@pytest.fixture
def installed(install):
    return install[0]


def test_install_ships_library_command_pth_and_py_typed(install):
    installed, left_in_checkout = install
    library = installed / "vllm_profiler" / PACKAGED_NAME
    assert library.is_file()
    with open(library, "rb") as f:
        assert f.read(4) == b"\x7fELF"
    assert (installed / "vllm_profiler" / "py.typed").is_file()
    pth = installed / "vllm_profiler.pth"
    assert pth.read_text() == (ROOT / "python" / "vllm_profiler.pth").read_text()
    # The command (pip puts a --target install's scripts under bin/).
    command = installed / "bin" / "vllm-profiler"
    assert os.access(command, os.X_OK)
    proc = subprocess.run([str(command), "--version"], stdout=subprocess.PIPE, text=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stdout == f"vllm-profiler {cargo_version()}\n"
    # The in-tree build leaves no build/, dist/ or egg-info in the checkout.
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
    shipped = os.path.realpath(installed / "vllm_profiler" / PACKAGED_NAME)
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


def test_missing_cargo_fails_install_and_says_what_to_install(tmp_path):
    target = tmp_path / "target"
    proc = pip_install(target, env=without_cargo(tmp_path))
    assert proc.returncode != 0, proc.stdout
    assert "cargo was not found (not on PATH, not in ~/.cargo/bin)" in proc.stdout, proc.stdout
    assert "Install Rust (cargo)" in proc.stdout and "https://rustup.rs" in proc.stdout
    assert not (target / "vllm_profiler").exists()


def test_a_cargo_that_is_not_a_command_fails_install(tmp_path):
    target = tmp_path / "target"
    proc = pip_install(target, env=dev_env(CARGO=str(tmp_path / "no-cargo")))
    assert proc.returncode != 0, proc.stdout
    assert f"CARGO={str(tmp_path / 'no-cargo')!r} is not a command" in proc.stdout, proc.stdout
    assert not (target / "vllm_profiler").exists()


BUILD_SDIST = """
import sys
import setuptools.build_meta as backend
print(backend.build_sdist(sys.argv[1]))
"""


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    """The sdist, built by setuptools' PEP 517 backend in the checkout, unpacked."""
    out = tmp_path_factory.mktemp("sdist")
    before = build_outputs_in_checkout()
    proc = subprocess.run(
        [sys.executable, "-c", BUILD_SDIST, str(out)], cwd=ROOT, env=pip_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout
    assert build_outputs_in_checkout() == before
    name = proc.stdout.strip().splitlines()[-1]
    assert name == f"vllm_profiler-{cargo_version()}.tar.gz"
    with tarfile.open(out / name) as archive:
        members = archive.getnames()
        archive.extractall(out / "unpacked")
    return out / "unpacked" / name[: -len(".tar.gz")], members


def test_the_sdist_carries_the_package_the_hook_and_the_rust_workspace(sdist):
    unpacked, members = sdist
    top = unpacked.name
    names = {m[len(top) + 1:] for m in members}
    for needed in ("pyproject.toml", "setup.py", "README.md", "Cargo.toml", "Cargo.lock",
                   "python/vllm_profiler.pth", "python/vllm_profiler/_native.py",
                   "python/vllm_profiler/py.typed", "crates/agent/Cargo.toml",
                   "crates/agent/src/lib.rs", "crates/cli/src/main.rs",
                   "crates/format/Cargo.toml", "tests/support/lib.rs"):
        assert needed in names, needed
    # No build outputs, no compiled Python.
    assert not [n for n in names if n.startswith("target/") or "/target/" in n
                or n.endswith((".so", ".pyc"))]


def test_the_sdist_builds_with_cargo(sdist, tmp_path):
    unpacked, _ = sdist
    target = tmp_path / "target"
    proc = pip_install(target, source=unpacked)
    assert proc.returncode == 0, proc.stdout
    assert (target / "vllm_profiler" / PACKAGED_NAME).is_file()
    assert os.access(target / "bin" / "vllm-profiler", os.X_OK)
    assert (target / "vllm_profiler.pth").is_file()


def test_the_sdist_without_cargo_says_what_to_install(sdist, tmp_path):
    unpacked, _ = sdist
    target = tmp_path / "target"
    proc = pip_install(target, source=unpacked, env=without_cargo(tmp_path))
    assert proc.returncode != 0, proc.stdout
    assert "Install Rust (cargo)" in proc.stdout, proc.stdout
    assert not (target / "vllm_profiler").exists()


def stub_package(root, name, text):
    """A package `name` under `root` whose __init__ is `text`: put first on PYTHONPATH, it
    stands in for the installed one."""
    package = root / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(text)
    return root


def test_without_setuptools_rust_the_build_says_to_install_it(tmp_path):
    stubs = stub_package(tmp_path / "stubs", "setuptools_rust", "raise ImportError('hidden')\n")
    target = tmp_path / "target"
    proc = pip_install(target, env=dev_env(PYTHONPATH=str(stubs)))
    assert proc.returncode != 0, proc.stdout
    assert "vllm-profiler needs setuptools-rust to build its library and its command: pip " \
           "install setuptools-rust" in proc.stdout, proc.stdout
    assert not (target / "vllm_profiler").exists()


def test_an_old_setuptools_is_named_with_the_version_needed(tmp_path):
    stubs = stub_package(tmp_path / "stubs", "setuptools", "__version__ = '65.5.0'\n")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "setup.py"), "--version"], cwd=ROOT,
        env=pip_env(PYTHONPATH=str(stubs)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=60,
    )
    assert proc.returncode != 0
    assert "vllm-profiler needs setuptools>=77 to build (this is 65.5.0): pip install " \
           "'setuptools>=77'" in proc.stdout, proc.stdout


def test_a_cargo_named_off_path_brings_its_rustc(tmp_path):
    """CARGO names rustup's cargo and PATH has no Rust: setuptools-rust, which runs rustc from
    PATH, finds the one beside that cargo."""
    cargo = shutil.which("cargo")
    if not cargo or not shutil.which("rustc", path=os.path.dirname(cargo)):
        pytest.fail(f"cargo ({cargo}) has no rustc beside it: this test needs rustup's layout")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    python_bin = os.path.dirname(sys.executable)
    target = tmp_path / "target"
    env = dev_env(CARGO=cargo, PATH=os.pathsep.join([str(empty), python_bin, "/usr/bin", "/bin"]))
    proc = pip_install(target, env=env)
    assert proc.returncode == 0, proc.stdout
    assert (target / "vllm_profiler" / PACKAGED_NAME).is_file()


def test_the_sdist_leaves_out_what_is_not_source(tmp_path):
    """Files lying untracked in the crates (a profile, an editor's, a secret) stay out: the
    sdist takes the crates' sources, manifests and header by kind."""
    tree = tmp_path / "tree"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns("target", ".git", "__pycache__",
                                                       ".pytest_cache", "*.egg-info"))
    junk = ["crates/core/perf.data", "crates/cli/.idea/ws.xml", "crates/agent/.env"]
    for name in junk:
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text("not source\n")
    out = tmp_path / "sdist"
    proc = subprocess.run(
        [sys.executable, "-c", BUILD_SDIST, str(out)], cwd=tree, env=pip_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout
    with tarfile.open(out / proc.stdout.strip().splitlines()[-1]) as archive:
        names = [n.split("/", 1)[1] for n in archive.getnames() if "/" in n]
    crates = [n for n in names if n.startswith("crates/") and not archive_dir(n, names)]
    assert crates and all(n.endswith((".rs", ".toml", ".h")) for n in crates), crates
    assert [n for n in junk if n in names] == []
    assert "LICENSE-MIT" in names and "LICENSE-APACHE" in names


def archive_dir(name, names):
    """Whether `name` is a directory entry of the archive (a prefix of another entry)."""
    return any(other.startswith(name + "/") for other in names)


HOOKED_START = "import site, sys; site.addsitedir(sys.argv[1]); print('host output')"


def run_hooked_start(site_dir, **env):
    return subprocess.run(
        [sys.executable, "-c", HOOKED_START, str(site_dir)],
        env=pip_env(PYTHONPATH="", **env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, timeout=60, cwd=site_dir,
    )


def test_the_hook_imports_nothing_unless_asked_and_a_broken_package_is_one_line(tmp_path):
    """The .pth line as site processes it: with profiling off the package is never imported
    (a broken one included); on, a package that raises is one stderr line, one that is gone
    is silent; the host's output and exit status are its own in every case."""
    site_dir = tmp_path / "site"
    shutil.copytree(ROOT / "python" / "vllm_profiler", site_dir / "vllm_profiler")
    shutil.copy(ROOT / "python" / "vllm_profiler.pth", site_dir)
    (site_dir / "vllm_profiler" / "__init__.py").write_text("raise RuntimeError('broken')\n")
    for off in ("", "0", "off"):
        proc = run_hooked_start(site_dir, VLLM_ENABLE_PROFILING=off)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, "host output\n", "")
    proc = run_hooked_start(site_dir, VLLM_ENABLE_PROFILING="1")
    assert (proc.returncode, proc.stdout) == (0, "host output\n")
    assert proc.stderr == "vllm-profiler: not started: RuntimeError('broken')\n"
    shutil.rmtree(site_dir / "vllm_profiler")  # uninstalled by hand, the hook left behind
    proc = run_hooked_start(site_dir, VLLM_ENABLE_PROFILING="1")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "host output\n", "")
