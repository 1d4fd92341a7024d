"""With a results directory the class board and the challenge survive a restart of the app (a new Shared on the same
directory), the teacher's page says so, and a damaged file or a directory that cannot be written changes nothing
else."""

from __future__ import annotations

import logging
from dataclasses import asdict
from types import SimpleNamespace

import pytest

from app import teacher
from app.board import ClassBoard
from app.saved_json import SavedJson
from app.shared import Shared

TASKS = ["pocket_digits", "pocket_shapes"]


def _class(shared: Shared) -> None:
    """A little of a lesson: two entries on the board and a challenge that ended with a winner."""
    shared.board.submit("lambda", 81.25, "lambda 0.3", "s1", nickname="Ann", now=1000.0, details={"lambda": 0.3})
    shared.challenge.start("best_lambdas", {}, TASKS, 5, now=995.0)
    shared.board.submit("lambda", 84.5, "lambda 0.4", "s2", now=1001.0, details={"lambda": 0.4})
    shared.challenge.end([asdict(e) for e in shared.board.entries()], now=1002.0)


def test_the_board_and_the_challenge_survive_a_restart_with_the_directory_set(tmp_path, monkeypatch):
    monkeypatch.setenv(teacher.CODE_ENV, "secret")
    before = Shared(cache_dir=str(tmp_path))
    _class(before)
    after = Shared(cache_dir=str(tmp_path))  # the Space restarted
    assert after.board.entries() == before.board.entries()
    entries = [asdict(e) for e in after.board.entries()]
    assert after.challenge.state(entries, now=2000.0) == before.challenge.state(entries, now=2000.0)
    assert after.challenge.state(entries, now=2000.0)["winner"]["nickname"] == ""  # s2's 84.5 won
    assert after.board.survives_restart
    assert "survives a restart" in teacher.view("secret", SimpleNamespace(shared=after))[1]
    assert after.results.store is not None and after.results.store.directory == tmp_path / "results"
    after.board.clear()
    assert Shared(cache_dir=str(tmp_path)).board.entries() == []  # clearing is kept too


def test_without_the_directory_the_board_lives_in_memory_and_says_so(monkeypatch):
    monkeypatch.delenv("MERGE_EXPLORER_CACHE_DIR", raising=False)
    monkeypatch.setenv(teacher.CODE_ENV, "secret")
    shared = Shared()
    _class(shared)
    assert Shared().board.entries() == [] and not shared.board.survives_restart and shared.results.store is None
    assert "a restart of the Space empties it" in teacher.view("secret", SimpleNamespace(shared=shared))[1]


def test_a_damaged_board_file_is_ignored_with_one_log_line(tmp_path, caplog):
    (tmp_path / "class-board.json").write_text('{"entries": [{"kind": "lambda", "nick')
    with caplog.at_level(logging.WARNING):
        shared = Shared(cache_dir=str(tmp_path))
    assert shared.board.entries() == [] and len([r for r in caplog.records if "class-board" in r.getMessage()]) == 1
    shared.board.submit("wemoe", 90.0, "100 steps", "s1")
    assert len(Shared(cache_dir=str(tmp_path)).board.entries()) == 1  # written whole over it


def test_a_foreign_board_file_is_ignored(tmp_path, caplog):
    saved = SavedJson(tmp_path / "board.json")
    saved.save(lambda: {"entries": [{"kind": "unknown", "nickname": "", "average": 1.0, "setting": "x"}]})
    with caplog.at_level(logging.WARNING):
        assert ClassBoard(saved=saved).entries() == []
    assert len(caplog.records) == 1


def test_a_directory_that_cannot_be_written_leaves_the_board_in_memory(tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with caplog.at_level(logging.WARNING):
        shared = Shared(cache_dir=str(blocker / "kept"))
        for i in range(3):
            shared.board.submit("wemoe", 90.0 + i, f"{i} steps", f"s{i}")
    assert len(shared.board.entries()) == 3 and not shared.board.survives_restart
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([m for m in said if "class-board" in m]) == 1  # the board's failed write, once
    assert len([m for m in said if "results directory" in m]) == 1  # the results store's, once


@pytest.mark.parametrize("kept", [True, False])
def test_the_teacher_s_words_follow_the_board(kept):
    words = teacher.kept_words(kept)
    assert ("survives a restart" in words) is kept and ("MERGE_EXPLORER_CACHE_DIR" in words) is not kept
