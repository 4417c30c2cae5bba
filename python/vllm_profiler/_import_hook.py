"""A meta path finder that runs a patcher on chosen modules right after they are imported.

It answers only for the module names it was given: for those it asks the other finders of
`sys.meta_path` for the spec and wraps the spec's loader, so that the module runs as it would,
then gets patched. Another finder that delegates the same way (asks `sys.meta_path` itself)
would call back into this one for the same name: a per-thread guard answers None to that inner
call, so the two compose instead of recursing.

Imported at interpreter start in profiled processes: it imports nothing but `sys` and
`threading`, and its annotations are strings.
"""

from __future__ import annotations

import sys
import _thread  # not threading: this runs at every Python start-up, and threading imports more

TYPE_CHECKING = False
if TYPE_CHECKING:
    import importlib.machinery
    from typing import Any, Callable, Dict



def _patch_after_exec(
    loader: Any, patcher: Callable[[Any], object], on_error: Callable[[str], None]
) -> bool:
    """Makes `loader.exec_module` run the patcher after it, on this loader instance only and
    for one call (the path finders make a loader per module), so that the loader keeps its
    type: code that dispatches on it (pkg_resources) or copies it sees the real one. False
    where the instance takes no attribute."""
    exec_module = loader.exec_module

    def exec_then_patch(module: Any) -> None:
        try:
            del loader.exec_module  # the class's again, for any later use of this loader
        except AttributeError:
            pass
        exec_module(module)
        try:
            patcher(module)
        except Exception as err:  # noqa: BLE001 - never fail the host's import
            on_error(f"could not patch {module.__name__} ({err})")

    try:
        loader.exec_module = exec_then_patch
    except (AttributeError, TypeError):
        return False
    return True


class _Loader:
    """Runs the real loader, then the patcher; a failing patcher never fails the import. For
    loaders that take no attribute (see `_patch_after_exec`)."""

    def __init__(
        self, inner: Any, patcher: Callable[[Any], object], on_error: Callable[[str], None]
    ) -> None:
        self._inner = inner
        self._patcher = patcher
        self._on_error = on_error

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self._inner.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._inner.exec_module(module)
        try:
            self._patcher(module)
        except Exception as err:  # noqa: BLE001 - never fail the host's import
            self._on_error(f"could not patch {module.__name__} ({err})")

    def __getattr__(self, name: str) -> Any:
        # Whatever else the real loader offers (get_resource_reader, is_package, ...); not
        # `_inner` itself, which a copy looks up before it is set.
        if name == "_inner":
            raise AttributeError(name)
        return getattr(self._inner, name)


class PatchingFinder:
    """Finds nothing itself; wraps the loader of the modules in `targets`."""

    def __init__(
        self, targets: Dict[str, Callable[[Any], object]], on_error: Callable[[str], None]
    ) -> None:
        self.targets = targets
        self._on_error = on_error
        self._busy = _thread._local()

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        patcher = self.targets.get(fullname)
        if patcher is None:
            return None
        busy = getattr(self._busy, "names", None)
        if busy is None:
            busy = self._busy.names = set()
        if fullname in busy:
            return None  # a delegating finder asked us back for the same module
        busy.add(fullname)
        try:
            for finder in list(sys.meta_path):
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    loader = spec.loader
                    if loader is not None and hasattr(loader, "exec_module"):
                        if not _patch_after_exec(loader, patcher, self._on_error):
                            spec.loader = _Loader(  # type: ignore[assignment]
                                loader, patcher, self._on_error)
                    return spec
            return None
        finally:
            busy.discard(fullname)


def install(targets: Dict[str, Callable[[Any], object]], on_error: Callable[[str], None]) -> None:
    """Patches the modules of `targets` that are imported already, and puts a finder first on
    `sys.meta_path` (once) for the others."""
    waiting = False
    for name, patcher in targets.items():
        module = sys.modules.get(name)
        if module is None:
            waiting = True
            continue
        try:
            patcher(module)
        except Exception as err:  # noqa: BLE001 - never fail the caller
            on_error(f"could not patch {name} ({err})")
    if waiting and not any(isinstance(f, PatchingFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, PatchingFinder(targets, on_error))
