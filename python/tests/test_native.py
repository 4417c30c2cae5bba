"""Unit tests of the ctypes layer's buffer protocol, without the library."""

import json
import sys

import pytest

from conftest import PACKAGE_DIR

sys.path.insert(0, str(PACKAGE_DIR))
from vllm_profiler import _native  # noqa: E402


def fake_json_call(texts):
    """A snprintf-style function whose text is the next of `texts` at every call, as a
    history that grows while it is read."""
    calls = []

    def call(buf, size):
        text = texts[min(len(calls), len(texts) - 1)].encode()
        calls.append(size)
        n = min(len(text), size - 1)
        buf[:n] = text[:n]
        buf[n] = b"\0"
        return len(text)

    return call, calls


def test_a_text_that_grows_between_calls_gets_room_to_spare():
    small = json.dumps({"gpu_history": [0] * 10})
    big = json.dumps({"gpu_history": list(range(30000))})
    bigger = json.dumps({"gpu_history": list(range(31000))})
    call, calls = fake_json_call([small.ljust(70000), big, bigger])
    assert _native._json_call(call) == json.loads(bigger)
    assert len(calls) == 3
    assert calls[2] >= len(big.encode()) * 5 // 4


def test_a_text_that_always_outgrows_its_buffer_is_an_error_not_a_hang():
    texts = [json.dumps({"x": "a" * (70000 * 2**i)}) for i in range(12)]
    call, calls = fake_json_call(texts)
    with pytest.raises(_native.ProfilerError) as err:
        _native._json_call(call)
    assert err.value.code == _native.E_INTERNAL
    assert "kept outgrowing" in err.value.message
    assert len(calls) == _native._JSON_ATTEMPTS
