"""Layer profiling: forward pre- and post-hooks on a `torch.nn.Module` tree record one span
per module call, named by its module path (`model.layers.0.self_attn`). Spans nest inside
the open step of the calling thread, so they appear in `layer_performance` and in each step's
`layer_timings`. Each span also carries `memory_delta_mb` (allocated device memory after minus
before) when CUDA is there, and the input and output tensor shapes when asked.

```python
profiler = LayerProfiler(model, max_depth=3).attach()
...
profiler.detach()        # the model is exactly as before: every hook removed
```

A module reached by several paths (one `rotary_emb` shared by every layer) is hooked once and
named by its paths, the parts where they differ as `*` (`model.layers.*.self_attn.rotary_emb`),
so that its time is not billed to the first layer that calls it. A module whose class replaces
`__call__` (vLLM's `@support_torch_compile` models call `self.forward` from their own
`__call__`, so forward hooks never run) is timed by wrapping its `forward` instead.

This module imports torch only when it measures memory: it is imported at interpreter start
by the zero-code vLLM hook.
"""

from __future__ import annotations

import fnmatch
import json
import os
import sys
import threading
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

from . import _native
from .device_time import DeviceTimer, EventFactory, cuda_capturing, cuda_event_factory

_stack = threading.local()
MIB = 1024.0 * 1024.0
NO_MEMORY = float("nan")
_TRUE = ("1", "true", "yes", "on")

MemoryProbe = Callable[[], int]


class LayerProfiler:
    """Hooks every module of `model` whose path passes the filters.

    - `prefix`: the name of the root module; children are `prefix.child...`. With None the
      root is named by its class and children by their bare path, so a vLLM model
      (`LlamaForCausalLM` with a child `model`) gives `model.layers.0.self_attn`.
    - `max_depth`: hook modules at most this many levels below the root (root = 0).
    - `include` / `exclude`: glob patterns on the module path (`model.layers.*.mlp`).
    - `memory_probe`: "auto" (torch.cuda.memory_allocated when the model has CUDA
      parameters), None (no memory deltas), or a callable returning allocated bytes.
    - `record_shapes`: also record the shapes of the tensors going in and out.
    - `device_timing`: "auto" (pairs of CUDA events around each call when the model has CUDA
      parameters, see `device_time`), None (host time only), or a callable making timing
      events (an object with `record()`, `query()`, `synchronize()`, `elapsed_time(end)`).
    """

    def __init__(
        self,
        model: Any,
        prefix: Optional[str] = "model",
        max_depth: Optional[int] = None,
        include: Optional[Iterable[str]] = None,
        exclude: Optional[Iterable[str]] = None,
        memory_probe: Union[str, MemoryProbe, None] = "auto",
        record_shapes: bool = False,
        device_timing: Union[str, EventFactory, None] = "auto",
    ) -> None:
        self.model = model
        self.prefix = prefix
        self.max_depth = max_depth
        self.include = list(include) if include is not None else None
        self.exclude = list(exclude or [])
        probe = _cuda_probe(model) if memory_probe == "auto" else memory_probe
        if probe is not None and not callable(probe):
            raise TypeError("memory_probe must be 'auto', None or a callable returning bytes")
        self.memory_probe: Optional[MemoryProbe] = probe
        self.record_shapes = bool(record_shapes)
        auto = device_timing == "auto"
        factory = cuda_event_factory(model) if auto else device_timing
        if factory is not None and not callable(factory):
            raise TypeError("device_timing must be 'auto', None or a callable making events")
        self._event_factory: Optional[EventFactory] = factory
        self._capturing = cuda_capturing() if auto and factory is not None else None
        self.device_timer: Optional[DeviceTimer] = None
        self._handles: List[Any] = []
        self.hooked: List[str] = []

    def _wanted(self, path: str, depth: int) -> bool:
        if self.max_depth is not None and depth > self.max_depth:
            return False
        if self.include is not None and not any(fnmatch.fnmatchcase(path, p) for p in self.include):
            return False
        return not any(fnmatch.fnmatchcase(path, p) for p in self.exclude)

    def _path(self, name: str) -> str:
        if self.prefix is None:
            return name or type(self.model).__name__
        return f"{self.prefix}.{name}" if name else self.prefix

    def attach(self) -> "LayerProfiler":
        if self._handles:
            return self
        lib = _native.library()
        if self._event_factory is not None:
            self.device_timer = DeviceTimer(
                lib.vllm_profiler_span_set_gpu_duration, self._event_factory, self._capturing
            )
        plain_call = _plain_module_call()
        for module, names in _modules_by_paths(self.model):
            path = self._path(shared_name(names))
            depth = names[0].count(".") + 1 if names[0] else 0
            if not self._wanted(path, depth):
                continue
            pre, post = _hooks(
                lib,
                path.encode(),
                self.memory_probe,
                self.record_shapes,
                self.device_timer,
                outermost=depth == 0,
            )
            if plain_call is not None and type(module).__call__ is not plain_call:
                self._handles.append(_ForwardWrapper(module, pre, post))
            else:
                self._handles.append(module.register_forward_pre_hook(pre))
                self._handles.append(module.register_forward_hook(post))
            self.hooked.append(path)
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.hooked.clear()
        if self.device_timer is not None:
            # This thread's pairs: the spans were ended here, so their handles are valid here.
            self.device_timer.resolve(wait=True)

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def __enter__(self) -> "LayerProfiler":
        return self.attach()

    def __exit__(self, *exc_info: Any) -> None:
        self.detach()


