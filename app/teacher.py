"""The teacher's page (``/teacher``): the class now (students, lesson steps, how busy the Space is) and the class board
(``app.board``), opened with the code the Space's owner sets in ``MERGE_EXPLORER_TEACHER_CODE``.

Without the variable the page says how to turn it on and shows nothing. A wrong code gets one plain refusal; the code
is compared in constant time (``hmac.compare_digest``), so answers take as long whatever was typed.
"""

from __future__ import annotations

import hmac
import os
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from app.board import KINDS, summary
from app.errors import refuse
from app.events import quiet
from app.files import atomic_path
from app.session import AppConfig

CODE_ENV = "MERGE_EXPLORER_TEACHER_CODE"
NOT_SET = (f"The teacher's page is off. The Space's owner turns it on by setting the secret `{CODE_ENV}` (Space "
           "settings, Variables and secrets) to a code, then opens this page and types it.")
REFRESH_EVERY_S = 1.0  # the open page reads the class this often: a new entry shows within the 2 s
# where a student is, after their count ("3 on step 2 (adding them up)"), in the lesson's order
STEP_WORDS = {"meet": "on step 1 (meeting the experts)", "add": "on step 2 (adding them up)",
              "interfere": "on step 3 (interference)", "forget": "on step 4 (forgetting a task)",
              "route": "on step 5 (routing)", "try": "on step 6 (trying images)", "cost": "on step 7 (the cost)",
              "not started": "in the lab or not started"}


def teacher_code() -> str | None:
    """The code that opens the teacher's page (None: the page is off)."""
    return os.environ.get(CODE_ENV) or None


def check_code(code: Any) -> None:
    """Refuse (a ``gr.Error``) unless ``code`` is the teacher's code; says how to turn the page on when it is off."""
    expected = teacher_code()
    if expected is None:
        raise refuse(NOT_SET, title="Teacher's page off")
    given = code if isinstance(code, str) else ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise refuse("That is not the teacher's code.", title="Wrong code")


def class_status(config: AppConfig) -> str:
    """The class now, in plain words: how many students, how many on each step of the lesson (in its order)."""
    now = config.shared.class_now()
    order = {step: index for index, step in enumerate(STEP_WORDS)}
    steps = ", ".join(f"{count} {STEP_WORDS.get(step, f'at {step}')}"
                      for step, count in sorted(now["steps"].items(), key=lambda item: order.get(item[0], len(order))))
    busy = now["memory_mb"] / max(1, now["memory_budget_mb"])
    load = "busy: new work may wait" if busy > 0.8 else "fine"
    students = f"{now['students']} student{'' if now['students'] == 1 else 's'}"
    return (f"**{students}** with the lesson open now{': ' + steps if steps else ''}. The Space is {load} "
            f"(memory {now['memory_mb']} of {now['memory_budget_mb']} MB).")


def board_frame(config: AppConfig) -> pd.DataFrame:
    """The board's entries as a table, newest first, in plain words."""
    rows = config.shared.board.as_json()["entries"]
    frame = pd.DataFrame(rows, columns=["kind", "nickname", "average", "setting", "forgotten", "controls", "at"])
    frame["kind"] = frame["kind"].map(KINDS)
    frame["at"] = pd.to_datetime(frame["at"], unit="s").dt.strftime("%H:%M:%S")
    return frame.iloc[::-1].rename(columns={"average": "average %", "forgotten": "forgotten task %",
                                            "controls": "other tasks %", "at": "time"})


def view(code: Any, config: AppConfig) -> tuple[str, str, pd.DataFrame]:
    """(the class now, the board's summary, the board's table) for the teacher's ``code``."""
    check_code(code)
    board = config.shared.board.as_json()
    note = summary(board["entries"])
    if board["dropped"]:
        note += (f"\n\n_The board keeps the latest {board['kept_at_most']}: {board['dropped']} older entries were "
                 "dropped._")
    return class_status(config), note + "\n\n" + kept_words(config.shared.board.survives_restart), board_frame(config)


