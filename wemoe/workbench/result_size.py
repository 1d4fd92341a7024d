"""How many bytes a cached result holds: the tensors (and arrays, tables) reachable from it, each storage once.

The result cache (:mod:`wemoe.workbench.result_cache`) bounds its entries in bytes with this: a merged tower is
hundreds of MB on a real zoo, a table or a routing map a few kB, so a bound on the number of entries alone bounds
nothing. Read-only: nothing is copied or moved.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

_MODULE_REGISTRIES = ("_parameters", "_buffers", "_modules")  # what parameters() and buffers() already counted
MAX_DEPTH = 8  # nested containers followed this deep (results are shallow: a run holds a model holds tensors)


def result_bytes(value: Any) -> int:
    """Bytes of every tensor storage, numpy array and pandas table reachable from ``value`` (modules through their
    parameters, buffers and tensor attributes, mappings, sequences and dataclasses), each storage counted once."""
    return _walk(value, set(), 0)


def _walk(value: Any, seen: set[int], depth: int) -> int:
    if value is None or isinstance(value, (str, bytes, int, float, bool)) or depth > MAX_DEPTH:
        return 0
    if isinstance(value, torch.Tensor):
        storage = value.untyped_storage()
        pointer = storage.data_ptr()
        if pointer in seen or storage.nbytes() == 0:
            return 0
        seen.add(pointer)
        return storage.nbytes()
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, nn.Module):
        tensors = sum(_walk(t, seen, depth + 1) for t in [*value.parameters(), *value.buffers()])
        plain = [{k: v for k, v in vars(m).items() if k not in _MODULE_REGISTRIES} for m in value.modules()]
        return tensors + sum(_walk(attributes, seen, depth + 1) for attributes in plain)  # e.g. kept scratch tensors
    if isinstance(value, Mapping):
        return sum(_walk(v, seen, depth + 1) for v in value.values())
    if isinstance(value, (list, tuple, set, frozenset)):
        return sum(_walk(v, seen, depth + 1) for v in value)
    nbytes = _array_bytes(value)
    if nbytes is not None:
        return nbytes
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(_walk(getattr(value, f.name), seen, depth + 1) for f in dataclasses.fields(value))
    return 0  # other objects: not followed (one could lead to the loaded zoo, which no result owns)


def _array_bytes(value: Any) -> int | None:
    """A numpy array's or a pandas table's bytes (None: neither)."""
    module = type(value).__module__
    if module.startswith("numpy") and hasattr(value, "nbytes"):
        return int(value.nbytes)
    if module.startswith("pandas") and hasattr(value, "memory_usage"):
        usage = value.memory_usage(index=True)
        return int(usage.sum()) if hasattr(usage, "sum") else int(usage)
    return None
