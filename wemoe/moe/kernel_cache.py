"""Where the fused kernel's builds and measured policies live, and what identifies this CPU for them.

Both are keyed by the CPU (``-march=native`` builds, and timings, are only valid on the CPU they were made on):
``$WEMOE_KERNEL_CACHE`` (default ``~/.cache/wemoe/kernels``) holds ``ensembled_linear-<key>.so`` and
``policy-<key>.json`` (``wemoe.moe.kernel_policy``).
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
from pathlib import Path

KERNEL_SOURCE = Path(__file__).resolve().parent / "kernels" / "ensembled_linear.cpp"
"""The fused kernel's C++ source: builds and measured policies are keyed by its text too."""


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """A short digest of the kernel's source (read once)."""
    return hashlib.sha256(KERNEL_SOURCE.read_bytes()).hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def cpu_signature() -> str:
    """What ``-march=native`` and the kernel's speed depend on: the CPU's model and feature flags (read once)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    wanted = [line for line in lines if line.startswith(("model name", "flags"))]
    return "\n".join(sorted(set(wanted)))


def cpu_model() -> str:
    """The CPU's model name (``lscpu``'s), or the platform's processor string where /proc/cpuinfo has none."""
    for line in cpu_signature().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def cache_dir() -> Path:
    """``$WEMOE_KERNEL_CACHE``, default ``~/.cache/wemoe/kernels`` (read on every call: tests point it elsewhere)."""
    return Path(os.environ.get("WEMOE_KERNEL_CACHE", Path.home() / ".cache" / "wemoe" / "kernels"))
