"""What pyproject.toml cannot declare for the wheel (setuptools-rust, configured there, builds
the agent library and the `vllm-profiler` command with cargo):

- the start-up hook of the zero-code vLLM integration, python/vllm_profiler.pth, at the top of
  site-packages: build_py copies it there, so it is in the wheel's RECORD and `pip uninstall`
  removes it (MANIFEST.in puts it and the Rust workspace into the sdist);
- the wheel's tag, cp39-abi3: the agent is named as an abi3 extension and loaded by ctypes, so
  one wheel serves every CPython from 3.9;
- without cargo, an error that says what to install, before anything is built.

Environment: SETUPTOOLS_RUST_CARGO_PROFILE picks another cargo profile (`dev` reuses
target/debug); CARGO names the cargo to run; CARGO_BUILD_TARGET, a target triple
(scripts/build_wheel.sh builds the manylinux wheel with it).

Build outputs (build/, the egg-info) go to a temporary directory removed at exit, so an
in-tree build leaves nothing in the checkout and two builds at once share no files.
`--build-base` and `--egg-base` still win.
"""

import atexit
import os
import shutil
import tempfile

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py
from setuptools.errors import SetupError

HERE = os.path.dirname(os.path.realpath(__file__))
PTH = os.path.join("python", "vllm_profiler.pth")


def _find_cargo():
    """The cargo setuptools-rust will run ($CARGO, else PATH), else ~/.cargo/bin's, put on
    PATH for it (rustup's default place, often not on the PATH of a fresh shell)."""
    named = os.environ.get("CARGO")
    if named:
        return shutil.which(named)
    found = shutil.which("cargo")
    if found:
        return found
    rustup_bin = os.path.join(os.path.expanduser("~"), ".cargo", "bin")
    if shutil.which("cargo", path=rustup_bin):
        os.environ["PATH"] = rustup_bin + os.pathsep + os.environ.get("PATH", "")
        return shutil.which("cargo")
    return None


class BuildExtNeedsCargo(build_ext):
    """Runs before setuptools-rust's build (which wraps this command)."""

    def run(self):
        if _find_cargo() is None:
            where = f"CARGO={os.environ['CARGO']!r} is not a command" if os.environ.get(
                "CARGO") else "cargo was not found (not on PATH, not in ~/.cargo/bin)"
            raise SetupError(
                f"vllm-profiler builds its library and its command from Rust sources, and {where}. "
                "Install Rust (cargo), e.g. from https://rustup.rs: "
                "curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh"
            )
        super().run()


class BuildPyWithHook(build_py):
    def run(self):
        super().run()
        shutil.copy(os.path.join(HERE, PTH), self.build_lib)


def _scratch_options():
    scratch = tempfile.mkdtemp(prefix="vllm-profiler-build-")
    atexit.register(shutil.rmtree, scratch, True)
    return {
        "build": {"build_base": os.path.join(scratch, "build")},
        "egg_info": {"egg_base": scratch},
        "bdist_wheel": {"py_limited_api": "cp39"},
    }


setup(
    cmdclass={"build_ext": BuildExtNeedsCargo, "build_py": BuildPyWithHook},
    options=_scratch_options(),
)