def refreshed(code: Any, is_open: Any, shown_version: Any, config: AppConfig) -> tuple:
    """The open page's tick: (the class now, the board's summary, its table, the board's version drawn), the summary
    and the table only when the board changed since the page drew version ``shown_version`` (``gr.skip()`` else;
    every output skipped on a closed page or a wrong code). A board of hundreds of rows redrawn every second took the
    cores from the students' clicks."""
    if not is_open:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    try:
        check_code(code)
    except gr.Error:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    version = config.shared.board.version  # read first: an entry added while drawing is drawn by the next tick
    if version == shown_version:
        return class_status(config), gr.skip(), gr.skip(), gr.skip()
    return (*view(code, config), version)


def kept_words(survives: bool) -> str:
    """Whether the board survives a restart of the Space, in plain words."""
    if survives:
        return "_The board is saved in the Space's results directory: it survives a restart of the Space._"
    return ("_The board lives in memory: a restart of the Space empties it (the Space's owner keeps it by setting "
            "`MERGE_EXPLORER_CACHE_DIR` to a folder on persistent storage)._")


def build_teacher_page(config: AppConfig, light: dict) -> None:
    """The page's components and events (inside ``demo.route``)."""
    gr.Markdown("# The teacher's page\nWhat the class found, live. Students add their results from the lesson "
                "('Add to the class board'); nothing identifying is kept.")
    with gr.Row():
        code = gr.Textbox(label="Teacher's code", type="password", scale=3, elem_id="teacher-code")
        open_button = gr.Button("Open", variant="primary", scale=1, elem_id="teacher-open")
    status = gr.Markdown(NOT_SET if teacher_code() is None else "_Type the code and press Open._",
                         elem_id="teacher-status")
    best = gr.Markdown(elem_id="teacher-summary")
    table = gr.Dataframe(label="The class board (newest first)", interactive=False, elem_id="teacher-board")
    with gr.Row():
        clear_button = gr.Button("Clear the board", variant="stop")
        csv_button = gr.Button("Download the board (CSV)")
        # hidden until there is a file: the empty box was a 200 px drop zone with nothing to download
        csv_file = gr.File(label="Board CSV", interactive=False, visible=False, elem_id="teacher-csv")
    opened = gr.State(False)
    drawn = gr.State(-1)  # the board's version this page shows (ClassBoard.version)
    timer = gr.Timer(REFRESH_EVERY_S, active=False)

    @quiet
    def open_event(typed):
        version = config.shared.board.version  # read first: an entry added meanwhile is drawn by the next tick
        shown = view(typed, config)
        return (*shown, True, gr.Timer(active=True), version)

    open_button.click(open_event, [code], [status, best, table, opened, timer, drawn], api_name="teacher_view",
                      preprocess=False, **light)

    def refresh(typed, is_open, shown_version):
        return refreshed(typed, is_open, shown_version, config)

    timer.tick(refresh, [code, opened, drawn], [status, best, table, drawn], api_name="teacher_refresh",
               show_progress="hidden", queue=False)

    @quiet
    def clear_event(typed):
        check_code(typed)
        count = config.shared.board.clear()
        return f"_Cleared {count} entries._", *view(typed, config)[1:]

    clear_button.click(clear_event, [code], [status, best, table], api_name="teacher_clear", preprocess=False,
                       **light)

    @quiet
    def csv_event(typed):
        check_code(typed)
        folder = Path(tempfile.gettempdir()) / f"merge-explorer-board-{os.getpid()}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "class-board.csv"
        with atomic_path(path) as written:
            written.write_text(config.shared.board.csv_text())
        return str(path)

    # the box shows once it holds the file (the endpoint still answers with the file's path alone)
    csv_button.click(csv_event, [code], [csv_file], api_name="teacher_csv", preprocess=False, **light).success(
        lambda: gr.File(visible=True), None, [csv_file], api_visibility="private", queue=False, show_progress="hidden")

    @quiet
    def class_board(code: str = "") -> dict:
        """The class board as JSON (every entry, the best per kind) and the class now (``class``: students with the
        lesson open, how many at each step): for the teacher's code only."""
        check_code(code)
        now = config.shared.class_now()
        return config.shared.board.as_json() | {"class": {"students": now["students"], "steps": now["steps"]}}

    gr.api(class_board, api_name="class_board")

    from app.challenge_page import build_teacher_challenge  # imports this module's check_code

    build_teacher_challenge(config, code, light)
