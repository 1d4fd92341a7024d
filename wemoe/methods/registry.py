"""The one registry of merge methods. A method registers itself with ``@register`` in its own module.

Every name is written once, under a lock: registering a second class under a taken name raises a MethodError.
The method modules are imported once (the first ``list_methods``/``get_method``), under a lock of its own, so
threads asking at the same time all see the full registry. How to add a method: ``README.md`` here.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from pathlib import Path

from wemoe.errors import MethodError
from wemoe.methods.base import MergeMethod

_METHODS: dict[str, MergeMethod] = {}
_WRITE_LOCK = threading.Lock()
_DISCOVER_LOCK = threading.RLock()  # re-entrant: a method module may ask the registry while it is imported
_discovered = False
_PACKAGE = __name__.rpartition(".")[0]  # "wemoe.methods"
_NOT_METHODS = {"base", "registry"}


def register(cls: type[MergeMethod]) -> type[MergeMethod]:
    """Class decorator: add one instance of ``cls`` to the registry under ``cls.name``.

    A name already taken raises a MethodError naming the class that holds it (two methods cannot share a name).
    """
    with _WRITE_LOCK:
        existing = _METHODS.get(cls.name)
        if existing is not None:
            held_by = f"{type(existing).__module__}.{type(existing).__qualname__}"
            raise MethodError(
                f"Cannot register {cls.__module__}.{cls.__qualname__} as merge method {cls.name!r}: "
                f"{held_by} is registered under that name. Give the new method another name."
            )
        _METHODS[cls.name] = cls()
    return cls


def _discover() -> None:
    """Import every module of ``wemoe.methods`` once, so that adding a method is adding one file (thread-safe)."""
    global _discovered
    if _discovered:
        return
    with _DISCOVER_LOCK:
        if _discovered:
            return
        for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
            if module.name not in _NOT_METHODS:
                importlib.import_module(f"{_PACKAGE}.{module.name}")
        _discovered = True


def _snapshot() -> dict[str, MergeMethod]:
    """The registry after discovery, copied under the write lock (a late ``register`` cannot change it mid-read)."""
    _discover()
    with _WRITE_LOCK:
        return dict(_METHODS)


def list_methods() -> list[str]:
    """Names of every registered method."""
    methods = _snapshot()
    return sorted(methods, key=lambda name: (methods[name].order, name))


def get_method(name: str) -> MergeMethod:
    """The method registered as ``name``; an unknown name raises an error listing the known ones."""
    methods = _snapshot()
    try:
        return methods[name]
    except KeyError:
        raise MethodError(f"Unknown merge method {name!r}. Known methods: {', '.join(methods)}.") from None
