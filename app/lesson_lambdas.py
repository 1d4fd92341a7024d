"""Step 2's per-task lambdas: one lambda per task instead of one for all, the class challenge "best average with one
lambda per task" (``app.challenge``). Scored as the single lambda is (``lesson.task_scores``: the lesson's sample of
test images, once per setting for the class) and put on the class board as kind ``lambdas`` with every task's value,
so that a challenge's link opens them again (``lesson.read_link``'s ``lambdas``).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr
import plotly.graph_objects as go

from app import lesson
from app.errors import friendly, refuse
from app.events import quiet
from app.inputs import number
from app.jobs import busy
from app.session import AppConfig, Session

SETTING_LENGTH = 80  # a board entry's setting at most (app.board)


def checked_lambdas(values: Any, tasks: Sequence[str], chosen: Sequence[str]) -> dict[str, float]:
    """The lambdas of the ``chosen`` tasks (the session's experts) from ``values``: a mapping task -> lambda, or one
    value per task of ``tasks`` (the page's sliders, in their order); each a number from 0 to 1. A wrong one is
    refused naming its task."""
    if isinstance(values, Mapping):
        given = dict(values)
    elif isinstance(values, (list, tuple)) and len(values) == len(tasks):
        given = dict(zip(tasks, values, strict=True))
    else:
        raise refuse(f"One lambda per task: give {len(tasks)} values (tasks {', '.join(tasks)}), got {values!r}.")
    missing = [t for t in chosen if t not in given]
    if missing:
        raise refuse(f"One lambda per task: no lambda for {', '.join(map(lesson.plain, missing))}.")
    return {t: float(number(given[t], f"Lambda of {lesson.plain(t)}", minimum=0.0, maximum=1.0))
            for t in chosen}


def add_per_task(session: Session, config: AppConfig, values: Any, tasks: Sequence[str] | None = None
                 ) -> tuple[go.Figure, str]:
    """Step 2 with one lambda per task: ``values`` (see :func:`checked_lambdas`; ``tasks``: the order of a list of
    values, default the session's experts) -> the accuracy per task beside the single lambda's at the lesson's default,
    and the average. The result is the session's ``lambdas`` finding (what its board button submits)."""
    bench = lesson.bench_of(session, config)
    chosen = list(bench.task_names)
    lambdas = checked_lambdas(values, list(tasks) if tasks else chosen, chosen)
    session.lesson_step = "add"
    with friendly("Adding the experts up"), busy(session):
        scores = lesson.task_scores(session, lambdas)
        single = lesson.task_scores(session, dict.fromkeys(chosen, lesson.DEFAULT_LAMBDA))
    session.findings["lambdas"] = {"average": scores["average"], "setting": setting_words(lambdas),
                                   "details": {"experts": chosen, "lambdas": lambdas}}
    figure = lesson.fit(go.Figure([
        go.Bar(name=name, x=[lesson.plain(t) for t in rows], y=list(rows.values()),
               text=[f"{v:.0f}" for v in rows.values()], textposition="auto")
        for name, rows in ((f"one lambda, {lesson.DEFAULT_LAMBDA:g}", single), ("your lambdas", scores))]))
    figure.update_layout(barmode="group", yaxis={"title": "% correct", "range": [0, 100]},
                         title="task arithmetic with one lambda per task")
    gained = scores["average"] - single["average"]
    return figure, (f"Average with your lambdas: **{scores['average']:.1f}%** ({gained:+.1f} points against one "
                    f"lambda of {lesson.DEFAULT_LAMBDA:g} for every task).")


def setting_words(lambdas: Mapping[str, float]) -> str:
    """The lambdas as a board entry's setting: the values in the tasks' order, cut to the board's 80 characters (the
    entry's details keep every value)."""
    words = "lambdas " + " ".join(f"{v:g}" for v in lambdas.values())
    return words if len(words) <= SETTING_LENGTH else words[:SETTING_LENGTH - 3].rsplit(" ", 1)[0] + "..."


@dataclass
class PerTaskControls:
    """Step 2's per-task part of the page: the folded box, one slider per task, its button, its board button and
    notes."""

    box: gr.Accordion
    sliders: list[gr.Slider]
    button: gr.Button
    board: gr.Button
    note: gr.Markdown
    board_note: gr.Markdown


def build_controls(tasks: Sequence[str]) -> PerTaskControls:
    """The controls, folded under step 2's own (inside the step's ``gr.Step``); one slider per task of ``tasks``."""
    with gr.Accordion("One lambda per task (the class challenge's)", open=False, elem_id="lesson-lambdas") as box:
        with gr.Row(elem_id="lesson-task-lambdas"):
            sliders = [gr.Slider(0.0, 1.0, value=lesson.DEFAULT_LAMBDA, step=0.05, label=lesson.plain(t),
                                 min_width=160, elem_id=f"lesson-lambda-{t}") for t in tasks]
        with gr.Row():
            button = gr.Button("Add them up with these lambdas", variant="primary", size="sm",
                               elem_id="lesson-add-lambdas")
            board = gr.Button("Add this to the class board", size="sm", elem_id="lesson-board-lambdas")
        note = gr.Markdown()
        board_note = gr.Markdown()
    return PerTaskControls(box, sliders, button, board, note, board_note)


def wire(controls: PerTaskControls, session: gr.State, config: AppConfig, tasks: Sequence[str], plot: gr.Plot,
         events: dict) -> None:
    """The button's event (``lesson_add_lambdas``: the session, then one lambda per task of ``tasks``, each named by
    its task in the API); ``plot``: step 2's bars; ``events``: the queue's options (the long jobs')."""
    @quiet
    def per_task_event(state, *values):
        return add_per_task(state, config, list(values), tasks)

    per_task_event.__signature__ = inspect.Signature(
        [inspect.Parameter("state", inspect.Parameter.POSITIONAL_OR_KEYWORD), *task_parameters(tasks)])

    controls.button.click(per_task_event, [session, *controls.sliders], [plot, controls.note],
                          api_name="lesson_add_lambdas", show_progress_on=[controls.note], **events)


def task_parameters(tasks: Sequence[str], default: Any = inspect.Parameter.empty) -> list[inspect.Parameter]:
    """An event's parameters for the per-task sliders, one per task of ``tasks`` named by its task (``lambda_<i>``
    where the task's name is no identifier), so that the API names each value."""
    return [inspect.Parameter(t if t.isidentifier() else f"lambda_{i}", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                              default=default) for i, t in enumerate(tasks)]


def link_values(controls: PerTaskControls, tasks: Sequence[str], lambdas: Mapping[str, float]) -> tuple:
    """What a link opens (``lesson.LessonLink.lambdas``): the box open with the link's lambdas (a task it does not
    name at the lesson's default), or as it was when the link has none."""
    if not lambdas:
        return (gr.skip(), *(gr.skip() for _ in controls.sliders))
    return (gr.Accordion(open=True), *(lambdas.get(t, lesson.DEFAULT_LAMBDA) for t in tasks))
