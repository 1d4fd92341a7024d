"""ZeroGPU on Hugging Face Spaces: read-only GPU work runs inside ``spaces.GPU`` when the ``spaces`` package exists.

ZeroGPU runs a decorated function in a *forked* worker process: whatever the function changes in the session (a
loaded zoo, a merge, adapted routers) stays in the worker and is lost. So only handlers that read the session and
return their results (evaluation, routing maps) are decorated. Adaptation changes the routers in place; on ZeroGPU it
runs in the main process on the CPU (:func:`adapt_device`), where CUDA must not be touched; on an ordinary GPU Space
(no ``spaces`` worker) it uses CUDA as usual. Everywhere else the decorator is the identity.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


def zero_gpu() -> bool:
    """Whether this process runs on a ZeroGPU Space (the ``spaces`` package sets SPACES_ZERO_GPU there)."""
    return bool(os.environ.get("SPACES_ZERO_GPU"))


def on_gpu(duration: int = 60) -> Callable[[F], F]:
    """``spaces.GPU(duration=...)`` if the ``spaces`` package imports, else the identity decorator.

    Only for functions without side effects on the session (see the module docstring).
    """
    try:
        import spaces  # only installed on Hugging Face Spaces
    except ImportError:
        return lambda fn: fn
    return spaces.GPU(duration=duration)


def adapt_device() -> str | None:
    """Where adaptation runs: the CPU on ZeroGPU (in-place training cannot cross its fork), else the default."""
    return "cpu" if zero_gpu() else None
