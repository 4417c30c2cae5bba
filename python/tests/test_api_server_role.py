"""How the vLLM hook knows the API server's process: `python -m vllm.entrypoints.openai.api_server`
imports vllm (and fires the hook) before its `__main__` exists, so the command line says it.
The real server's role is checked in test_real_vllm.py (its Prometheus series)."""

import sys

import pytest

from conftest import PACKAGE_DIR

sys.path.insert(0, str(PACKAGE_DIR))

from vllm_profiler import _vllm_hook  # noqa: E402

MODULE = "vllm.entrypoints.openai.api_server"


@pytest.mark.parametrize("argv, main", [
    (["python", "-m", MODULE, "--port", "8000"], True),
    (["python", "-X", "faulthandler", "-W", "ignore", "-m", MODULE], True),
    (["python", "-u", "-m" + MODULE], True),
    (["python", "-m", "vllm.entrypoints.cli.main", "serve"], False),
    (["python", "-c", "import vllm", "-m", MODULE], False),
    (["python", "script.py", "-m", MODULE], False),
    (["python", "-m"], False),
    (["python"], False),
])
def test_the_command_line_names_the_api_server(monkeypatch, argv, main):
    monkeypatch.setattr(sys, "orig_argv", argv)
    assert _vllm_hook._api_server_main() is main
