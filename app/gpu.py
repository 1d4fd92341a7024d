"""ZeroGPU on Hugging Face Spaces: read-only GPU work runs inside ``spaces.GPU`` when the ``spaces`` package exists.

ZeroGPU runs a decorated function in a *forked* worker process: whatever the function changes in the session (a
loaded zoo, a merge, adapted routers) stays in the worker and is lost. So only functions that read the session and
return their results (evaluation cells, routing maps) are decorated; the session is updated from those results in the
main process. Adaptation changes the routers in place, so on ZeroGPU it runs in chunks (:func:`zero_gpu_runner`):
each GPU call gets the run's checkpoint, takes up to :func:`chunk_steps` steps on CUDA and returns the next
checkpoint, which the main process loads into the session's model. Measuring a step (:func:`adapt_device`) stays on
the CPU there, where CUDA must not be touched; on an ordinary GPU Space (no ``spaces`` worker) everything uses CUDA as
usual. Everywhere else the decorator is the identity.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable)

GPU_CALL_SECONDS = 120.0  # the most one adaptation chunk asks for: well below ZeroGPU's per-call limit
START_SECONDS = 15.0  # what a GPU call spends before its first step (worker start, model to CUDA, warm-up)
STEP_MARGIN = 1.5  # asked-for time per step over the measured one (the measurement may be on another device)


def zero_gpu() -> bool:
    """Whether this process runs on a ZeroGPU Space (the ``spaces`` package sets SPACES_ZERO_GPU there)."""
    return bool(os.environ.get("SPACES_ZERO_GPU"))


def on_gpu(duration: float | Callable[..., float] = 60) -> Callable[[F], F]:
    """``spaces.GPU(duration=...)`` if the ``spaces`` package imports, else the identity decorator.

    Only for functions without side effects on the session (see the module docstring). ``duration``: seconds, or a
    callable on the call's arguments giving them.
    """
    try:
        import spaces  # only installed on Hugging Face Spaces
    except ImportError:
        return lambda fn: fn
    return spaces.GPU(duration=duration)


def adapt_device() -> str | None:
    """The device of the session's models in this process: the CPU on ZeroGPU, whose main process has no GPU (the
    adaptation steps themselves run there in GPU chunks, :func:`zero_gpu_runner`), else the default (CUDA when
    present)."""
    return "cpu" if zero_gpu() else None


def chunk_steps(seconds_per_step: float, limit: float = GPU_CALL_SECONDS) -> int:
    """Adaptation steps per GPU call: as many as fit in ``limit`` seconds with the start-up time and the margin
    (at least one)."""
    per_step = max(float(seconds_per_step), 1e-6) * STEP_MARGIN
    return max(1, int((limit - START_SECONDS) // per_step))


def chunk_seconds(seconds_per_step: float, k: int, limit: float = GPU_CALL_SECONDS) -> float:
    """The GPU time to ask for ``k`` steps of ``seconds_per_step`` each: start-up plus steps with margin, capped at
    ``limit``."""
    return min(float(limit), START_SECONDS + k * max(float(seconds_per_step), 1e-6) * STEP_MARGIN)


def _run_chunk(model: Any, data: Any, heads: Any, checkpoint: Any, k: int, seconds_per_step: float,
               limit: float) -> list:
    from wemoe.adaptation.adapt import run_chunk

    return list(run_chunk(model, data, heads, checkpoint, k))


def _chunk_duration(model: Any, data: Any, heads: Any, checkpoint: Any, k: int, seconds_per_step: float,
                    limit: float) -> float:
    return chunk_seconds(seconds_per_step, k, limit)


_decorated: dict[int, Callable[..., list]] = {}


def gpu_chunk() -> Callable[..., list]:
    """The one GPU function of chunked adaptation, ``spaces.GPU``-decorated once per ``spaces`` module (call it at
    start-up, as ZeroGPU wants its functions decorated before the app launches)."""
    import sys

    key = id(sys.modules.get("spaces"))
    if key not in _decorated:
        _decorated[key] = on_gpu(_chunk_duration)(_run_chunk)
    return _decorated[key]


def zero_gpu_runner(seconds_per_step: float, limit: float = GPU_CALL_SECONDS) -> Callable[..., list]:
    """A chunk runner for :func:`wemoe.adaptation.adapt.adapt_in_chunks`: ``runner(model, data, heads, checkpoint, k)``
    runs up to ``k`` steps on the default device (CUDA in a ZeroGPU worker) and returns their AdaptSteps then the new
    Checkpoint as one list (the worker's in-place changes are lost; the checkpoint carries the state back).

    The steps run in :func:`gpu_chunk` (``spaces.GPU`` where the package imports), its ``duration`` sized from
    ``seconds_per_step`` (:func:`chunk_seconds`); elsewhere they run in this process.
    """
    chunk = gpu_chunk()

    def runner(model: Any, data: Any, heads: Any, checkpoint: Any, k: int) -> list:
        return chunk(model, data, heads, checkpoint, k, seconds_per_step, limit)

    return runner
