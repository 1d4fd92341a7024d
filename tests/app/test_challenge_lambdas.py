"""The challenge "best average with one lambda per task": step 2's per-task lambdas scored like the single lambda,
submitted to the board, ranked by their merge's average, and the start and winning links open those lambdas (#30)."""

from __future__ import annotations

from dataclasses import asdict
from urllib.parse import parse_qsl, urlparse

import gradio as gr
import pytest

from app import challenge, challenge_page, lesson, lesson_lambdas, teacher
from app.board import BoardError, ClassBoard
from app.challenge import ChallengeRoom
from app.session import AppConfig, Session
from tests.app_support import launched, tiny_config, write_examples
from wemoe.analysis.sweep import per_task_lambdas

TASKS = ["task0", "task1", "task2"]


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return tiny_config(write_examples(tmp_path_factory.mktemp("examples")))


@pytest.fixture
def student():
    made = Session()
    made.session_hash = "tab-lambdas"
    yield made
    made.close()


def _opened(link: str, tasks=TASKS) -> lesson.LessonLink:
    return lesson.read_link(dict(parse_qsl(urlparse(link).query)), tasks)


def test_one_lambda_per_task_is_the_single_lambda_when_they_are_equal_and_the_merge_it_names(config, student):
    _, _, note = lesson.add_up(student, config, 0.4)
    single = student.findings["lambda"]["average"]
    lesson_lambdas.add_per_task(student, config, dict.fromkeys(TASKS, 0.4))
    assert student.findings["lambdas"]["average"] == pytest.approx(single)  # the same merge, the same images
    chosen = {"task0": 0.1, "task1": 0.6, "task2": 0.35}
    bars, words = lesson_lambdas.add_per_task(student, config, [0.1, 0.6, 0.35], TASKS)  # the sliders' order
    found = student.findings["lambdas"]
    expected = per_task_lambdas(student.bench, chosen, per_task=lesson.LESSON_PER_TASK)
    assert found["average"] == pytest.approx(expected["average"])  # theta_0 + sum_t lambda_t tau_t, computed anew
    assert found["details"] == {"experts": TASKS, "lambdas": chosen}
    assert [trace.name for trace in bars.data] == ["one lambda, 0.3", "your lambdas"]
    assert f"{expected['average']:.1f}%" in words and student.lesson_step == "add"
    for bad, message in (([0.1, 0.2], "give 3 values"), ({"task0": 0.1}, "no lambda for task1"),
                         ({"task0": 0.1, "task1": 2, "task2": 0.3}, "Lambda of task1: enter a number from 0 to 1")):
        with pytest.raises(gr.Error, match=message):
            lesson_lambdas.add_per_task(student, config, bad, TASKS)
    assert student.findings["lambdas"]["details"]["lambdas"] == chosen  # kept after the refusals


def test_many_tasks_lambdas_fit_a_board_entry():
    many = {f"task{i}": 0.05 * (i % 20) for i in range(20)}
    words = lesson_lambdas.setting_words(many)
    assert len(words) <= 80 and words.endswith("...") and words.startswith("lambdas 0 0.05 0.1")
    ClassBoard().submit("lambdas", 70.0, words, "s1", details={"lambdas": many})  # accepted whole
    assert lesson_lambdas.setting_words({"a": 0.3, "b": 0.45}) == "lambdas 0.3 0.45"


def test_the_board_keeps_per_task_lambdas_checked():
    board = ClassBoard()
    entry = board.submit("lambdas", 70.0, "lambdas task0 0.1", "s1", details={"lambdas": {"task0": 0.1, "t<b>": 1}})
    assert entry.details == {"lambdas": {"task0": 0.1, "tb": 1.0}}
    for bad in ({"task0": 1.5}, {"task0": "x"}, {"task0": True}, {}, {f"t{i}": 0.1 for i in range(65)}, [0.1]):
        with pytest.raises(BoardError, match="'lambdas' maps"):
            board.submit("lambdas", 70.0, "x", "s2", details={"lambdas": bad})


