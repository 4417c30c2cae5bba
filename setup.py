"""What pyproject.toml cannot declare for the wheel (setuptools-rust, configured there, builds
the agent library and the `vllm-profiler` command with cargo):

- the start-up hook of the zero-code vLLM integration, python/vllm_profiler.pth, at the top of
  site-packages: build_py copies it there, so it is in the wheel's RECORD and `pip uninstall`
  removes it (MANIFEST.in puts it and the Rust workspace into the sdist);
- the wheel's tag, cp39-abi3: the agent is named as an abi3 extension and loaded by ctypes, so
  one wheel serves every CPython from 3.9;
- without cargo, setuptools-rust or a recent setuptools, an error that says what to install,
  before anything is built.

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

import setuptools

# What pyproject.toml's [build-system] asks for, checked here too: a build without isolation
# (`pip install --no-build-isolation`) takes whatever is installed, and an older setuptools
# fails on the metadata with a schema dump, and without setuptools-rust the wheel would be
# built with neither the library nor the command.
_SETUPTOOLS_MIN = 77
if int(setuptools.__version__.split(".")[0]) < _SETUPTOOLS_MIN:
    raise RuntimeError(
        f"vllm-profiler needs setuptools>={_SETUPTOOLS_MIN} to build (this is "
        f"{setuptools.__version__}): pip install 'setuptools>={_SETUPTOOLS_MIN}', or build with "
        "isolation (without --no-build-isolation)"
    )
try:
    import setuptools_rust  # noqa: F401 - it reads pyproject.toml's [tool.setuptools-rust]
except ImportError:
    raise RuntimeError(
        "vllm-profiler needs setuptools-rust to build its library and its command: pip install "
        "setuptools-rust, or build with isolation (without --no-build-isolation)"
    ) from None

from setuptools import setup  # noqa: E402 - after the checks above
from setuptools.command.build_ext import build_ext  # noqa: E402
from setuptools.command.build_py import build_py  # noqa: E402
from setuptools.command.editable_wheel import editable_wheel  # noqa: E402
from setuptools.errors import SetupError  # noqa: E402

HERE = os.path.dirname(os.path.realpath(__file__))
PTH = os.path.join("python", "vllm_profiler.pth")


def _find_cargo():
    """The cargo setuptools-rust will run: $CARGO, else the one on PATH, else rustup's
    (~/.cargo/bin, often not on the PATH of a fresh shell). setuptools-rust also runs rustc
    from PATH: where there is none, the directory of that cargo goes first on PATH."""
    named = os.environ.get("CARGO")
    found = shutil.which(named) if named else shutil.which("cargo")
    if found is None and not named:
        found = shutil.which("cargo", path=os.path.join(os.path.expanduser("~"), ".cargo", "bin"))
    if found is not None and shutil.which("rustc") is None:
        beside = os.path.dirname(os.path.abspath(found))
        if shutil.which("rustc", path=beside):
            os.environ["PATH"] = beside + os.pathsep + os.environ.get("PATH", "")
    return found


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


class _StrategyWithHook:
    """An editable wheel's strategy (what maps the checkout into site-packages), plus the hook
    at the top of site-packages, which no strategy maps: it is no package's file."""

    def __init__(self, strategy):
        self._strategy = strategy

    def __call__(self, wheel, files, mapping):
        self._strategy(wheel, files, mapping)
        with open(os.path.join(HERE, PTH), "rb") as f:
            wheel.writestr(os.path.basename(PTH), f.read())

    def __enter__(self):
        self._strategy.__enter__()
        return self

    def __exit__(self, *exc):
        return self._strategy.__exit__(*exc)


class EditableWithHook(editable_wheel):
    """`pip install -e .` gets the zero-code hook too. `_select_strategy` is setuptools' own
    (since 64): python/tests/test_install.py fails if a setuptools stops calling it."""

    def _select_strategy(self, *args, **kwargs):
        return _StrategyWithHook(super()._select_strategy(*args, **kwargs))


def _scratch_options():
    scratch = tempfile.mkdtemp(prefix="vllm-profiler-build-")
    atexit.register(shutil.rmtree, scratch, True)
    return {
        "build": {"build_base": os.path.join(scratch, "build")},
        "egg_info": {"egg_base": scratch},
        "bdist_wheel": {"py_limited_api": "cp39"},
    }


setup(
    cmdclass={
        "build_ext": BuildExtNeedsCargo,
        "build_py": BuildPyWithHook,
        "editable_wheel": EditableWithHook,
    },
    options=_scratch_options(),
)
