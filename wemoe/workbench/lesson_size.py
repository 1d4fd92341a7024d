"""A lesson a class can afford: the default lesson's settings picked from the zoo's size, the device and its rate.

The page's lesson (adapt WEMoE's routers, score every expert and merge on a sample of test images) takes about a
minute on the pocket zoo with the paper's settings (100 steps of 16 images per task, 64 scored images per task). On
the paper's ViT-B/32 zoo and two CPU cores the same lesson is about 95 minutes (bench/README.md: one adaptation step
of 16 x 8 images 52-55 s, evaluation 166 GFLOPS), so a class would wait for an hour and a half. :func:`lesson_settings`
projects the default lesson's seconds from the image tower's FLOPs and the device's dense GEMM rate (constants measured
on the B/32 stand-in, below) and, where the paper's settings do not fit ``budget_s``, picks smaller ones from short
ladders: first the scored images (at most 40% of the budget, with step 2's lambda sweep twice as coarse), then the
adaptation (the most images adapted on, more steps on a tie). A GPU, or a zoo where the paper's settings fit, keeps
them; so does ``MERGE_EXPLORER_LESSON=paper`` (:data:`LESSON_ENV`), and the lab still offers every setting.

The rate passed by the app is :func:`nominal_cpu_gflops` (the measured GEMM rate per core times the cores), not a
probe at each start: a restarted app must choose the same settings, or it would miss every result it kept on disk.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

from wemoe.zoo.memory_plan import ZooShape

LESSON_ENV = "MERGE_EXPLORER_LESSON"
"""``paper``: the paper's settings whatever the machine; anything else (or unset): sized for the machine."""
GEMM_GFLOPS_PER_CORE = 94.5
"""Dense float32 GEMM on one AMD EPYC core: 189 GFLOPS on two (bench/README.md, ``compute_rate.py``, 2026-12-05)."""
ADAPT_FLOP_FACTOR = 9.1
"""An adaptation step's seconds per image over one forward (:func:`image_gflop`) at the GEMM rate: forward, backward
and WEMoE's per-sample weights; 53 s for 128 B/32 images at 189 GFLOPS."""
SCORE_EFFICIENCY = 0.86
"""Evaluation's seconds per image over :func:`image_gflop` at the GEMM rate: 0.053 s per B/32 image at 189 GFLOPS
(bench/README.md: 166 GFLOPS counting the patch embedding too)."""
SCORED_PASSES = 7
"""Passes of every scored image through one tower besides step 1's experts and step 2's sweep: step 2's lambda (1),
step 4's base and forgetting models (2), and the evaluation's pretrained, experts (each on its own task), task
arithmetic and WEMoE (4), whose cells step 5 and step 7 reuse (``Workbench.sample_scores``: a sized lesson loads
only the images it scores)."""
SWEEP_STEP = 0.1
"""The lambda sweep's spacing with the paper's settings (0, 0.1, ..., 1: 21 towers for task arithmetic and TIES)."""
SIZED_SWEEP_STEP = 0.2
"""A sized lesson's sweep spacing (0, 0.2, ..., 1: 11 towers, lambda 0 shared)."""
DEFAULT_BUDGET_S = 480.0
"""The default lesson's compute after the zoo is loaded: with a cold zoo load (text heads, ~200 s on B/32) the class
is served within the issue's 15 minutes."""
SCORE_SHARE = 0.4
"""The most of the budget the scored images take (on ViT-B/32, 32 per task: 162 of 480 s)."""
STEPS_LADDER = (100, 50, 30, 20, 10)
PER_TASK_LADDER = (16, 8, 4, 2)
SCORED_LADDER = (64, 32, 16, 8)


@dataclass(frozen=True)
class LessonSettings:
    """The default lesson's settings: adaptation ``steps`` of ``per_task`` images per task, ``scored_per_task`` test
    images per task scored by the lesson's steps and its evaluation; ``sized``: smaller than the paper's for this
    machine; ``reason``: one plain line saying what was chosen and why (empty with the paper's); ``seconds``: the
    projected compute of the default lesson with these settings."""

    steps: int = 100
    per_task: int = 16
    scored_per_task: int = 64
    sweep_step: float = SWEEP_STEP
    sized: bool = False
    reason: str = ""
    seconds: float = 0.0


PAPER = LessonSettings()


def image_gflop(shape: ZooShape) -> float:
    """GFLOPs of one image through the image tower's blocks (a multiply-add is 2): per block q/k/v, the attention's
    two products, its output projection and the MLP; 8.60 for ViT-B/32 (the patch embedding's 0.23 left out)."""
    width, tokens, hidden = shape.width, shape.tokens, shape.mlp_width
    block = 2 * tokens * (4 * width * width + 2 * width * hidden) + 4 * tokens * tokens * width
    return shape.layers * block / 1e9