def test_the_leaderboard_ranks_per_task_lambdas_by_their_merges_average_and_the_links_open_them():
    board, room = ClassBoard(), ChallengeRoom()
    started = room.start("best_lambdas", {}, TASKS, 10, now=10.0)
    assert started["start"] == {"step": "add", "experts": TASKS, "lambdas": dict.fromkeys(TASKS, 0.3)}
    assert challenge.START_LAMBDA == lesson.DEFAULT_LAMBDA

    def lambdas(who, values, average, at=20.0, experts=TASKS):
        board.submit("lambdas", average, "lambdas", who, nickname=who, now=at,
                     details={"experts": experts, "lambdas": dict(zip(experts, values, strict=True))})

    lambdas("ann", (0.2, 0.5, 0.4), 80.0)
    lambdas("ann", (0.3, 0.5, 0.4), 84.0, at=25.0)  # her better try: one row per student, her best
    lambdas("bo", (0.6, 0.1, 0.3), 82.0)
    board.submit("lambda", 81.0, "lambda 0.3", "cy", nickname="cy", now=21.0,
                 details={"experts": TASKS, "lambda": 0.3})  # one lambda for all: a per-task setting too
    lambdas("di", (0.9, 0.9), 95.0, experts=["task0", "task1"])  # fewer experts than the challenge
    board.submit("forget", 99.0, "x minus 1", "ed", forgotten=1.0, controls=99.0, now=22.0)  # not this challenge
    shown = room.state([asdict(e) for e in board.entries()], now=30.0, link=challenge_page.link)
    rows = shown["leaderboard"]
    assert [(r["nickname"], r["rank"]) for r in rows] == [("ann", 1), ("bo", 2), ("cy", 3), ("di", None)]
    assert rows[-1]["why"] == "merged 2 experts, the challenge uses 3"
    start = _opened(shown["challenge"]["start"]["link"])
    assert (start.step, start.lambdas, start.problems) == ("add", dict.fromkeys(TASKS, 0.3), [])
    assert _opened(rows[0]["link"]).lambdas == {"task0": 0.3, "task1": 0.5, "task2": 0.4}
    assert _opened(rows[2]["link"]).lam == 0.3
    assert room.end([asdict(e) for e in board.entries()], now=40.0)
    ended = room.state([asdict(e) for e in board.entries()], now=41.0, link=challenge_page.link)
    assert ended["winner"]["nickname"] == "ann" and "lambdas=task0:0.3,task1:0.5,task2:0.4" in ended["winner"]["link"]


@pytest.mark.parametrize("text", ["task0:2", "task9:0.3", "task0", "task0:x,task1:0.2", "task0:nan"])
def test_a_link_with_wrong_lambdas_opens_without_them_and_one_message(text):
    link = lesson.read_link({"step": "2", "lambdas": text}, TASKS)
    assert link.lambdas == {} and len(link.problems) == 1 and "lambdas" in link.problems[0]


def test_a_students_per_task_entry_wins_the_challenge(config, student, monkeypatch):
    monkeypatch.setenv(teacher.CODE_ENV, "owl-42")
    config.shared.board.clear()
    config.shared.challenge.clear()
    lesson.meet(student, config, None)
    challenge_page.start(config, "owl-42", "best_lambdas", {}, 5)
    with pytest.raises(gr.Error, match="Nothing to add yet"):
        lesson.add_to_board(student, "lambdas", "Ann")
    lesson_lambdas.add_per_task(student, config, {"task0": 0.2, "task1": 0.45, "task2": 0.3})
    assert "Added to the class board as Ann" in lesson.add_to_board(student, "lambdas", "Ann")
    winner = challenge_page.end(config, "owl-42")["winner"]
    assert winner["nickname"] == "Ann" and winner["score"] == round(student.findings["lambdas"]["average"], 2)
    assert _opened(winner["link"]).lambdas == {"task0": 0.2, "task1": 0.45, "task2": 0.3}


