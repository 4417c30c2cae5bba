"""Layer profiling: forward pre- and post-hooks on a `torch.nn.Module` tree record one span
per module call, named by its module path (`model.layers.0.self_attn`). Spans nest inside
the open step of the calling thread, so they appear in `layer_performance` and in each step's
`layer_timings`.

```python
profiler = LayerProfiler(model, max_depth=3).attach()
...
profiler.detach()        # the model is exactly as before: every hook removed
```
"""

from __future__ import annotations

import fnmatch
import threading
from typing import Any, Iterable, List, Optional, Tuple

from . import _native

_stack = threading.local()


class LayerProfiler:
    """Hooks every module of `model` whose path passes the filters.

    - `prefix`: the name of the root module (`model`); children are `prefix.child...`.
    - `max_depth`: hook modules at most this many levels below the root (root = 0).
    - `include` / `exclude`: glob patterns on the module path (`model.layers.*.mlp`).
    """

    def __init__(
        self,
        model: Any,
        prefix: str = "model",
        max_depth: Optional[int] = None,
        include: Optional[Iterable[str]] = None,
        exclude: Optional[Iterable[str]] = None,
    ) -> None:
        self.model = model
        self.prefix = prefix
        self.max_depth = max_depth
        self.include = list(include) if include is not None else None
        self.exclude = list(exclude or [])
        self._handles: List[Any] = []
        self.hooked: List[str] = []

    def _wanted(self, path: str, depth: int) -> bool:
        if self.max_depth is not None and depth > self.max_depth:
            return False
        if self.include is not None and not any(fnmatch.fnmatchcase(path, p) for p in self.include):
            return False
        return not any(fnmatch.fnmatchcase(path, p) for p in self.exclude)

    def attach(self) -> "LayerProfiler":
        if self._handles:
            return self
        lib = _native.library()
        for name, module in self.model.named_modules():
            path = f"{self.prefix}.{name}" if name else self.prefix
            depth = name.count(".") + 1 if name else 0
            if not self._wanted(path, depth):
                continue
            pre, post = _hooks(lib, path.encode())
            self._handles.append(module.register_forward_pre_hook(pre))
            self._handles.append(module.register_forward_hook(post))
            self.hooked.append(path)
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.hooked.clear()

    def __enter__(self) -> "LayerProfiler":
        return self.attach()

    def __exit__(self, *exc_info: Any) -> None:
        self.detach()


def _open_spans() -> List[Tuple[bytes, int]]:
    spans = getattr(_stack, "spans", None)
    if spans is None:
        spans = _stack.spans = []
    return spans


def _hooks(lib: Any, name: bytes) -> Tuple[Any, Any]:
    begin, end = lib.vllm_profiler_span_begin, lib.vllm_profiler_span_end

    def pre(module: Any, inputs: Any) -> None:
        _open_spans().append((name, begin(name)))

    def post(module: Any, inputs: Any, output: Any) -> None:
        spans = _open_spans()
        # A forward that raised skipped its post-hook; its span is closed by its parent.
        while spans:
            open_name, handle = spans.pop()
            if open_name == name:
                if handle:
                    end(handle)
                return

    return pre, post


def find_model(model_runner: Any) -> Optional[Any]:
    """The torch model of a vLLM model runner (`model_runner.model` or `get_model()`)."""
    if model_runner is None:
        return None
    model = getattr(model_runner, "model", None)
    if model is None and callable(getattr(model_runner, "get_model", None)):
        model = model_runner.get_model()
    return model if callable(getattr(model, "named_modules", None)) else None
