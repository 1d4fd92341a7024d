"""ZeroGPU on Hugging Face Spaces: heavy handlers run inside ``spaces.GPU`` when the ``spaces`` package exists.

Everywhere else (a laptop, CI, a CPU Space) the decorator returns the function unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


def on_gpu(duration: int = 60) -> Callable[[F], F]:
    """``spaces.GPU(duration=...)`` if the ``spaces`` package imports, else the identity decorator."""
    try:
        import spaces  # only installed on Hugging Face Spaces
    except ImportError:
        return lambda fn: fn
    return spaces.GPU(duration=duration)