def _modules_by_paths(model: Any) -> List[Tuple[Any, List[str]]]:
    """Each module of `model` once, with every path it is reached by, in first-seen order."""
    try:
        pairs = model.named_modules(remove_duplicate=False)
    except TypeError:  # a module tree without the argument: each module by its first path
        pairs = model.named_modules()
    found: "dict[int, Tuple[Any, List[str]]]" = {}
    for name, module in pairs:
        entry = found.get(id(module))
        if entry is None:
            found[id(module)] = (module, [name])
        elif name not in entry[1]:
            entry[1].append(name)
    return list(found.values())


def shared_name(paths: List[str]) -> str:
    """The name of a module reached by `paths`: the path itself when there is one; else the
    paths with the parts where they differ as `*` (`model.layers.*.self_attn.rotary_emb`), or,
    for paths of different lengths, `*.` and the parts they end with alike."""
    if len(paths) == 1:
        return paths[0]
    split = [p.split(".") for p in paths]
    if len({len(parts) for parts in split}) == 1:
        return ".".join(
            parts[0] if len(set(parts)) == 1 else "*" for parts in zip(*split)
        )
    tail: List[str] = []
    for parts in zip(*(reversed(p) for p in split)):
        if len(set(parts)) != 1:
            break
        tail.insert(0, parts[0])
    return "*." + ".".join(tail) if tail else paths[0]


def _plain_module_call() -> Optional[Any]:
    """`torch.nn.Module.__call__` when torch is loaded (a module tree without torch is hooked
    through its own register_forward_*_hook)."""
    torch = sys.modules.get("torch")
    module_class = getattr(getattr(torch, "nn", None), "Module", None)
    return getattr(module_class, "__call__", None)  # noqa: B004 - the function itself


class _ForwardWrapper:
    """Times a module through its instance's `forward`, for a module whose own `__call__`
    bypasses forward hooks; `remove()` puts the class's forward back."""

    def __init__(self, module: Any, pre: Callable[..., None], post: Callable[..., None]) -> None:
        self._module = module
        original = module.forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            pre(module, args)
            output = original(*args, **kwargs)
            post(module, args, output)
            return output

        self._forward = forward
        module.forward = forward

    def remove(self) -> None:
        if self._module.__dict__.get("forward") is self._forward:
            del self._module.forward


