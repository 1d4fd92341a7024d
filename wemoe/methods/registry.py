"""The one registry of merge methods. A method registers itself with ``@register`` in its own module."""

from __future__ import annotations

import importlib
import pkgutil

from wemoe.errors import MethodError
from wemoe.methods.base import MergeMethod

_METHODS: dict[str, MergeMethod] = {}


def register(cls: type[MergeMethod]) -> type[MergeMethod]:
    """Class decorator: add one instance of ``cls`` to the registry under ``cls.name``."""
    _METHODS[cls.name] = cls()
    return cls


def _discover() -> None:
    """Import every module of ``wemoe.methods`` so that adding a method is adding one file."""
    import wemoe.methods as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.name not in {"base", "registry"}:
            importlib.import_module(f"wemoe.methods.{module.name}")


def list_methods() -> list[str]:
    """Names of every registered method."""
    _discover()
    return sorted(_METHODS, key=lambda name: (_METHODS[name].order, name))


def get_method(name: str) -> MergeMethod:
    """The method registered as ``name``; an unknown name raises an error listing the known ones."""
    _discover()
    try:
        return _METHODS[name]
    except KeyError:
        raise MethodError(f"Unknown merge method {name!r}. Known methods: {', '.join(_METHODS)}.") from None
