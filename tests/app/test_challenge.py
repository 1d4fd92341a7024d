"""The class challenge: presets, rules and ranking, its time limit, the teacher's code, the API and the teacher's page
in a browser (start and end in <= 5 clicks) (#30)."""

from __future__ import annotations

from dataclasses import asdict
from urllib.parse import parse_qsl, urlparse

import gradio as gr
import pytest

from app import challenge_page, lesson, teacher
from app.board import BoardError, ClassBoard
from app.challenge import MAX_ROWS, PRESETS, ChallengeError, ChallengeRoom, check_params, in_words, preset
from app.session import Session
from tests.app_support import ARTIFACTS, BROWSER_MARKS, in_browser, launched, tiny_config, write_examples

TASKS = ["task0", "task1", "task2"]


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return tiny_config(write_examples(tmp_path_factory.mktemp("examples")))


def _rows(board: ClassBoard) -> list[dict]:
    return [asdict(e) for e in board.entries()]


def _opened(link: str) -> lesson.LessonLink:
    return lesson.read_link(dict(parse_qsl(urlparse(link).query)), TASKS)


def test_presets_declare_their_parameters_and_refuse_wrong_values():
    assert set(PRESETS) == {"best_lambdas", "forget", "best_wemoe"}
    with pytest.raises(ChallengeError, match="one of best_lambdas, forget, best_wemoe"):
        preset("fastest")
    assert check_params(PRESETS["forget"], {}, TASKS) == {"task": "task0", "keep_above": 50.0}
    assert check_params(PRESETS["best_wemoe"], {}, TASKS, defaults={"max_steps": 40}) == {"max_steps": 40}
    for name, bad in (("forget", {"task": "task9"}), ("forget", {"keep_above": 101}),
                      ("forget", {"keep_above": "lots"}), ("best_wemoe", {"max_steps": 0}),
                      ("best_wemoe", {"max_steps": 2.5}), ("best_wemoe", {"max_steps": True})):
        with pytest.raises(ChallengeError):
            check_params(PRESETS[name], bad, TASKS, defaults={"max_steps": 10})


def test_a_forgetting_challenge_ranks_the_entries_and_shows_the_rule_breakers_with_why():
    board, room = ClassBoard(), ChallengeRoom()
    board.submit("forget", 60.0, "before", "early", forgotten=1.0, controls=80.0, now=5.0,
                 details={"forget": "task1", "lowest": 70.0, "experts": TASKS})  # before the start: not entered
    started = room.start("forget", {"task": "task1", "keep_above": 60}, TASKS, 10, now=10.0)
    assert started["start"] == {"step": "forget", "experts": TASKS, "forget": "task1"}
    assert "forget task1" in started["goal"] and "above 60%" in started["goal"]

    def forget(who, forgotten, lowest, task="task1", strength=0.5, experts=TASKS, at=20.0):
        board.submit("forget", 50.0, f"{task} minus {strength}", who, nickname=who, forgotten=forgotten,
                     controls=lowest + 5, now=at,
                     details={"forget": task, "strength": strength, "lowest": lowest, "experts": experts})

    forget("ann", 30.0, 65.0)
    forget("ann", 20.0, 62.0, strength=0.8, at=25.0)  # ann's better try: one row per student, her best
    forget("bo", 10.0, 40.0, strength=1.5)  # forgets more, but a control task fell below 60%
    forget("cy", 25.0, 70.0, task="task2")  # the wrong task
    forget("di", 20.0, 61.0, strength=0.7, at=30.0)  # ties ann's score, later
    forget("ed", 5.0, 90.0, experts=["task0", "task1"])  # fewer experts than the challenge
    board.submit("lambda", 90.0, "lambda 0.3", "fy", now=20.0)  # another kind: not in this challenge
    shown = room.state(_rows(board), now=40.0, link=challenge_page.link)
    assert shown["running"] and shown["seconds_left"] == 570.0 and shown["winner"] is None
    rows = shown["leaderboard"]
    assert [(r["nickname"], r["rank"], r["counts"]) for r in rows] == [
        ("ann", 1, True), ("di", 2, True), ("bo", None, False), ("cy", None, False), ("ed", None, False)]
    why = {r["nickname"]: r["why"] for r in rows}
    assert why["bo"] == "another task fell to 40.0%, below 60%" and why["cy"] == "forgets task2, not task1"
    assert why["ed"] == "merged 2 experts, the challenge uses 3"
    opened = _opened(rows[0]["link"])
    assert (opened.step, opened.forget, opened.strength, opened.experts, opened.problems) == (
        "forget", "task1", 0.8, TASKS, [])
    assert "2 entries so far" in in_words(shown) and "9 min 30 s left" in in_words(shown)