def _cuda_probe(model: Any) -> Optional[MemoryProbe]:
    """torch.cuda.memory_allocated when the model lives on a CUDA (or ROCm) device."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        if not any(p.is_cuda for p in model.parameters()):
            return None
        allocated: MemoryProbe = torch.cuda.memory_allocated
        return allocated
    except Exception:  # noqa: BLE001 - no CUDA: spans carry no memory delta
        return None


def _open_spans() -> List[Tuple[bytes, int, int]]:
    spans = getattr(_stack, "spans", None)
    if spans is None:
        spans = _stack.spans = []
    return spans


def tensor_shapes(value: Any, limit: int = 16) -> List[List[int]]:
    """Shapes of the tensors in a forward's inputs or output (tuples, lists and dicts are
    searched one level deep; at most `limit` shapes)."""
    shapes: List[List[int]] = []

    def visit(item: Any, depth: int) -> None:
        if len(shapes) >= limit:
            return
        shape = getattr(item, "shape", None)
        if shape is not None and hasattr(item, "dtype"):
            shapes.append([int(d) for d in shape])
        elif depth < 2 and isinstance(item, (tuple, list)):
            for x in item:
                visit(x, depth + 1)
        elif depth < 2 and isinstance(item, dict):
            for x in item.values():
                visit(x, depth + 1)

    visit(value, 0)
    return shapes


def _hooks(
    lib: Any,
    name: bytes,
    probe: Optional[MemoryProbe],
    record_shapes: bool,
    timer: Optional[DeviceTimer] = None,
    outermost: bool = False,
) -> Tuple[Any, Any]:
    begin, end = lib.vllm_profiler_span_begin, lib.vllm_profiler_span_end
    end_annotated = lib.vllm_profiler_span_end_annotated
    annotated = probe is not None or record_shapes

    def finish(handle: int, inputs: Any, output: Any, memory_before: int) -> None:
        if not annotated:
            end(handle)
            return
        delta = (probe() - memory_before) / MIB if probe is not None else NO_MEMORY
        shapes = None
        if record_shapes:
            shapes = json.dumps(
                {"input_shapes": tensor_shapes(inputs), "output_shapes": tensor_shapes(output)},
                separators=(",", ":"),
            ).encode()
        end_annotated(handle, delta, shapes)

    if timer is not None:
        return _timed_hooks(begin, finish, name, probe, timer, outermost)

    # _open_spans() inlined: these run twice per module call.
    def pre(module: Any, inputs: Any) -> None:
        try:
            spans = _stack.spans
        except AttributeError:
            spans = _stack.spans = []
        spans.append((name, begin(name), probe() if probe is not None else 0))

    def post(module: Any, inputs: Any, output: Any) -> None:
        try:
            spans = _stack.spans
        except AttributeError:
            spans = _stack.spans = []
        # A forward that raised skipped its post-hook; its span is closed by its parent.
        while spans:
            open_name, handle, memory_before = spans.pop()
            if open_name != name:
                continue
            if not handle:
                return
            if not annotated:  # `finish` inlined: this is the common case
                end(handle)
                return
            finish(handle, inputs, output, memory_before)
            return

    return pre, post


def _timed_hooks(
    begin: Any,
    finish: Callable[[int, Any, Any, int], None],
    name: bytes,
    probe: Optional[MemoryProbe],
    timer: DeviceTimer,
    outermost: bool,
) -> Tuple[Any, Any]:
    """The hooks with a CUDA event pair around each call, on the timer's own stack (two
    profilers on one model do not see each other's). The outermost span of a forward first
    hands over the pairs the GPU has finished since (the previous forward's); the model's root
    also drops what a forward that raised left on the stack."""

    def pre(module: Any, inputs: Any) -> None:
        spans = timer.stack()
        if outermost and spans:
            for _, _, _, start in spans:  # a forward that raised: their spans are closed
                timer.discard(start)
            spans.clear()
        if not spans:
            timer.resolve()
        spans.append((name, begin(name), probe() if probe is not None else 0, timer.begin()))

    def post(module: Any, inputs: Any, output: Any) -> None:
        spans = timer.stack()
        while spans:
            open_name, handle, memory_before, start = spans.pop()
            if open_name != name:
                timer.discard(start)  # its forward raised: closed by its parent, untimed
                continue
            if not handle:
                timer.discard(start)
                return
            finish(handle, inputs, output, memory_before)
            timer.end(handle, start)
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


# Layer profiling turned on by the integration API (None: follow the environment).
_auto_settings: Optional[Dict[str, bool]] = None
_auto_lock = threading.Lock()
_auto_attached: "dict[int, LayerProfiler]" = {}


def configure_auto_attach(enabled: bool, record_shapes: bool = False) -> None:
    """Set by enable_vllm_profiling: hook the layers of models vLLM loads."""
    global _auto_settings
    _auto_settings = {"enabled": bool(enabled), "record_shapes": bool(record_shapes)}


def _auto_setting(key: str, env: str) -> bool:
    if _auto_settings is not None:
        return bool(_auto_settings[key])
    return os.environ.get(env, "").strip().lower() in _TRUE


def auto_attach_wanted() -> bool:
    """Layer profiling asked for, by the API or by VLLM_ENABLE_LAYER_PROFILING=1."""
    return _auto_setting("enabled", "VLLM_ENABLE_LAYER_PROFILING")


def attach_to_runner(model_runner: Any) -> Optional[LayerProfiler]:
    """Hooks the layers of a vLLM model runner's model, once per model."""
    model = find_model(model_runner)
    if model is None:
        return None
    with _auto_lock:
        profiler = _auto_attached.get(id(model))
        if profiler is None or profiler.model is not model:
            profiler = LayerProfiler(
                model,
                prefix=None,
                record_shapes=_auto_setting("record_shapes", "VLLM_PROFILING_RECORD_SHAPES"),
            )
            _auto_attached[id(model)] = profiler
        return profiler.attach()


def attached_count() -> int:
    """How many models vLLM loaded got layer hooks in this process."""
    with _auto_lock:
        return sum(1 for p in _auto_attached.values() if p.attached)


def detach_auto_attached() -> int:
    """Removes the hooks put on vLLM's models; returns how many models were unhooked."""
    with _auto_lock:
        profilers = list(_auto_attached.values())
        _auto_attached.clear()
    for profiler in profilers:
        profiler.detach()
    return len(profilers)
