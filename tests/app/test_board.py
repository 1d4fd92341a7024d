"""The class board and the teacher's page: checked, bounded, rate-limited entries; the page behind its code (#30)."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest

from app import lesson, teacher
from app.board import BoardError, ClassBoard, plain_nickname
from app.session import Session
from tests.app_support import launched, tiny_config, write_examples


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return tiny_config(write_examples(tmp_path_factory.mktemp("examples")))


def test_entries_are_checked_and_plain():
    board = ClassBoard()
    entry = board.submit("lambda", 81.237, "lambda 0.3, 8 experts", "s1", nickname="  <b>Ann</b> [x](http://e) ")
    assert entry.nickname == "bAnnb xhttpe" and entry.average == 81.24
    assert plain_nickname("a" * 40) == "a" * 24 and plain_nickname(None) == ""
    for bad in ({"kind": "cheat"}, {"average": 101}, {"average": "x"}, {"average": True}, {"setting": ""},
                {"setting": "y" * 81}, {"nickname": 5}, {"forgotten": -1}):
        arguments = {"kind": "lambda", "average": 50.0, "setting": "lambda 0.3", "session_id": "s2"} | bad
        with pytest.raises(BoardError):
            board.submit(**arguments)
    assert len(board.entries()) == 1


def test_a_student_cannot_flood_the_board_and_a_full_board_drops_the_oldest():
    board = ClassBoard(max_entries=5, per_minute=3)
    for i in range(3):
        board.submit("wemoe", 90.0 + i, f"{i} steps", "s1", now=100.0 + i)
    with pytest.raises(BoardError, match="At most 3 entries a minute"):
        board.submit("wemoe", 99.0, "too many", "s1", now=110.0)
    board.submit("wemoe", 80.0, "another student", "s2", now=110.0)
    board.submit("wemoe", 81.0, "a minute later", "s1", now=161.0)
    board.submit("wemoe", 82.0, "and another", "s3", now=162.0)
    assert [e.setting for e in board.entries()] == ["1 steps", "2 steps", "another student", "a minute later",
                                                    "and another"]
    data = board.as_json()
    assert data["dropped"] == 1 and data["count"] == 5 and data["best"]["wemoe"]["average"] == 92.0
    assert all("session" not in row for row in data["entries"])  # nothing that ties an entry to a browser
    assert board.csv_text().splitlines()[0] == "kind,nickname,average,setting,forgotten,controls,at"
    assert board.clear() == 5 and board.as_json()["count"] == 0


def test_forgetting_is_best_when_the_controls_stay_and_the_task_goes():
    board = ClassBoard()
    board.submit("forget", 60.0, "shapes minus 0.5", "a", forgotten=40.0, controls=75.0)
    board.submit("forget", 50.0, "shapes minus 2", "b", forgotten=0.0, controls=55.0)
    board.submit("forget", 62.0, "shapes minus 0.2", "c", forgotten=80.0, controls=76.0)
    assert board.as_json()["best"]["forget"]["setting"] == "shapes minus 2"  # 55 - 0 beats 75 - 40 and 76 - 80


def test_the_teachers_page_is_off_without_a_code_and_closed_to_a_wrong_one(config, monkeypatch):
    monkeypatch.delenv(teacher.CODE_ENV, raising=False)
    with pytest.raises(gr.Error, match="The teacher's page is off"):
        teacher.view("anything", config)
    monkeypatch.setenv(teacher.CODE_ENV, "owl-42")
    for wrong in ("", "owl-4", "owl-421", None, 42):
        with pytest.raises(gr.Error, match="not the teacher's code"):
            teacher.view(wrong, config)
    status, _, table = teacher.view("owl-42", config)
    assert "students" in status and list(table.columns)[:3] == ["kind", "nickname", "average %"]


def test_the_teacher_counts_the_students_and_sees_their_findings(config, monkeypatch):
    monkeypatch.setenv(teacher.CODE_ENV, "owl-42")
    config.shared.board.clear()
    students = [Session() for _ in range(3)]
    before = config.shared.class_now()["students"]
    for student in students:
        student.session_hash = f"tab-{id(student)}"
        config.shared.here(student)  # each page's tick (lesson_here) says it is open
        lesson.meet(student, config, None)
    lesson.add_up(students[0], config, 0.4)
    assert "Added to the class board as Bo" in lesson.add_to_board(students[0], "lambda", "Bo")
    with pytest.raises(gr.Error, match="Nothing to add yet"):
        lesson.add_to_board(students[1], "wemoe")
    now = config.shared.class_now()
    assert now["students"] == before + 3 and now["steps"].get("add") == 1
    status, best, table = teacher.view("owl-42", config)
    assert f"{before + 3} students" in status and "1 on step 2 (adding them up)" in status
    assert "Bo" in best and table.iloc[0]["setting"] == "lambda 0.4, 3 experts"
    config.shared.close(students[2].session_hash)  # gradio's unload: the tab was closed
    assert config.shared.class_now()["students"] == before + 2  # a closed tab leaves the count
    for student in students:
        student.close()


def test_the_class_now_reads_as_students_on_steps_in_the_lessons_order(config, monkeypatch):
    """The summary read "3 at 2. adding them up" (a step number glued to a count), steps in alphabetical order."""
    now = {"students": 6, "steps": {"route": 1, "not started": 2, "add": 3}, "memory_mb": 100, "memory_budget_mb": 1000}
    monkeypatch.setattr(config.shared, "class_now", lambda: now)
    status = teacher.class_status(config)
    assert status.startswith("**6 students** with the lesson open now: 3 on step 2 (adding them up), 1 on step 5 "
                             "(routing), 2 in the lab or not started. The Space is fine"), status
    monkeypatch.setattr(config.shared, "class_now", lambda: now | {"students": 0, "steps": {}})
    assert teacher.class_status(config).startswith("**0 students** with the lesson open now. The Space")


def test_the_board_csv_box_shows_only_once_there_is_a_file(config, monkeypatch):
    """An empty file box (a 200 px drop zone) stood beside the buttons before anything was downloaded."""
    monkeypatch.setenv(teacher.CODE_ENV, "owl-42")
    with launched(config) as (demo, client):
        boxes = [b for b in demo.blocks.values() if isinstance(b, gr.File) and b.label == "Board CSV"]
        assert len(boxes) == 1 and boxes[0].visible is False
        path = client.predict("owl-42", api_name="/teacher_csv")  # the endpoint still answers with the file
        assert Path(path).read_text().splitlines()[0] == "kind,nickname,average,setting,forgotten,controls,at"
        reveal = [f for f in demo.fns.values() if [o._id for o in f.outputs] == [boxes[0]._id] and not f.inputs]
        assert len(reveal) == 1 and reveal[0].fn().visible is True  # after the file is written, the box shows


def test_a_page_that_stops_saying_it_is_open_leaves_the_count_within_seconds(config):
    from app.shared import PRESENT_EVERY_S, PRESENT_S

    student, lurker = Session(), Session()
    before = config.shared.class_now(now=1000.0)["students"]
    config.shared.here(student, now=1000.0)
    config.shared.here(lurker, now=1000.0)  # a page open, nothing clicked yet: counted too
    assert config.shared.class_now(now=1000.0 + PRESENT_S)["students"] == before + 2
    config.shared.here(student, now=1000.0 + PRESENT_EVERY_S)
    assert config.shared.class_now(now=1000.0 + PRESENT_S + 0.5)["students"] == before + 1  # the lurker's tab closed
    assert PRESENT_EVERY_S < PRESENT_S <= 5.0  # the 5 s, with a tick to spare


def test_the_board_through_the_api(config, monkeypatch):
    monkeypatch.setenv(teacher.CODE_ENV, "owl-42")
    config.shared.board.clear()
    with launched(config) as (_, client):
        before = config.shared.class_now()["students"]
        client.predict(api_name="/lesson_here")  # what the page's timer sends every 2 s
        assert config.shared.class_now()["students"] == before + 1
        client.predict(chosen=["task0", "task1"], api_name="/lesson_meet")
        client.predict(lam_value=0.5, api_name="/lesson_add")
        note = client.predict(name="Cy", api_name="/submit_to_board")
        assert note.startswith("Added to the class board as Cy")
        board = client.predict(code="owl-42", api_name="/class_board")
        assert board["count"] == 1 and board["entries"][0]["nickname"] == "Cy"
        with pytest.raises(Exception, match="not the teacher's code"):
            client.predict(code="guess", api_name="/class_board")


def test_the_summary_counts_in_words():
    from app.board import summary

    one = {"kind": "lambda", "nickname": "Ada", "setting": "lambda 0.3", "average": 80.0}
    text = summary([one])
    assert "1 entry;" in text and "by Ada" in text
    assert "2 entries;" in summary([one, {**one, "nickname": "", "average": 81.0}])
    assert summary([]) == "_No entries yet._"
