"""The lesson's settings on this machine: :func:`wemoe.workbench.lesson_size.lesson_settings` picks them (from the
zoo's shape, the device and the cores' GEMM rate); the page, the lesson's steps, the warm-up and the zoo's load read
them here. A zoo choice whose shape is not known before loading (the pocket zoos, an uploaded zoo) keeps the paper's
settings, as does a GPU or ``MERGE_EXPLORER_LESSON=paper``."""

from __future__ import annotations

import functools
import os
from typing import Any

from app.session import AppConfig


def settings(config: AppConfig, choice: str | None = None) -> Any:
    """The :class:`~wemoe.workbench.lesson_size.LessonSettings` of zoo ``choice`` (default: the page's default zoo)."""
    from wemoe.workbench.lesson_size import LESSON_ENV, nominal_cpu_gflops

    choice = config.default_zoo if choice is None else choice
    return _settings(choice, config.default_steps, _device(), nominal_cpu_gflops(),
                     os.environ.get(LESSON_ENV, "").strip().lower())


def scored_per_task(config: AppConfig, choice: str) -> int | None:
    """Test images per task to load for zoo ``choice`` when the app's setting is every image: the sized lesson's
    (None: every image, as before)."""
    sized = settings(config, choice)
    return sized.scored_per_task if sized.sized else None


def note(config: AppConfig) -> str:
    """The page's one line on a sized lesson (empty with the paper's settings)."""
    sized = settings(config)
    return f"*{sized.reason}*" if sized.sized else ""


def _device() -> str:
    from app.gpu import zero_gpu

    if zero_gpu():
        return "cuda"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@functools.lru_cache(maxsize=32)
def _settings(choice: str, default_steps: int, device: str, gflops: float, forced: str) -> Any:
    from wemoe.workbench.lesson_size import LessonSettings, lesson_settings
    from wemoe.zoo.memory_plan import shape_of_spec
    from wemoe.zoo.presets import PRESETS

    spec = PRESETS.get(choice)
    paper = LessonSettings(steps=default_steps)
    return lesson_settings(None if spec is None else shape_of_spec(spec), device, gflops, paper=paper,
                           zoo_name=choice)
