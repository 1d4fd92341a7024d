"""The class challenge on the pages (``app.challenge`` holds the rules): the teacher's preset, fields and buttons on
``/teacher``, the note a student sees beside the lesson's board buttons, and the API: ``start_challenge`` and
``end_challenge`` (the teacher's code, checked as the teacher's page checks it) and ``challenge`` (anyone)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import gradio as gr
import pandas as pd

from app import challenge, lesson
from app.errors import refuse
from app.events import quiet
from app.inputs import test_images_per_task
from app.session import AppConfig
from app.teacher import check_code

NOTE_EVERY_S = 5.0  # how often a student's page reads the challenge
BOARD_COLUMNS = ["rank", "nickname", "result", "setting", "counts", "why"]


def class_tasks(config: AppConfig) -> list[str]:
    """The default zoo's tasks (read without loading it where it can be; else once it is loaded; else none)."""
    from app.lesson_page import default_tasks

    if known := default_tasks(config):
        return known
    loaded = config.shared.zoos.get((config.default_zoo, test_images_per_task(None, config)))
    return list(loaded.task_names) if loaded is not None else []


def link(settings: Mapping[str, Any]) -> str:
    """The lesson link that opens these settings (relative: it opens on the page it is shown on)."""
    return lesson.link_for("./", settings["step"], settings.get("experts") or (), lam=settings.get("lam"),
                           forget=settings.get("forget"), strength=settings.get("strength"),
                           lambdas=settings.get("lambdas"))


def state(config: AppConfig) -> dict[str, Any]:
    """The challenge now, with the class board's entries ranked and links (``ChallengeRoom.state``)."""
    if config.shared.challenge.empty():  # every open page asks every few seconds: no copy of the board for nothing
        return {"running": False, "challenge": None}
    entries = [asdict(entry) for entry in config.shared.board.entries()]
    return config.shared.challenge.state(entries, link=link)


def start(config: AppConfig, code: Any, name: Any, values: Mapping[str, Any], minutes: Any,
          experts: Any = None) -> dict[str, Any]:
    """Start a challenge (the teacher's ``code`` first); ``experts``: the tasks it uses (default: every task of the
    default zoo). A wrong value is refused with what was wrong."""
    check_code(code)
    tasks = class_tasks(config)
    if experts:
        chosen = [e.strip() for e in experts.split(",")] if isinstance(experts, str) else experts
        if not isinstance(chosen, list) or len(chosen) < 2 or not all(isinstance(e, str) for e in chosen) or (
                tasks and not set(chosen) <= set(tasks)):
            raise refuse(f"Experts: at least two of {', '.join(tasks) or 'the zoo tasks'}, got {experts!r}.")
        tasks = chosen
    if not tasks:
        raise refuse("The challenge needs the lesson's zoo loaded: open the lesson once, then start it.")
    try:
        config.shared.challenge.start(name, values, tasks, minutes, defaults={"max_steps": config.default_steps})
    except challenge.ChallengeError as error:
        raise refuse(str(error), title="Challenge") from None
    return state(config)


def end(config: AppConfig, code: Any) -> dict[str, Any]:
    """End the running challenge (the teacher's ``code`` first) and freeze its leaderboard."""
    check_code(code)
    entries = [asdict(entry) for entry in config.shared.board.entries()]
    config.shared.challenge.end(entries)
    return state(config)


def leaderboard_frame(shown: Mapping[str, Any]) -> pd.DataFrame:
    """The leaderboard as a table in plain words (rank, who, result, setting, whether it counts and why not)."""
    frame = pd.DataFrame(shown.get("leaderboard") or [], columns=BOARD_COLUMNS)
    frame["counts"] = frame["counts"].map({True: "yes", False: "no"})
    frame["rank"] = frame["rank"].map(lambda r: "" if r is None or pd.isna(r) else str(int(r)))
    return frame.rename(columns={"counts": "counts?", "why": "why not"})


def teacher_words(shown: Mapping[str, Any]) -> str:
    """What the teacher reads above the leaderboard."""
    return challenge.in_words(shown) or "_No challenge yet: pick one, then press Start._"