def test_the_time_limit_ends_a_challenge_and_the_winners_link_opens_its_settings():
    board, room = ClassBoard(), ChallengeRoom()
    room.start("best_lambdas", {}, TASKS, 1, now=100.0)
    for who, lam, average, at in (("ann", 0.3, 70.0, 110.0), ("bo", 0.45, 75.0, 150.0), ("cy", 0.5, 99.0, 161.0)):
        board.submit("lambda", average, f"lambda {lam}", who, nickname=who, now=at,
                     details={"lambda": lam, "experts": TASKS})
    ended = room.state(_rows(board), now=200.0, link=challenge_page.link)  # cy came after the minute: not entered
    assert not ended["running"] and ended["challenge"]["ended_at"] == 160.0 and ended["seconds_left"] == 0.0
    assert ended["winner"]["nickname"] == "bo" and [r["nickname"] for r in ended["leaderboard"]] == ["bo", "ann"]
    opened = _opened(ended["winner"]["link"])
    assert (opened.step, opened.lam, opened.experts) == ("add", 0.45, TASKS)
    assert "The winner: bo, 75.0% average" in in_words(ended) and "Open the winning settings" in in_words(ended)
    board.clear()  # the result is frozen: clearing the board keeps it
    assert room.state([], now=300.0)["winner"]["nickname"] == "bo"
    room.start("best_lambdas", {}, TASKS, 5, now=400.0)  # a new one may start once the last has ended
    assert room.state([], now=401.0)["running"]


def test_the_teacher_ends_a_wemoe_challenge_whose_rule_is_the_number_of_steps():
    board, room = ClassBoard(), ChallengeRoom()
    room.start("best_wemoe", {"max_steps": 50}, TASKS, 30, now=0.0)
    with pytest.raises(ChallengeError, match="A challenge is running"):
        room.start("best_lambdas", {}, TASKS, 5, now=1.0)
    board.submit("wemoe", 88.0, "100 steps", "a", now=5.0, details={"steps": 100, "experts": TASKS})
    board.submit("wemoe", 80.0, "40 steps", "b", now=6.0, details={"steps": 40, "experts": TASKS})
    board.submit("wemoe", 95.0, "? steps", "c", now=7.0)  # no details: its steps unknown
    assert room.end(_rows(board), now=60.0) and not room.end(_rows(board), now=61.0)
    shown = room.state(_rows(board), now=62.0)
    assert shown["winner"]["setting"] == "40 steps"
    assert [r["why"] for r in shown["leaderboard"]] == ["", "100 adaptation steps, more than 50",
                                                        "its number of adaptation steps is unknown"]


def test_a_challenge_is_bounded():
    room, board = ChallengeRoom(), ClassBoard(max_entries=500, per_minute=1)
    for minutes in (0, 121, "10", True):
        with pytest.raises(ChallengeError, match="Time limit"):
            room.start("best_lambdas", {}, TASKS, minutes, now=0.0)
    room.start("best_lambdas", {}, TASKS, 10, now=0.0)
    for i in range(MAX_ROWS + 30):
        board.submit("lambda", 50.0, "lambda 0.3", f"student-{i}", now=1.0 + i / 1000)
    assert len(room.state(_rows(board), now=2.0)["leaderboard"]) == MAX_ROWS
    with pytest.raises(BoardError, match="not a setting the board keeps"):
        board.submit("lambda", 50.0, "x", "z", details={"script": "<b>"})
    with pytest.raises(BoardError):
        board.submit("lambda", 50.0, "x", "z", details={"lambda": 7})


def test_start_and_end_need_the_teachers_code(config, monkeypatch):
    monkeypatch.setenv(teacher.CODE_ENV, "owl-42")
    config.shared.challenge.clear()
    for wrong in ("", "owl", None):
        with pytest.raises(gr.Error, match="not the teacher's code"):
            challenge_page.start(config, wrong, "best_lambdas", {}, 10, experts=TASKS)
        with pytest.raises(gr.Error, match="not the teacher's code"):
            challenge_page.end(config, wrong)
    assert challenge_page.state(config) == {"running": False, "challenge": None}
    monkeypatch.delenv(teacher.CODE_ENV)
    with pytest.raises(gr.Error, match="The teacher's page is off"):
        challenge_page.start(config, "owl-42", "best_lambdas", {}, 10, experts=TASKS)


