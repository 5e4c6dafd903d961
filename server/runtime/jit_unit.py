"""Trace into a private TorchScript CompilationUnit, so a traced model's code is freed together with the model.

Why: everything TorchScript compiles from Python (a traced module's class types and methods, and the clones
`torch.jit.freeze` makes) is registered in one process-wide CompilationUnit, `torch.jit._state._python_cu`, and
torch offers no way to remove a single entry from it. The entries outlive the module: every load of a model added
its methods for good (6 for a two-layer MLP: 3 traced, 3 frozen), and a frozen method's graph holds the model's
weights as constants, so each reload of a traced model leaked a copy of its weights (a model with 4.1 MiB of
weights: +196 MiB over 45 reloads; bench/RESULTS.md, "Soak, session 5"). `torch.jit.trace(...,
_compilation_unit=...)` does not help: TracedModule ignores it. pytorch/pytorch#43119: the global unit is by design.

torch's C++ side looks that unit up by name (`get_python_cu()` reads `torch.jit._state._python_cu` on every call),
so pointing the name at a fresh CompilationUnit while tracing and freezing puts the types and methods there instead.
A TorchScript object holds a strong reference to its type's unit, so the private unit lives exactly as long as the
traced module and is freed with it. The swap is process-wide, so it is serialised by a lock; nothing else in the
server compiles TorchScript.

torch's Python side also remembers what it compiled: `concrete_type_store.methods_compiled` keeps every traced
submodule's ConcreteModuleType, and with it a throwaway Python class (~10 KB a load of a small MLP), forever; the
type store and the function caches would go on naming types and functions of the private unit after it is gone
(a later `torch.jit.script` of the same class would then get a type whose methods were freed: a segfault). What
those gained while the private unit was current is dropped on the way out; anything needed again compiles again.
If a torch release renames the attribute, tracing goes on in the shared unit: the old leak, not a failure.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import torch
import torch.jit._recursive as jit_recursive
import torch.jit._state as jit_state

_SWAP = threading.Lock()
_UNIT = "_python_cu"
# torch.jit._state's caches keyed by Python class or function, naming compiled things in the current unit
_STATE_CACHES = ("_script_classes", "_name_to_pyclass", "_jit_caching_layer", "_jit_function_overload_caching")


def shared_unit() -> Any:
    """The process-wide CompilationUnit (None if this torch has no such attribute)."""
    return getattr(jit_state, _UNIT, None)


def _caches() -> list[Any]:
    """torch's Python-side JIT caches that gain entries for what is compiled: dicts and sets, keyed by identity."""
    store = getattr(jit_recursive, "concrete_type_store", None)
    found = [getattr(jit_state, name, None) for name in _STATE_CACHES]
    found.append(getattr(store, "methods_compiled", None))
    return [cache for cache in found if hasattr(cache, "keys") or isinstance(cache, set)]


def _type_lists() -> dict[Any, list[Any]]:
    """The type store: Python module class -> the ConcreteModuleTypes compiled for it (shared between scripts)."""
    store = getattr(jit_recursive, "concrete_type_store", None)
    types = getattr(store, "type_store", None)
    return types if isinstance(types, dict) else {}


def _snapshot(cache: Any) -> Any:
    """A set's members, or a mapping's items (a value recompiled inside may replace one that names the shared unit)."""
    return set(cache) if isinstance(cache, set) else dict(cache.items())


def _forget_since(caches: list[Any], before: list[Any], lengths: dict[Any, int]) -> None:
    """Put the caches and the type store back as they were when `before` and `lengths` were taken."""
    for cache, then in zip(caches, before, strict=True):
        for key in [key for key in list(cache) if key not in then]:
            if isinstance(cache, set):
                cache.discard(key)
            else:
                cache.pop(key, None)
        if not isinstance(cache, set):
            cache.update(then)
    types = _type_lists()
    for cls in list(types):
        if cls not in lengths:
            del types[cls]
        else:
            del types[cls][lengths[cls]:]


@contextlib.contextmanager
def private_compilation_unit() -> Iterator[None]:
    """While open, TorchScript types and methods compiled from Python go into a new unit owned by what uses them."""
    with _SWAP:
        shared = shared_unit()
        if not isinstance(shared, torch._C.CompilationUnit):
            yield
            return
        caches = _caches()
        before = [_snapshot(cache) for cache in caches]
        lengths = {cls: len(known) for cls, known in _type_lists().items()}
        setattr(jit_state, _UNIT, torch._C.CompilationUnit())
        try:
            yield
        finally:
            setattr(jit_state, _UNIT, shared)
            _forget_since(caches, before, lengths)