@pytest.mark.slow
def test_the_lesson_page_adds_per_task_lambdas_submits_them_and_a_link_opens_them(monkeypatch):
    """Through gradio_client on the pocket zoo (the page knows its tasks): one slider per task."""
    monkeypatch.setenv(teacher.CODE_ENV, "owl-42")
    config = AppConfig(samples=16)
    tasks = challenge_page.class_tasks(config)
    with launched(config) as (demo, client):
        values = [0.2 + 0.05 * i for i in range(len(tasks))]
        _, note = client.predict(*values, api_name="/lesson_add_lambdas")
        assert note.startswith("Average with your lambdas")
        client.predict(code="owl-42", preset="best_lambdas", minutes=5, api_name="/start_challenge")
        assert "as Bo" in client.predict(name="Bo", api_name="/submit_to_board_lambdas")
        ended = client.predict(code="owl-42", api_name="/end_challenge")
        opened = _opened(ended["winner"]["link"], tasks)
        assert opened.lambdas == pytest.approx(dict(zip(tasks, values, strict=True)))
        page = next(fn for fn in demo.fns.values() if fn.name == "open_link")  # the page's load event
        request = gr.Request(query_params={"step": "2", "lambdas": ended["winner"]["link"].split("lambdas=")[1]})
        shown = page.fn(request)
        assert shown[-len(tasks):] == pytest.approx(tuple(values)) and shown[-len(tasks) - 1].open


def test_the_link_to_a_step_carries_the_per_task_lambdas_the_student_set():
    pocket = challenge_page.class_tasks(AppConfig())
    sliders = [lesson.DEFAULT_LAMBDA] * len(pocket)
    sliders[0], sliders[5] = 0.55, 0.1
    url = lesson.share_link("https://space.example/?step=1", "add", pocket, list(pocket), 0.4, None, None, sliders)
    assert url == f"https://space.example/?step=2&lambda=0.4&lambdas={pocket[0]}:0.55,{pocket[5]}:0.1"
    opened = _opened(url, pocket)
    assert (opened.step, opened.lam, opened.problems) == ("add", 0.4, [])
    assert {t: opened.lambdas.get(t, lesson.DEFAULT_LAMBDA) for t in pocket} == dict(zip(pocket, sliders, strict=True))
    # every slider at the default: nothing to carry; values the lesson cannot use are left out, never passed on
    assert "lambdas" not in lesson.share_link("", "add", pocket, None, 0.3, None, None, [lesson.DEFAULT_LAMBDA] * 8)
    wrong = {pocket[0]: 2.0, pocket[1]: "0.5", pocket[2]: float("nan"), pocket[3]: True, "<b>x</b>": 0.2,
             pocket[4]: 0.7}
    assert lesson.share_link("", "add", pocket, None, None, None, None, wrong) == f"?step=2&lambdas={pocket[4]}:0.7"
    assert lesson.share_link("", "add", pocket, lambdas=[0.5, 0.5]) == "?step=2"  # not one value per task


def test_the_pages_link_endpoint_names_each_tasks_lambda_and_the_link_opens_them():
    """Through gradio_client on the pocket zoo's page (one slider per task; no step run: the link opens step 1)."""
    config = AppConfig(samples=16)
    tasks = challenge_page.class_tasks(config)
    with launched(config) as (demo, client):
        link = client.predict(lam_value=0.3, **{tasks[1]: 0.65, tasks[2]: 0.3, tasks[7]: 0.05},
                              api_name="/lesson_link")
        query = dict(parse_qsl(link.removeprefix("?")))  # with the other controls' values, as the client sent them
        assert (query["step"], query["lambdas"]) == ("1", f"{tasks[1]}:0.65,{tasks[7]}:0.05")
        page = next(fn for fn in demo.fns.values() if fn.name == "open_link")  # the page's load event
        shown = page.fn(gr.Request(query_params=query))
        expected = [lesson.DEFAULT_LAMBDA] * len(tasks)
        expected[1], expected[7] = 0.65, 0.05
        assert shown[-len(tasks):] == pytest.approx(tuple(expected)) and shown[-len(tasks) - 1].open
