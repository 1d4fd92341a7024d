"""The lesson sized for the machine: the paper's ViT-B/32 zoo on two CPU cores gets the library's smaller settings,
the page says so in one line, and the lesson's step 5, the warm-up and the zoo's load all use them (so the warm-up
computes what the class asks for); the pocket zoo keeps the paper's."""

from __future__ import annotations

import dataclasses

import pytest

from app import handlers, lesson, lesson_size, warm
from app.session import AppConfig, Session
from wemoe.workbench import lesson_size as library
from wemoe.workbench.lesson_size import LessonSettings

SMALL = LessonSettings(steps=2, per_task=2, scored_per_task=5, sized=True, reason="sized for this test")


@pytest.fixture
def two_cpu_cores(monkeypatch):
    monkeypatch.delenv(library.LESSON_ENV, raising=False)
    monkeypatch.setattr(lesson_size, "_device", lambda: "cpu")
    monkeypatch.setattr(library, "nominal_cpu_gflops", lambda cores=None: 189.0)
    lesson_size._settings.cache_clear()
    yield
    lesson_size._settings.cache_clear()


def test_the_b32_preset_on_two_cores_gets_the_sized_lesson_and_the_page_says_why(two_cpu_cores):
    config = AppConfig(default_zoo="vit-b-32-8tasks")
    sized = lesson_size.settings(config)
    assert (sized.steps, sized.per_task, sized.scored_per_task) == (20, 4, 16)
    assert lesson_size.scored_per_task(config, "vit-b-32-8tasks") == 16
    line = lesson_size.note(config)
    assert "20 steps of 4 images per task" in line and "about 105 minutes" in line


def test_the_pocket_zoo_and_a_request_for_the_paper_keep_the_papers_settings(two_cpu_cores, monkeypatch):
    pocket = AppConfig()
    assert lesson_size.settings(pocket).steps == pocket.default_steps and not lesson_size.settings(pocket).sized
    assert lesson_size.note(pocket) == "" and lesson_size.scored_per_task(pocket, "pocket") is None
    monkeypatch.setenv(library.LESSON_ENV, "paper")
    b32 = AppConfig(default_zoo="vit-b-32-8tasks")
    assert lesson_size.settings(b32).steps == 100 and lesson_size.scored_per_task(b32, "vit-b-32-8tasks") is None


@pytest.fixture
def sized_lesson(monkeypatch):
    """Every part of the app sees :data:`SMALL` as the lesson's settings; records handlers.adapt's steps, images."""
    monkeypatch.setattr(lesson_size, "settings", lambda config, choice=None: SMALL)
    adapted: list[tuple[int, int]] = []
    original = handlers.adapt
    from wemoe.adaptation import adapt as adaptation

    timed = adaptation.time_step

    def timing(*args, per_task, **kwargs):  # a merge times one step: at the lesson's images per task
        adapted.append(("timed", per_task))
        return timed(*args, per_task=per_task, **kwargs)

    monkeypatch.setattr(adaptation, "time_step", timing)

    def recording(session, target, steps, lr, per_task, *args, **kwargs):
        adapted.append((steps, per_task))
        yield from original(session, target, steps, lr, per_task, *args, **kwargs)

    monkeypatch.setattr(handlers, "adapt", recording)
    return adapted


def test_step_5_the_warm_up_and_the_zoo_load_use_the_sized_settings(config, sized_lesson):
    session = Session()
    try:
        handlers.load_zoo(session, config, "tiny")
        assert session.bench.loaded.samples == SMALL.scored_per_task  # the app's setting is every image (0)
        shown = [status for status, *_ in lesson.route(session, config)]
        assert f"({SMALL.scored_per_task} test images per task)" in shown[-1]  # what was scored, not the constant
    finally:
        session.close()
    assert sized_lesson == [("timed", SMALL.per_task), (SMALL.steps, SMALL.per_task)]
    warm.warm_default_lesson(dataclasses.replace(config, warm_start=False))
    assert sized_lesson[-1] == (SMALL.steps, SMALL.per_task)
