"""Builds the package with the agent inside (pyproject.toml has the rest of the metadata).

`build_py` also
- builds libvllm_profiler.so with cargo in the repository root (the parent of this directory)
  and copies it to vllm_profiler/libvllm_profiler.so, where the loader (_native.py) finds it;
- copies vllm_profiler.pth to the top of site-packages, next to the package: the start-up hook
  of the zero-code vLLM integration.

Environment:
- VLLM_PROFILER_CARGO_PROFILE: the cargo profile to build (default `wheel`: release without
  debug info, stripped; `dev` reuses target/debug).
- VLLM_PROFILER_PREBUILT_LIBRARY: a libvllm_profiler.so to ship as it is; cargo does not run.

Without cargo, or without the Rust sources (an sdist, a copied python/ directory), and with no
prebuilt library, the build fails and says what to install or set: a package that cannot load
its library is never shipped.

Build outputs (build/, vllm_profiler.egg-info) go to a temporary directory removed at exit, so
an in-tree build (pip's default for a local directory) leaves nothing in the checkout and two
builds at once do not share files. `--build-base` and `--egg-base` still win.
"""

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist
from setuptools.errors import SetupError

HERE = os.path.dirname(os.path.realpath(__file__))
ROOT = os.path.dirname(HERE)
PACKAGE = "vllm_profiler"
LIBRARY_NAME = "libvllm_profiler.so"
CRATE = "vllm-profiler-agent"
PTH = "vllm_profiler.pth"
PROFILE_ENV = "VLLM_PROFILER_CARGO_PROFILE"
PREBUILT_ENV = "VLLM_PROFILER_PREBUILT_LIBRARY"

PREBUILT_HINT = (
    f"or set {PREBUILT_ENV}=/path/to/{LIBRARY_NAME} (from `cargo build --release -p {CRATE}`) "
    "to ship a library built elsewhere"
)


def _log(message):
    print(f"vllm-profiler: {message}", file=sys.stderr, flush=True)


def _prebuilt_library(value):
    path = os.path.abspath(os.path.expanduser(value))
    if not os.path.isfile(path):
        relative = "" if os.path.isabs(os.path.expanduser(value)) else (
            f" (a relative path is taken from the build's working directory, {os.getcwd()};"
            " give an absolute path)"
        )
        raise SetupError(
            f"{PREBUILT_ENV}={value!r}: {path} is not a file{relative}. Point it at a built "
            f"{LIBRARY_NAME}, or unset it to build the library with cargo."
        )
    return path


def _find_cargo():
    candidates = [os.environ.get("CARGO"), shutil.which("cargo")]
    candidates.append(os.path.join(os.path.expanduser("~"), ".cargo", "bin", "cargo"))
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _cargo_library():
    """Builds the agent with cargo in the workspace above this directory; returns the path
    cargo reports for libvllm_profiler.so."""
    manifest = os.path.join(ROOT, "crates", "agent", "Cargo.toml")
    if not (os.path.isfile(os.path.join(ROOT, "Cargo.toml")) and os.path.isfile(manifest)):
        raise SetupError(
            f"cannot build {LIBRARY_NAME}: the Rust workspace is not in {ROOT} (the parent of "
            f"setup.py has no Cargo.toml and crates/agent). This happens when the package is "
            f"built from an sdist or from a copy of python/ (pip older than 21.3 copies local "
            f"directories; upgrade pip). Build from the repository checkout (pip install "
            f"./python, which needs cargo), {PREBUILT_HINT}."
        )
    cargo = _find_cargo()
    if cargo is None:
        raise SetupError(
            f"cannot build {LIBRARY_NAME}: cargo was not found (not on PATH, not in "
            f"~/.cargo/bin). Install Rust (cargo, https://rustup.rs), {PREBUILT_HINT}."
        )
    profile = os.environ.get(PROFILE_ENV) or "wheel"
    command = [
        cargo, "build", "--profile", profile, "-p", CRATE, "--lib",
        # Artifacts as JSON on stdout; compiler messages rendered for people on stderr.
        "--message-format=json-render-diagnostics",
    ]
    _log(f"building {LIBRARY_NAME}: {' '.join(command)} (in {ROOT})")
    try:
        proc = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    except OSError as err:
        raise SetupError(
            f"cannot run {cargo}: {err}. Install Rust (cargo, https://rustup.rs), {PREBUILT_HINT}."
        ) from err
    if proc.returncode != 0:
        raise SetupError(
            f"`{' '.join(command)}` failed with exit status {proc.returncode} (its errors are "
            f"above). Fix the build, {PREBUILT_HINT}."
        )
    found = None
    for line in proc.stdout.splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if message.get("reason") != "compiler-artifact":
            continue
        for name in message.get("filenames") or []:
            if os.path.basename(name) == LIBRARY_NAME:
                found = name
    if found is None or not os.path.isfile(found):
        raise SetupError(f"`{' '.join(command)}` reported no {LIBRARY_NAME}")
    return found


def agent_library():
    """The libvllm_profiler.so to ship: the prebuilt one if given, else cargo's."""
    prebuilt = os.environ.get(PREBUILT_ENV)
    if prebuilt:
        return _prebuilt_library(prebuilt)
    return _cargo_library()


def _install_file(source, destination, mode):
    """Copies through a temporary file and a rename, so a process that has the old copy
    loaded keeps a valid mapping."""
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    partial = destination + ".partial"
    shutil.copyfile(source, partial)
    os.chmod(partial, mode)
    os.replace(partial, destination)


class BuildWithAgent(build_py):
    def run(self):
        library = None
        if not getattr(self, "editable_mode", False):  # setuptools >= 64: pip install -e
            # First, so that a missing library fails the build before any other work.
            library = agent_library()
        super().run()
        shutil.copy(os.path.join(HERE, PTH), self.build_lib)
        if library is not None:
            destination = os.path.join(self.build_lib, PACKAGE, LIBRARY_NAME)
            _install_file(library, destination, 0o755)
            _log(f"shipping {library} as {PACKAGE}/{LIBRARY_NAME}")


class SdistWithPth(sdist):
    """The sdist keeps vllm_profiler.pth, which is not package data."""

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        shutil.copy(os.path.join(HERE, PTH), base_dir)


cmdclass = {"build_py": BuildWithAgent, "sdist": SdistWithPth}

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1: the wheel package's command
    try:
        from wheel.bdist_wheel import bdist_wheel
    except ImportError:
        bdist_wheel = None

if bdist_wheel is not None:

    class PlatformWheel(bdist_wheel):
        """The wheel holds a Linux shared library: tagged for the platform (py3-none-linux_*),
        not as pure Python; it does not depend on the Python version."""

        def finalize_options(self):
            super().finalize_options()
            self.root_is_pure = False

        def get_tag(self):
            _, _, platform = super().get_tag()
            return "py3", "none", platform

    cmdclass["bdist_wheel"] = PlatformWheel


def _scratch_options():
    scratch = tempfile.mkdtemp(prefix="vllm-profiler-build-")
    atexit.register(shutil.rmtree, scratch, True)
    options = {"build": {"build_base": os.path.join(scratch, "build")}}
    if "sdist" not in sys.argv[1:]:
        # The sdist takes its PKG-INFO and SOURCES.txt from the egg-info directory, by a path
        # relative to this one.
        options["egg_info"] = {"egg_base": scratch}
    return options


setup(cmdclass=cmdclass, options=_scratch_options())
