"""The teacher's open page every second: the class now always, the board only when it changed since the page drew it;
and ``class_board`` says how many students are there (#30)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from app import teacher
from app.shared import Shared
from app.teacher import refreshed


@pytest.fixture
def config(monkeypatch):
    monkeypatch.setenv(teacher.CODE_ENV, "owl-42")
    monkeypatch.delenv("MERGE_EXPLORER_CACHE_DIR", raising=False)
    return SimpleNamespace(shared=Shared())


def _skipped(value) -> bool:
    return isinstance(value, dict) and value.get("__type__") == "update" and len(value) == 1


def test_the_board_is_drawn_again_only_when_it_changed(config):
    board = config.shared.board
    status, best, table, drawn = refreshed("owl-42", True, -1, config)  # the first tick draws everything
    assert "0 students" in status and drawn == board.version and table.empty
    status, best, table, again = refreshed("owl-42", True, drawn, config)
    assert "0 students" in status and _skipped(best) and _skipped(table) and _skipped(again)
    board.submit("lambda", 80.0, "lambda 0.3", "s1", nickname="Ann")
    status, best, table, newer = refreshed("owl-42", True, drawn, config)
    assert newer == board.version != drawn and list(table["nickname"]) == ["Ann"] and "Ann" in best
    board.clear()
    *_, table, cleared = refreshed("owl-42", True, newer, config)
    assert table.empty and cleared == board.version != newer  # clearing is a change too


def test_a_closed_page_or_a_wrong_code_gets_nothing(config):
    config.shared.board.submit("lambda", 80.0, "lambda 0.3", "s1")
    for code, is_open in (("owl-42", False), ("guess", True), (None, True)):
        assert all(_skipped(v) for v in refreshed(code, is_open, -1, config))


def test_the_teacher_reads_the_class_with_the_board(config, tmp_path):
    from tests.app_support import launched, tiny_config, write_examples

    app = tiny_config(write_examples(tmp_path / "examples"))
    with launched(app) as (_, client):
        client.predict(api_name="/lesson_here")  # a student's page is open
        board = client.predict(code="owl-42", api_name="/class_board")
        assert board["class"]["students"] == app.shared.class_now()["students"] >= 1 and board["count"] == 0
        with pytest.raises(Exception, match="not the teacher's code"):
            client.predict(code="guess", api_name="/class_board")
