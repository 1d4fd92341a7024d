"""How a cached result becomes tensors plus JSON and back, for the result store on disk
(:mod:`wemoe.workbench.result_store`): never a pickle.

A codec turns a value into an :class:`Encoded` (named tensors, saved as safetensors, and a JSON-ready ``meta``) and
back. Two codecs:

- :class:`TreeCodec` (the default) walks plain data: None, bools, ints, floats, strings, tuples, lists, dicts, numpy
  scalars and arrays, tensors, pandas frames and series, and dataclasses of the registered result types
  (:func:`register_result_type`: scores, adaptation runs, routing analyses, classifications, ...). Anything else
  anywhere in a value raises :class:`NotEncodable`, and that result simply stays in memory.
- :class:`TowerCodec` keeps a merged image tower (a static merge) as its state dict and rebuilds it from the zoo's own
  tower (``Zoo.visual_with``), for the merge keys of :meth:`wemoe.workbench.workbench.Workbench.build`.

Decoding gives values equal to the encoded ones bit for bit (floats through ``repr``, tensors byte for byte), with the
same container types (a tuple stays a tuple).
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn

if TYPE_CHECKING:
    from wemoe.zoo.zoo import Zoo


class NotEncodable(TypeError):
    """A value (or a part of it) this codec cannot write: the result stays in memory only."""


@dataclass
class Encoded:
    """A result as the store writes it: named tensors and JSON-ready data that refers to them by name."""

    tensors: dict[str, torch.Tensor]
    meta: Any


class Codec(Protocol):
    """Turns results of some kind into an :class:`Encoded` and back."""

    name: str

    def encode(self, value: Any) -> Encoded:
        """``value`` as tensors and JSON (raises :class:`NotEncodable` when it cannot)."""
        ...

    def decode(self, encoded: Encoded) -> Any:
        """The value ``encoded`` was made from."""
        ...


_TYPES: dict[str, type] = {}
_TYPES_LOCK = threading.Lock()
_BUILTIN_REGISTERED = threading.Event()


def _register_builtin_types() -> None:
    """The result types of the layers below the workbench, registered on first use (importing them here at module
    level would load the model code whenever the store is merely constructed)."""
    if _BUILTIN_REGISTERED.is_set():
        return
    from wemoe.adaptation.adapt import AdaptStep
    from wemoe.evaluation.evaluate import Score
    from wemoe.evaluation.predictions import ImageClassification, Ranked, TaskGuess
    from wemoe.moe.routing import RoutingAnalysis, RoutingCentroids

    for cls in (AdaptStep, Score, ImageClassification, Ranked, TaskGuess, RoutingAnalysis, RoutingCentroids):
        register_result_type(cls)
    _BUILTIN_REGISTERED.set()


def type_name(cls: type) -> str:
    """The name a registered result type is stored under (module and qualified name)."""
    return f"{cls.__module__}.{cls.__qualname__}"


def register_result_type(cls: type) -> type:
    """Let :class:`TreeCodec` store dataclasses of ``cls`` (field by field; every field set through ``__init__``).
    Registering the same class again is harmless; another class under the same name is refused. Returns ``cls`` (usable
    as a decorator)."""
    if not dataclasses.is_dataclass(cls) or not isinstance(cls, type):
        raise TypeError(f"{cls!r} is not a dataclass: only dataclasses are stored field by field.")
    if any(not f.init for f in dataclasses.fields(cls)):
        raise TypeError(f"{cls.__qualname__} has fields set outside __init__: it cannot be rebuilt from its fields.")
    name = type_name(cls)
    with _TYPES_LOCK:
        if _TYPES.get(name, cls) is not cls:
            raise TypeError(f"Another result type is already registered as {name!r}.")
        _TYPES[name] = cls
    return cls


class TreeCodec:
    """Plain data, tensors, frames and registered dataclasses, nested in any way (see the module's docstring)."""

    name = "tree"

    def encode(self, value: Any) -> Encoded:
        """``value`` as tensors and a JSON tree whose containers are tagged (``{"tuple": [...]}``)."""
        _register_builtin_types()
        tensors: dict[str, torch.Tensor] = {}
        return Encoded(tensors, _encode(value, tensors))

    def decode(self, encoded: Encoded) -> Any:
        """The value :meth:`encode` was given."""
        _register_builtin_types()
        return _decode(encoded.meta, encoded.tensors)


def _encode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if value is None or type(value) in (bool, str):
        return value
    if isinstance(value, np.generic):  # before float: numpy's float64 is a float
        if value.dtype.kind not in "biuf":
            raise NotEncodable(f"numpy scalar of dtype {value.dtype}")
        return {"np": [value.dtype.str, value.item()]}
    if type(value) in (int, float):
        return value
    if type(value) in (tuple, list):
        return {type(value).__name__: [_encode(v, tensors) for v in value]}
    if type(value) is dict:
        return {"dict": [[_encode(k, tensors), _encode(v, tensors)] for k, v in value.items()]}
    if isinstance(value, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = value.detach().cpu()
        return {"tensor": [name, bool(value.requires_grad)]}
    if type(value) is np.ndarray:
        if value.dtype.kind not in "biuf":
            raise NotEncodable(f"numpy array of dtype {value.dtype}")
        name = f"t{len(tensors)}"
        tensors[name] = torch.from_numpy(np.ascontiguousarray(value))
        return {"ndarray": name}
    if type(value) is pd.DataFrame:
        return {"frame": {"index": _index(value.index, tensors), "columns": _index(value.columns, tensors),
                          "data": [_column(value.iloc[:, i], tensors) for i in range(value.shape[1])],
                          "attrs": _encode(dict(value.attrs), tensors)}}
    if type(value) is pd.Series:
        return {"series": {"index": _index(value.index, tensors), "name": _encode(value.name, tensors),
                           "data": _column(value, tensors), "attrs": _encode(dict(value.attrs), tensors)}}
    name = type_name(type(value))
    if dataclasses.is_dataclass(value) and _TYPES.get(name) is type(value):
        return {"data": [name, {f.name: _encode(getattr(value, f.name), tensors)
                                for f in dataclasses.fields(value)}]}
    raise NotEncodable(f"no codec for {type(value).__qualname__}")


def _index(index: pd.Index, tensors: dict[str, torch.Tensor]) -> Any:
    if type(index) is pd.RangeIndex:
        return {"range": [index.start, index.stop, index.step], "name": _encode(index.name, tensors)}
    if type(index) is not pd.Index:
        raise NotEncodable(f"pandas {type(index).__name__}")
    return {"values": _encode(index.tolist(), tensors), "dtype": str(index.dtype), "name": _encode(index.name, tensors)}


def _column(series: pd.Series, tensors: dict[str, torch.Tensor]) -> Any:
    if series.dtype.kind not in "biufO":
        raise NotEncodable(f"pandas column of dtype {series.dtype}")
    return {"dtype": str(series.dtype), "values": _encode(series.tolist(), tensors)}


def _decode(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if not isinstance(tree, dict):
        return tree
    (tag, payload), = tree.items()
    if tag == "tuple":
        return tuple(_decode(v, tensors) for v in payload)
    if tag == "list":
        return [_decode(v, tensors) for v in payload]
    if tag == "dict":
        return {_decode(k, tensors): _decode(v, tensors) for k, v in payload}
    if tag == "np":
        return np.dtype(payload[0]).type(payload[1])
    if tag == "tensor":
        return tensors[payload[0]].requires_grad_(payload[1])
    if tag == "ndarray":
        return tensors[payload].numpy()
    if tag == "frame":
        index = _decoded_index(payload["index"], tensors)
        columns = [_decoded_column(c, tensors, index) for c in payload["data"]]
        frame = pd.DataFrame(dict(enumerate(columns)), index=index) if columns else pd.DataFrame(index=index)
        frame.columns = _decoded_index(payload["columns"], tensors)
        frame.attrs = _decode(payload["attrs"], tensors)
        return frame
    if tag == "series":
        series = _decoded_column(payload["data"], tensors, _decoded_index(payload["index"], tensors))
        series.name = _decode(payload["name"], tensors)
        series.attrs = _decode(payload["attrs"], tensors)
        return series
    if tag == "data":
        cls = _TYPES.get(payload[0])
        if cls is None:
            raise NotEncodable(f"result type {payload[0]!r} is not registered in this process")
        return cls(**{name: _decode(v, tensors) for name, v in payload[1].items()})
    raise ValueError(f"unknown tag {tag!r}")


def _decoded_index(tree: dict, tensors: dict[str, torch.Tensor]) -> pd.Index:
    if "range" in tree:
        return pd.RangeIndex(*tree["range"], name=_decode(tree["name"], tensors))
    return pd.Index(_decode(tree["values"], tensors), dtype=tree["dtype"], name=_decode(tree["name"], tensors))


def _decoded_column(tree: dict, tensors: dict[str, torch.Tensor], index: pd.Index) -> pd.Series:
    return pd.Series(_decode(tree["values"], tensors), dtype=tree["dtype"], index=index)


class TowerCodec:
    """A static merge (an image tower of the zoo's own class and layout, nothing trainable) as its state dict, rebuilt
    with ``zoo.visual_with``; any other module raises :class:`NotEncodable` (adaptive merges are made again, which
    is cheap next to their adaptation, whose result is stored)."""

    name = "tower"

    def __init__(self, zoo: Zoo) -> None:
        """``zoo``: whose image tower the merges are made from."""
        self.zoo = zoo

    def encode(self, value: Any) -> Encoded:
        """The tower's state dict (the tower must match the zoo's tower key for key, shape and dtype)."""
        template = self.zoo.visual
        if type(value) is not type(template) or not isinstance(value, nn.Module):
            raise NotEncodable(f"a {type(value).__qualname__}, not the zoo's image tower")
        if value.training or any(p.requires_grad for p in value.parameters()):
            raise NotEncodable("a tower with trainable parameters or in training mode")
        state, reference = value.state_dict(), template.state_dict()
        if list(state) != list(reference) or any(
                state[k].shape != reference[k].shape or state[k].dtype != reference[k].dtype for k in state):
            raise NotEncodable("a tower whose layout differs from the zoo's")
        return Encoded(dict(state), {"class": type_name(type(value))})

    def decode(self, encoded: Encoded) -> nn.Module:
        """A fresh copy of the zoo's tower holding the stored weights (eval mode, frozen)."""
        if encoded.meta.get("class") != type_name(type(self.zoo.visual)):
            raise NotEncodable(f"a stored {encoded.meta.get('class')}, not this zoo's tower")
        return self.zoo.visual_with(encoded.tensors)


TREE = TreeCodec()