def sweep_points(step: float) -> int:
    """Lambdas of a sweep from 0 to 1 spaced ``step`` (both ends included)."""
    return round(1.0 / step) + 1


def scored_passes(tasks: int, sweep_step: float) -> int:
    """Towers the lesson sends every scored image through: step 1's ``tasks`` experts, step 2's sweep (task
    arithmetic and TIES at every lambda, lambda 0 once) and :data:`SCORED_PASSES` more."""
    return tasks + 2 * sweep_points(sweep_step) - 1 + SCORED_PASSES


def projected_seconds(shape: ZooShape, settings: LessonSettings, gflops: float) -> dict[str, float]:
    """The default lesson's projected seconds at ``gflops``: ``adapt`` (every step) and ``score``
    (:func:`scored_passes` towers on ``scored_per_task`` images of every task)."""
    per_image = image_gflop(shape) / gflops
    tasks = shape.experts
    adapt = settings.steps * settings.per_task * tasks * per_image * ADAPT_FLOP_FACTOR
    passes = scored_passes(tasks, settings.sweep_step)
    score = settings.scored_per_task * tasks * passes * per_image / SCORE_EFFICIENCY
    return {"adapt": adapt, "score": score}


def nominal_cpu_gflops(cores: int | None = None) -> float:
    """The dense GEMM rate of ``cores`` CPU cores (default: those this process may use) at the measured rate per core
    (:data:`GEMM_GFLOPS_PER_CORE`)."""
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
    return GEMM_GFLOPS_PER_CORE * max(1, cores)


def lesson_settings(shape: ZooShape | None, device: str, gflops: float, budget_s: float = DEFAULT_BUDGET_S,
                    paper: LessonSettings = PAPER, zoo_name: str = "") -> LessonSettings:
    """The default lesson's settings for a zoo of ``shape`` on ``device`` (``cpu``, ``cuda``, ...) running dense GEMMs
    at ``gflops``: ``paper`` on a GPU, for an unknown shape, with ``MERGE_EXPLORER_LESSON=paper``, or where they fit
    ``budget_s``; else the largest settings of the ladders that fit (the smallest when none does)."""
    if shape is None or not device.startswith("cpu") or os.environ.get(LESSON_ENV, "").strip().lower() == "paper":
        return paper
    total = sum(projected_seconds(shape, paper, gflops).values())
    if total <= budget_s:
        return dataclasses.replace(paper, sized=False, reason="", seconds=total)
    scored = next((n for n in SCORED_LADDER
                   if n <= paper.scored_per_task and _score(shape, n, gflops) <= SCORE_SHARE * budget_s),
                  SCORED_LADDER[-1])
    left = budget_s - _score(shape, scored, gflops)
    step = max(paper.sweep_step, SIZED_SWEEP_STEP)
    fits = [(steps * per_task, steps, per_task) for steps in STEPS_LADDER for per_task in PER_TASK_LADDER
            if steps <= paper.steps and per_task <= paper.per_task
            and _adapt(shape, steps, per_task, gflops) <= left]
    _, steps, per_task = max(fits) if fits else (0, STEPS_LADDER[-1], PER_TASK_LADDER[-1])
    chosen = LessonSettings(steps, per_task, scored, step, sized=True)
    seconds = sum(projected_seconds(shape, chosen, gflops).values())
    reason = (f"On this CPU (about {gflops:.0f} GFLOPS) the paper's lesson on {zoo_name or shape.name} "
              f"({paper.steps} adaptation steps of {paper.per_task} images per task, {paper.scored_per_task} scored "
              f"images per task) would take about {_minutes(total)} before a class sees it, so this lesson adapts "
              f"{steps} steps of {per_task} images per task, scores {scored} images per task and sweeps lambda "
              f"in steps of {step:g} (about {_minutes(seconds)}); the lab keeps the paper's settings one click away.")
    return LessonSettings(steps, per_task, scored, step, sized=True, reason=reason, seconds=seconds)


def _score(shape: ZooShape, scored: int, gflops: float) -> float:
    settings = LessonSettings(steps=0, per_task=0, scored_per_task=scored, sweep_step=SIZED_SWEEP_STEP)
    return projected_seconds(shape, settings, gflops)["score"]


def _adapt(shape: ZooShape, steps: int, per_task: int, gflops: float) -> float:
    return projected_seconds(shape, LessonSettings(steps=steps, per_task=per_task, scored_per_task=0), gflops)["adapt"]


def _minutes(seconds: float) -> str:
    """``about 95 minutes`` style: whole minutes (at least 1)."""
    return f"{max(1, math.ceil(seconds / 60))} minutes" if seconds >= 90 else f"{max(1, round(seconds))} seconds"
