"""Final reports for multiprocessing children.

A child that multiprocessing starts by fork or forkserver ends with `os._exit`, which runs no
exit hook, so the agent's own final export never runs there: only its last periodic export
would remain. multiprocessing runs its "after fork" callbacks when the child starts and its
finalizers when the child's target returns; a finalizer registered from such a callback calls
`vllm_profiler_finish`, which writes the final reports if (and only if) the child recorded.

Cheap on purpose: `install` runs in every Python process that imports the package, including
the start-up hook. It imports nothing; multiprocessing is used only where it is already loaded.
"""

import os
import sys

_installed = False
_armed_pid = None


class _Token:
    """multiprocessing keeps after-fork callbacks in a weak dictionary keyed by an object."""


_TOKEN = _Token()


def install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    _register()
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_register)


def _register() -> None:
    util = sys.modules.get("multiprocessing.util")
    if util is None:
        return
    try:
        util.register_after_fork(_TOKEN, _arm)
    except Exception:  # noqa: BLE001 - never break the host's fork
        pass


def _arm(_token: object) -> None:
    """Runs in a multiprocessing child as it starts, after its finalizers were cleared."""
    global _armed_pid
    if _armed_pid == os.getpid():
        return
    _armed_pid = os.getpid()
    util = sys.modules.get("multiprocessing.util")
    if util is not None:
        # The lowest priority: after the child's own finalizers (queues, pools).
        util.Finalize(None, _finish, exitpriority=-(2**31))


def _finish() -> None:
    native = sys.modules.get("vllm_profiler._native")
    if native is None and not os.environ.get("LD_PRELOAD"):
        return  # the agent was neither loaded by the package nor preloaded: nothing to finish
    try:
        import ctypes

        lib = native._library if native is not None else None  # noqa: SLF001 - no lock here
        if lib is None:
            lib = ctypes.CDLL(None)
        finish = getattr(lib, "vllm_profiler_finish", None)
        if finish is None:
            return  # the agent is not loaded here: nothing was recorded
        finish.argtypes = []
        finish.restype = ctypes.c_int32
        finish()
    except Exception:  # noqa: BLE001 - a child's exit must not fail because of us
        pass