def build_teacher_challenge(config: AppConfig, code: gr.Textbox, light: dict) -> None:
    """The challenge's part of the teacher's page (inside ``build_teacher_page``): preset, fields, Start and End, the
    goal, the time left, the live leaderboard and the winner's link."""
    tasks = class_tasks(config)
    gr.Markdown("## A challenge\nPick one, press Start: students see its goal and time left beside the board buttons "
                "of the lesson; their board entries rank here; End (or the time limit) shows the winning settings.")
    names = [(p.title, p.name) for p in challenge.PRESETS.values()]
    with gr.Row():
        preset = gr.Radio(names, value=names[0][1], label="Challenge", scale=3, elem_id="challenge-preset")
        minutes = gr.Number(10, label="Time limit (minutes)", minimum=challenge.MINUTES[0],
                            maximum=challenge.MINUTES[1], scale=1, elem_id="challenge-minutes")
    with gr.Row():
        task = gr.Dropdown([(lesson.plain(t), t) for t in tasks], value=lesson.FORGET_FIRST if lesson.FORGET_FIRST in
                           tasks else (tasks[0] if tasks else None), label="Task to forget", visible=False,
                           allow_custom_value=not tasks)
        keep_above = gr.Number(50, label="Every other task must stay above (%)", minimum=0, maximum=100,
                               visible=False)
        max_steps = gr.Number(config.default_steps, label="At most this many adaptation steps", minimum=1,
                              precision=0, visible=False)
    with gr.Row():
        start_button = gr.Button("Start the challenge", variant="primary", elem_id="challenge-start")
        end_button = gr.Button("End the challenge", variant="stop", elem_id="challenge-end")
    words = gr.Markdown(teacher_words(state(config)), elem_id="challenge-status")
    table = gr.Dataframe(leaderboard_frame(state(config)), label="Leaderboard (one row per student, best first)",
                         interactive=False, elem_id="challenge-leaderboard")
    timer = gr.Timer(3.0)

    def fields(name):
        return (gr.Dropdown(visible=name == "forget"), gr.Number(visible=name == "forget"),
                gr.Number(visible=name == "best_wemoe"))

    preset.change(fields, [preset], [task, keep_above, max_steps], show_progress="hidden", queue=False)

    def shown():
        now = state(config)
        return teacher_words(now), leaderboard_frame(now)

    @quiet
    def start_event(typed, name, limit, forgotten, above, steps):
        start(config, typed, name, {"task": forgotten, "keep_above": above, "max_steps": steps}, limit)
        return shown()

    start_button.click(start_event, [code, preset, minutes, task, keep_above, max_steps], [words, table],
                       api_name="teacher_start_challenge", preprocess=False, **light)

    @quiet
    def end_event(typed):
        end(config, typed)
        return shown()

    end_button.click(end_event, [code], [words, table], api_name="teacher_end_challenge", preprocess=False, **light)
    timer.tick(shown, None, [words, table], api_name="teacher_challenge_refresh", show_progress="hidden",
               queue=False)

    def start_challenge(code: str = "", preset: str = "best_lambdas", minutes: float = 10.0, task: str = "",
                        keep_above: float = 50.0, max_steps: int | None = None, experts: str = "") -> dict:
        """Start a class challenge (the teacher's code). preset: best_lambdas, forget (task, keep_above: every other
        task above this %) or best_wemoe (max_steps); minutes: the time limit; experts: comma-separated tasks
        (default: every task). Returns the challenge as JSON."""
        return quiet(start)(config, code, preset, {"task": task, "keep_above": keep_above, "max_steps": max_steps},
                            minutes, experts)

    def end_challenge(code: str = "") -> dict:
        """End the running challenge (the teacher's code): its leaderboard is frozen and its winner shown."""
        return quiet(end)(config, code)

    def challenge_now() -> dict:
        """The current (or last) challenge and its leaderboard as JSON: its goal, time left, entries ranked (those that
        break its rule marked, with why), and once ended the winner with a link to its settings."""
        return state(config)

    gr.api(start_challenge, api_name="start_challenge")
    gr.api(end_challenge, api_name="end_challenge")
    gr.api(challenge_now, api_name="challenge")


def student_note(kind: str) -> gr.Markdown:
    """The challenge's line beside a lesson step's board button (filled by :func:`wire_student_notes`)."""
    return gr.Markdown(elem_id=f"lesson-challenge-{kind}")


def wire_student_notes(config: AppConfig, notes: Mapping[str, gr.Markdown]) -> None:
    """Every few seconds, the challenge in plain words beside the board buttons (the goal and time left while it
    runs, then the winner and a link to the winning settings); a step another challenge is about says where to go."""
    timer = gr.Timer(NOTE_EVERY_S)
    kinds = list(notes)

    def notes_now():
        now = state(config)
        words = challenge.in_words(now)
        current = now.get("challenge")
        if current and now["running"]:
            step = lesson.TITLES[current["start"]["step"]]
            elsewhere = f"_A class challenge is running in step {step}._"
            return tuple(words if kind in current["kinds"] else elsewhere for kind in kinds)
        return tuple(words for _ in kinds)

    timer.tick(notes_now, None, [notes[k] for k in kinds], api_name="lesson_challenge", show_progress="hidden",
               queue=False)
