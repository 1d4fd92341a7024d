"""The board's file in a burst of submissions: saves that come while one is being written leave their state to the
writer, which writes once more with the latest; the file ends with the last state (#30)."""

from __future__ import annotations

import json
import threading

import pytest

from app.board import ClassBoard
from app.saved_json import SavedJson


def test_saves_during_a_write_are_written_once_more_with_the_latest_state(tmp_path):
    saved = SavedJson(tmp_path / "doc.json")
    state = {"n": 0}
    writing, release = threading.Event(), threading.Event()
    calls = []

    def slow_snapshot():
        calls.append("first")
        writing.set()
        release.wait(10)
        return dict(state)

    def snapshot():
        calls.append("latest")
        return dict(state)

    first = threading.Thread(target=saved.save, args=(slow_snapshot,))
    first.start()
    assert writing.wait(10)
    for n in range(1, 6):  # five saves while the first is being written: none waits for it
        state["n"] = n
        assert saved.save(snapshot)
    assert calls == ["first"]
    release.set()
    first.join(10)
    assert calls == ["first", "latest"]  # one more write, not five
    assert json.loads((tmp_path / "doc.json").read_text()) == {"n": 5}
    state["n"] = 6
    assert saved.save(snapshot) and json.loads((tmp_path / "doc.json").read_text()) == {"n": 6}  # alone: at once


def test_a_snapshot_that_fails_does_not_stop_the_next_save(tmp_path):
    saved = SavedJson(tmp_path / "doc.json")

    def broken():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        saved.save(broken)
    assert saved.save(lambda: {"ok": True}) and json.loads((tmp_path / "doc.json").read_text()) == {"ok": True}


def test_a_class_submitting_together_leaves_every_entry_in_the_file(tmp_path):
    board = ClassBoard(saved=SavedJson(tmp_path / "class-board.json"))
    threads = [threading.Thread(target=board.submit, args=("lambda", 50.0 + i, f"lambda 0.{i}", f"s{i}"))
               for i in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(ClassBoard(saved=SavedJson(tmp_path / "class-board.json")).entries()) == 30  # a restart reads all 30
