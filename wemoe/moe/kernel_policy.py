"""Where the fused kernel pays on this CPU: a policy measured on this machine, or the built-in rule.

The built-in rule (``wemoe.moe.fused_kernel.worthwhile``'s limits) was measured on one Intel box; an AMD EPYC box
disagreed (there the kernel also won at 197 tokens, and at batch 1 for T <= 8: bench/README.md, "How cost grows").
``python -m wemoe calibrate-kernel`` (``wemoe.moe.kernel_calibration``) times the kernel and torch ops here, cell by
cell over batch, tokens and experts for a ViT-B-sized MLP, plus the plain GEMM of the compressed experts by rows, and
writes what it measured to ``policy-<key>.json`` in the kernel cache (``wemoe.moe.kernel_cache``), keyed by the CPU, the
kernel's source and the number of threads. A process on the same machine with the same threads reads the file once and
sends each layer where the nearest measured cell (in log scale) was faster. The kernel's structural limits (large layers
only, at most ``MAX_EXPERTS`` experts) hold either way. ``WEMOE_KERNEL_POLICY=builtin`` ignores a measured policy. Both
paths compute the same function (to float rounding), so a policy changes speed, not results beyond rounding.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from wemoe.moe.kernel_cache import cache_dir, cpu_model, cpu_signature, source_digest

ENV_POLICY = "WEMOE_KERNEL_POLICY"
FORMAT = 1


class _Timed:
    """Both paths' milliseconds of one measured shape (``kernel_ms``, ``torch_ms``: fields of the subclasses)."""

    kernel_ms: float
    torch_ms: float

    @property
    def kernel_wins(self) -> bool:
        """Whether the kernel was the faster path here."""
        return self.kernel_ms < self.torch_ms


@dataclass(frozen=True)
class Cell(_Timed):
    """One measured shape: an exact WEMoE MLP (both matrices) at ``batch`` x ``tokens`` with ``experts`` experts."""

    batch: int
    tokens: int
    experts: int
    kernel_ms: float
    torch_ms: float


@dataclass(frozen=True)
class RowsCell(_Timed):
    """One measured plain GEMM ``[rows, in] x [out, in]^T`` (the compressed experts' big product)."""

    rows: int
    kernel_ms: float
    torch_ms: float


def _nearest(cells: Sequence, point: Sequence[int], coordinates) -> object:
    """The cell closest to ``point`` in log2 of every coordinate (ties: the first measured)."""
    def distance(cell) -> float:
        return sum(abs(math.log2(max(a, 1)) - math.log2(max(b, 1)))
                   for a, b in zip(coordinates(cell), point, strict=True))
    return min(cells, key=distance)


@dataclass(frozen=True)
class MeasuredPolicy:
    """What ``calibrate-kernel`` measured on one CPU at one thread count, and the decisions that follow from it."""

    cells: tuple[Cell, ...]
    rows: tuple[RowsCell, ...]
    cpu: str
    threads: int
    width: int
    measured_at: str = ""

    def kernel_for(self, batch: int, tokens: int, experts: int) -> bool:
        """Whether exact WEMoE's layer of this shape goes to the kernel: the nearest measured cell's winner."""
        cell = _nearest(self.cells, (batch, tokens, experts), lambda c: (c.batch, c.tokens, c.experts))
        return cell.kernel_wins

    def matmul_kernel_for(self, rows: int) -> bool:
        """Whether a plain GEMM of ``rows`` rows goes to the kernel: the nearest measured row count's winner."""
        return _nearest(self.rows, (rows,), lambda c: (c.rows,)).kernel_wins

    def to_json(self) -> str:
        """The policy as JSON (what :func:`write` stores)."""
        return json.dumps({"format": FORMAT, **asdict(self)}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> MeasuredPolicy:
        """A policy from :meth:`to_json`'s text; ValueError when it is not one."""
        data = json.loads(text)
        if data.get("format") != FORMAT or not data.get("cells") or not data.get("rows"):
            raise ValueError("not a measured kernel policy of this version")
        return cls(cells=tuple(Cell(**c) for c in data["cells"]), rows=tuple(RowsCell(**r) for r in data["rows"]),
                   cpu=str(data["cpu"]), threads=int(data["threads"]), width=int(data["width"]),
                   measured_at=str(data.get("measured_at", "")))


@functools.lru_cache(maxsize=16)
def _key(threads: int) -> str:
    return hashlib.sha256(f"{cpu_signature()}\n{source_digest()}\n{threads}".encode()).hexdigest()[:16]


def policy_path(threads: int | None = None) -> Path:
    """Where this CPU's policy at ``threads`` (default: torch's current count) is kept."""
    return cache_dir() / f"policy-{_key(torch.get_num_threads() if threads is None else threads)}.json"


@functools.lru_cache(maxsize=8)
def _read(path: Path, mtime_ns: int) -> MeasuredPolicy | None:
    try:
        return MeasuredPolicy.from_json(path.read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable or from another version: the built-in rule


def measured() -> MeasuredPolicy | None:
    """This machine's measured policy at the current thread count, or None (then the built-in rule applies).

    Read once per file version (cached by path and modification time); ``WEMOE_KERNEL_POLICY=builtin`` gives None."""
    if os.environ.get(ENV_POLICY, "").strip().lower() == "builtin":
        return None
    path = policy_path()
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return None
    return _read(path, mtime)


def write(policy: MeasuredPolicy) -> Path:
    """Store ``policy`` where processes on this CPU at its thread count find it (atomically); returns the path."""
    path = policy_path(policy.threads)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(policy.to_json())
    os.replace(partial, path)
    return path


__all__ = ["Cell", "RowsCell", "MeasuredPolicy", "measured", "policy_path", "write", "cpu_model", "ENV_POLICY"]