def test_a_lesson_students_entry_enters_the_challenge(config, monkeypatch):
    monkeypatch.setenv(teacher.CODE_ENV, "owl-42")
    config.shared.board.clear()
    config.shared.challenge.clear()
    student = Session()
    student.session_hash = "tab-challenge"
    lesson.meet(student, config, None)
    shown = challenge_page.start(config, "owl-42", "forget", {"task": "task1", "keep_above": 0}, 5)
    assert shown["running"] and shown["challenge"]["experts"] == TASKS
    with pytest.raises(gr.Error, match="challenge is running: end it first"):
        challenge_page.start(config, "owl-42", "best_lambdas", {}, 5)
    lesson.forget(student, config, "task1", 0.7)
    lesson.add_to_board(student, "forget", "Bo")
    ended = challenge_page.end(config, "owl-42")
    winner = ended["winner"]
    assert winner["nickname"] == "Bo" and winner["counts"]
    opened = _opened(winner["link"])
    assert (opened.step, opened.forget, opened.strength) == ("forget", "task1", 0.7)
    student.close()


def test_the_challenge_through_the_api(config, monkeypatch):
    monkeypatch.setenv(teacher.CODE_ENV, "owl-42")
    config.shared.board.clear()
    config.shared.challenge.clear()
    with launched(config) as (_, client):
        client.predict(chosen=["task0", "task1"], api_name="/lesson_meet")  # the zoo is loaded: its tasks known
        with pytest.raises(Exception, match="not the teacher's code"):
            client.predict(code="guess", preset="best_lambdas", api_name="/start_challenge")
        assert client.predict(api_name="/challenge") == {"running": False, "challenge": None}
        started = client.predict(code="owl-42", preset="best_lambdas", minutes=5, experts="task0,task1",
                                 api_name="/start_challenge")
        assert started["running"] and started["challenge"]["start"]["link"].startswith("./?step=2")
        client.predict(lam_value=0.5, api_name="/lesson_add")
        client.predict(name="Cy", api_name="/submit_to_board")
        live = client.predict(api_name="/challenge")  # anyone may read it
        assert live["leaderboard"][0]["nickname"] == "Cy" and live["leaderboard"][0]["rank"] == 1
        with pytest.raises(Exception, match="not the teacher's code"):
            client.predict(code="", api_name="/end_challenge")
        ended = client.predict(code="owl-42", api_name="/end_challenge")
        assert not ended["running"] and "lambda=0.5" in ended["winner"]["link"]
        note = client.predict(api_name="/lesson_challenge")
        assert "The winner: Cy" in note[0]


@pytest.mark.browser
@BROWSER_MARKS[1]
def test_the_teacher_starts_and_ends_a_challenge_in_five_clicks(config, monkeypatch):
    from playwright.sync_api import expect

    monkeypatch.setenv(teacher.CODE_ENV, "owl-42")
    config.shared.board.clear()
    config.shared.challenge.clear()
    student = Session()
    student.session_hash = "tab-browser"
    lesson.meet(student, config, None)  # the class's zoo is loaded (the pocket zoo's tasks are read from its manifest)
    with in_browser(config) as (demo, browser):
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(demo.local_url.rstrip("/") + "/teacher")
        page.locator("#teacher-code input").fill("owl-42")  # 1
        page.locator("#teacher-open").click()  # 2
        expect(page.locator("#teacher-status")).to_contain_text("with the lesson open", timeout=60_000)
        page.locator("#challenge-start").click()  # 3: the first preset (best lambda) and 10 minutes, as offered
        expect(page.locator("#challenge-status")).to_contain_text("min", timeout=30_000)
        lesson.add_up(student, config, 0.4)
        lesson.add_to_board(student, "lambda", "Ann")
        expect(page.locator("#challenge-leaderboard")).to_contain_text("Ann", timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "teacher-challenge-1-running.png"), full_page=True)
        page.locator("#challenge-end").click()  # 4
        expect(page.locator("#challenge-status")).to_contain_text("The winner: Ann", timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "teacher-challenge-2-ended.png"), full_page=True)
        href = page.locator("#challenge-status a").first.get_attribute("href")
        assert _opened(href).lam == 0.4
        learner = browser.new_page(viewport={"width": 1280, "height": 800})
        learner.goto(demo.local_url + href.removeprefix("./"))
        expect(learner.locator("#lesson-challenge-lambda")).to_contain_text("The winner: Ann", timeout=30_000)
        expect(learner.locator("#lesson-lambda input[type=number]")).to_have_value("0.4", timeout=30_000)
        learner.screenshot(path=str(ARTIFACTS / "teacher-challenge-3-student.png"))
    student.close()
