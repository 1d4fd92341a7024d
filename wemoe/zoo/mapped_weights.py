"""Memory-mapped safetensors: a state dict of copy-on-write views of the file, and fused reads that bypass them.

A mapped tensor costs nothing until read; its pages are the page cache's (shared with other processes reading the
same file, reclaimable under pressure) and writes stay private to the process. But the file is one mapping: a
tensor read once and dropped (a q/k/v projection fused into ``in_proj``) would stay resident as long as any other
tensor of the file lives, so fused tensors are read from the file instead (:meth:`MappedState.read_concat`), and an
unused part (an expert checkpoint's text tower) is never read at all. The format (an 8-byte little-endian header length,
a JSON header of ``dtype``, ``shape`` and ``data_offsets`` per tensor, then the data) is read here directly.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import torch

from wemoe.errors import ZooError

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
_MAX_HEADER = 100_000_000  # the safetensors reference implementation's limit


def read_header(path: Path) -> tuple[dict, int]:
    """The JSON header of a safetensors file (``__metadata__`` removed) and the byte offset where its data starts."""
    with path.open("rb") as file:
        prefix = file.read(8)
        if len(prefix) < 8:
            raise ZooError(f"{str(path)!r} is too short to be a safetensors file.")
        (length,) = struct.unpack("<Q", prefix)
        if length > _MAX_HEADER:
            raise ZooError(f"{str(path)!r} is not a safetensors file (header length {length}).")
        try:
            header = json.loads(file.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ZooError(f"{str(path)!r} is not a safetensors file (unreadable header: {error}).") from error
    if not isinstance(header, dict):
        raise ZooError(f"{str(path)!r} is not a safetensors file (its header is not a JSON object).")
    header.pop("__metadata__", None)
    return header, 8 + length


def _entry(path: Path, name: str, entry: object, size: int) -> tuple[torch.dtype, list[int], int, int]:
    """A header entry's dtype, shape and absolute byte range, checked against the file's size."""
    try:
        dtype = DTYPES[entry["dtype"]]
        shape = [int(n) for n in entry["shape"]]
        start, end = (int(n) for n in entry["data_offsets"])
    except (KeyError, TypeError, ValueError):
        raise ZooError(
            f"{str(path)!r}: tensor {name!r} has a dtype, shape or data_offsets this reader does not know "
            f"({str(entry)[:120]}; dtypes: {', '.join(DTYPES)})."
        ) from None
    count = 1
    for n in shape:
        count *= n
    if end - start != count * dtype.itemsize or start < 0 or end > size:
        raise ZooError(f"{str(path)!r}: tensor {name!r} does not fit its byte range ({start}..{end} of {size}).")
    return dtype, shape, start, end


class MappedState(dict):
    """A state dict of tensors mapped from one safetensors file, that can also read tensors fused from the file.

    :meth:`read_concat` gives ``torch.cat(names, dim=0)`` read straight from the file into one new tensor, without
    touching the mapped pages of its parts: a q/k/v projection fused into ``in_proj`` is then held once, not once
    fused and once as resident pages of the mapping.
    """

    def __init__(self, tensors: dict[str, torch.Tensor], path: Path, ranges: dict[str, tuple[int, int]]) -> None:
        """``ranges``: each tensor's absolute byte range in ``path``."""
        super().__init__(tensors)
        self.path = path
        self.ranges = ranges

    def read_concat(self, names: list[str]) -> torch.Tensor:
        """The tensors ``names`` (contiguous in the file's layout) concatenated along dim 0, read from the file."""
        parts = [self[name] for name in names]
        out = torch.empty((sum(p.shape[0] for p in parts), *parts[0].shape[1:]), dtype=parts[0].dtype)
        view = memoryview(out.view(torch.uint8).reshape(-1).numpy())
        with self.path.open("rb") as file:
            at = 0
            for name in names:
                start, end = self.ranges[name]
                file.seek(start)
                if file.readinto(view[at:at + end - start]) != end - start:
                    raise ZooError(f"{str(self.path)!r} ended inside tensor {name!r}: the file is truncated.")
                at += end - start
        return out


def map_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A safetensors file as a :class:`MappedState` of CPU tensors viewing one private (copy-on-write) mapping.

    Nothing is read until used; writes stay private to the process. A tensor whose offset does not suit its dtype's
    alignment is read into memory instead. Big-endian machines (where the file's little-endian bytes would need
    swapping) get ``safetensors``' own loader.
    """
    path = Path(path)
    if sys.byteorder != "little":
        from safetensors.torch import load_file

        return load_file(str(path))
    header, data_start = read_header(path)
    size = path.stat().st_size
    storage = torch.UntypedStorage.from_file(str(path), False, size) if size > data_start else None
    tensors, ranges = {}, {}
    for name, entry in header.items():
        dtype, shape, start, end = _entry(path, name, entry, size - data_start)
        start, end = data_start + start, data_start + end
        ranges[name] = (start, end)
        if end == start:
            tensors[name] = torch.empty(shape, dtype=dtype)
        elif start % dtype.itemsize == 0:
            tensors[name] = torch.empty(0, dtype=dtype).set_(storage, start // dtype.itemsize, shape)
        else:
            raw = torch.empty(0, dtype=torch.uint8).set_(storage, start, (end - start,))
            tensors[name] = raw.clone().view(dtype).reshape(shape)  # an aligned copy
    return MappedState(tensors, path, ranges)
