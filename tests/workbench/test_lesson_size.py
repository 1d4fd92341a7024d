"""The lesson sized for a CPU: the paper's settings where they fit (a GPU, the pocket zoo, on request), smaller ones
for the paper's ViT-B/32 zoo on two cores, projected against the seconds measured on the B/32 stand-in."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.helpers import tiny_zoo
from wemoe.workbench.lesson_size import (
    LESSON_ENV,
    PAPER,
    image_gflop,
    lesson_settings,
    nominal_cpu_gflops,
    projected_seconds,
    scored_passes,
)
from wemoe.zoo.memory_plan import shape_of_spec, shape_of_zoo
from wemoe.zoo.presets import PRESETS

TWO_CORES = 189.0  # GFLOPS measured on the 2-core AMD EPYC (bench/README.md)


@pytest.fixture
def b32(monkeypatch):
    monkeypatch.delenv(LESSON_ENV, raising=False)
    return shape_of_spec(PRESETS["vit-b-32-8tasks"])


def test_a_b32_image_is_what_compute_rate_counted_without_the_patch_embedding(b32):
    # bench/README.md: 8.82 GFLOP per image, of which the 224 px patch embedding is 2 * 49 * 3072 * 768 FLOPs
    assert image_gflop(b32) == pytest.approx(8.82 - 2 * 49 * 3 * 32 * 32 * 768 / 1e9, rel=0.005)


def test_the_paper_lesson_on_b32_projects_the_measured_adaptation_step(b32):
    one_step = projected_seconds(b32, PAPER, TWO_CORES)["adapt"] / PAPER.steps
    assert 51.6 <= one_step <= 55.4  # bench/README.md: 51.6-55.4 s per step at 16 images x 8 tasks


def test_b32_on_two_cores_gets_a_lesson_within_the_budget(b32):
    settings = lesson_settings(b32, "cpu", TWO_CORES, budget_s=480, zoo_name="vit-b-32-8tasks")
    assert settings.sized and (settings.steps, settings.per_task, settings.scored_per_task) == (20, 4, 16)
    assert settings.sweep_step == 0.2
    assert settings.seconds == pytest.approx(sum(projected_seconds(b32, settings, TWO_CORES).values()))
    assert settings.seconds <= 480
    assert "20 steps of 4 images per task" in settings.reason and "16 images per task" in settings.reason
    assert "vit-b-32-8tasks" in settings.reason and "about 105 minutes" in settings.reason
    assert "steps of 0.2" in settings.reason


def test_the_projection_counts_every_tower_the_lesson_scores(b32):
    """Step 1's experts, step 2's sweep (lambda 0 once for both methods) and the other steps' seven passes: the
    paper's sweep (every 0.1) is 21 towers, a sized one (every 0.2) 11."""
    assert scored_passes(8, 0.1) == 8 + 21 + 7 and scored_passes(8, 0.2) == 8 + 11 + 7
    paper = projected_seconds(b32, PAPER, TWO_CORES)["score"]
    coarse = projected_seconds(b32, replace(PAPER, sweep_step=0.2), TWO_CORES)["score"]
    assert paper / coarse == pytest.approx(36 / 26)


def test_more_cores_never_get_a_smaller_lesson(b32):
    lessons = [lesson_settings(b32, "cpu", nominal_cpu_gflops(cores)) for cores in (1, 2, 4, 16, 64, 512)]
    for smaller, larger in zip(lessons, lessons[1:], strict=False):
        assert larger.steps * larger.per_task >= smaller.steps * smaller.per_task
        assert larger.scored_per_task >= smaller.scored_per_task
    assert lessons[-1] == PAPER.__class__(PAPER.steps, PAPER.per_task, PAPER.scored_per_task,
                                          seconds=lessons[-1].seconds)


def test_paper_settings_on_a_gpu_for_a_small_zoo_an_unknown_shape_or_on_request(b32, monkeypatch):
    assert lesson_settings(b32, "cuda", TWO_CORES) is PAPER
    assert lesson_settings(None, "cpu", TWO_CORES) is PAPER
    pocket_sized = lesson_settings(shape_of_zoo(tiny_zoo(n_experts=3)), "cpu", TWO_CORES)
    assert not pocket_sized.sized and pocket_sized.steps == PAPER.steps and pocket_sized.reason == ""
    monkeypatch.setenv(LESSON_ENV, "paper")
    assert lesson_settings(b32, "cpu", TWO_CORES) is PAPER


def test_a_hopeless_machine_gets_the_smallest_lesson(b32):
    settings = lesson_settings(b32, "cpu", 1.0)
    assert (settings.steps, settings.per_task, settings.scored_per_task) == (10, 2, 8) and settings.sized
