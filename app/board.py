"""The class board: what the students of one Space found, shared with the teacher (``app.teacher``).

One :class:`ClassBoard` per app process, owned by ``app.shared.Shared`` and changed only under its lock. Entries are
anonymous (an optional nickname of plain text, 24 characters at most), checked (known kinds, numbers in their ranges,
task names of the zoo), bounded in number (the oldest go first, and the board says so) and in rate (a few per session
per minute). Nothing identifying is kept: a session's entries are tied to it only by gradio's random session id,
which is hashed before it is stored. The board lives in memory, and with a results directory
(``$MERGE_EXPLORER_CACHE_DIR``, ``app.saved_json``) also in a JSON file there, restored at start: then a restart
keeps it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from app.saved_json import SavedJson

KINDS = {"lambda": "best single lambda", "lambdas": "one lambda per task", "forget": "forgetting a task",
         "wemoe": "WEMoE after adapting"}
MAX_ENTRIES = 500
PER_MINUTE = 6  # entries one session may add in a minute
NICKNAME_LENGTH = 24
_PLAIN = re.compile(r"[^\w .,'-]", re.UNICODE)


class BoardError(ValueError):
    """An entry the board refuses (its message says what was wrong)."""


@dataclass(frozen=True)
class Entry:
    """One student's finding."""

    kind: str  # a key of KINDS
    nickname: str
    average: float  # average accuracy (percent) of the model the finding is about
    setting: str  # what was set, in plain words ("lambda 0.35", "shapes minus 0.5", "100 steps")
    forgotten: float | None = None  # forget: the forgotten task's accuracy (percent)
    controls: float | None = None  # forget: the other tasks' average accuracy (percent)
    at: float = 0.0  # seconds since the epoch
    session: str = ""  # a hash of gradio's session id: entries of one session, not who it is
    details: dict = field(default_factory=dict)  # the settings as values (app.board.DETAILS), for a challenge's link


def plain_nickname(text: Any) -> str:
    """A nickname as plain text: letters, digits, spaces and a little punctuation, at most 24 characters (markdown and
    HTML characters dropped); "" for none."""
    if text is None:
        return ""
    if not isinstance(text, str):
        raise BoardError(f"Nickname: enter plain text (or nothing), got {type(text).__name__}.")
    return " ".join(_PLAIN.sub("", text).split())[:NICKNAME_LENGTH]


DETAILS = {"lambda": (0.0, 1.0), "strength": (0.0, 2.0), "steps": (1, 100_000), "lowest": (0.0, 100.0)}
MAX_TASKS = 64  # task names an entry may list (experts, per-task lambdas)


def plain_lambdas(lambdas: Any) -> dict[str, float]:
    """Per-task lambdas checked: task name -> a number in ``DETAILS["lambda"]``, at most ``MAX_TASKS`` of them."""
    low, high = DETAILS["lambda"]
    if not isinstance(lambdas, Mapping) or not 0 < len(lambdas) <= MAX_TASKS or not all(
            isinstance(t, str) and not isinstance(v, bool) and isinstance(v, (int, float)) and low <= v <= high
            for t, v in lambdas.items()):
        raise BoardError(f"Details: 'lambdas' maps up to {MAX_TASKS} tasks to a lambda from {low:g} to {high:g}.")
    return {_PLAIN.sub("", t)[:64]: round(float(v), 4) for t, v in lambdas.items()}


def plain_details(details: Any) -> dict:
    """An entry's settings checked: ``experts`` (task names), ``forget`` (a task name), ``lambdas`` (one per task,
    :func:`plain_lambdas`) and the numbers of ``DETAILS`` in their ranges (the lowest other task's accuracy, percent,
    for forgetting); nothing else."""
    if details is None:
        return {}
    if not isinstance(details, Mapping):
        raise BoardError("Details: a mapping of settings.")
    checked: dict[str, Any] = {}
    for key, value in details.items():
        if key == "experts" and isinstance(value, (list, tuple)) and len(value) <= MAX_TASKS and all(
                isinstance(v, str) for v in value):
            checked[key] = [_PLAIN.sub("", v)[:64] for v in value]
        elif key == "lambdas":
            checked[key] = plain_lambdas(value)
        elif key == "forget" and isinstance(value, str):
            checked[key] = _PLAIN.sub("", value)[:64]
        elif key in DETAILS and not isinstance(value, bool) and isinstance(value, (int, float)) and (
                DETAILS[key][0] <= value <= DETAILS[key][1]):
            checked[key] = round(float(value), 4) if key != "steps" else int(value)
        else:
            raise BoardError(f"Details: {key!r} = {value!r} is not a setting the board keeps.")
    return checked


def _percent(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 100.0:
        raise BoardError(f"{field}: a percentage from 0 to 100, got {value!r}.")
    return round(float(value), 2)


class ClassBoard:
    """The findings of a class, newest last, bounded; safe to use from every session's thread."""

    def __init__(self, max_entries: int = MAX_ENTRIES, per_minute: int = PER_MINUTE,
                 saved: SavedJson | None = None) -> None:
        """``saved``: the file the board is kept in across restarts (restored here), or None (memory only)."""
        self.max_entries, self.per_minute = max_entries, per_minute
        self._entries: deque[Entry] = deque()
        self._recent: dict[str, deque[float]] = {}
        self.dropped = 0  # entries dropped because the board was full
        self.version = 0  # changes with every entry and every clear: a page redraws the board only when it moved
        self._lock = threading.Lock()
        self.saved = saved or SavedJson(None)
        self._restore(self.saved.load())

    @property
    def survives_restart(self) -> bool:
        """Whether the board is kept in a file that a restart of the app reads back."""
        return self.saved.kept

    def _document(self) -> dict[str, Any]:
        with self._lock:
            return {"entries": [asdict(e) for e in self._entries], "dropped": self.dropped}

    def _restore(self, document: Any) -> None:
        """The entries of a saved board (ignored, with one log line, when they are not a board's)."""
        if document is None:
            return
        try:
            entries = [Entry(**row) for row in document["entries"]]
            if any(e.kind not in KINDS or not isinstance(e.average, (int, float)) for e in entries):
                raise ValueError("an entry of an unknown kind")
            dropped = int(document.get("dropped", 0))
        except (KeyError, TypeError, ValueError) as error:
            logging.getLogger(__name__).warning("ignored the saved class board (%s): starting empty", error)
            return
        self._entries.extend(entries[-self.max_entries:])
        self.dropped = dropped + max(0, len(entries) - self.max_entries)

    def submit(self, kind: Any, average: Any, setting: Any, session_id: str | None, nickname: Any = None,
               forgotten: Any = None, controls: Any = None, now: float | None = None, details: Any = None) -> Entry:
        """Add a checked entry (a :class:`BoardError` says what was wrong); refuses more than ``per_minute`` entries
        of one session in a minute. ``details``: the settings as values (:func:`plain_details`)."""
        if kind not in KINDS:
            raise BoardError(f"Kind: one of {', '.join(KINDS)}, got {kind!r}.")
        if not isinstance(setting, str) or not setting.strip() or len(setting) > 80:
            raise BoardError("Setting: a short description of what was set (at most 80 characters).")
        entry = Entry(kind=kind, nickname=plain_nickname(nickname), average=_percent(average, "Average"),
                      setting=_PLAIN.sub("", setting)[:80],
                      forgotten=None if forgotten is None else _percent(forgotten, "Forgotten task"),
                      controls=None if controls is None else _percent(controls, "Other tasks"),
                      at=time.time() if now is None else now,
                      session=hashlib.sha256((session_id or "anonymous").encode()).hexdigest()[:12],
                      details=plain_details(details))
        with self._lock:
            recent = self._recent.setdefault(entry.session, deque())
            while recent and entry.at - recent[0] > 60:
                recent.popleft()
            if len(recent) >= self.per_minute:
                raise BoardError(f"At most {self.per_minute} entries a minute from one student: wait a moment.")
            recent.append(entry.at)
            self._entries.append(entry)
            self.version += 1
            while len(self._entries) > self.max_entries:
                self._entries.popleft()
                self.dropped += 1
        self.saved.save(self._document)
        return entry

    def entries(self, kind: str | None = None) -> list[Entry]:
        """The entries (of one kind, or all), oldest first."""
        with self._lock:
            return [e for e in self._entries if kind is None or e.kind == kind]

    def clear(self) -> int:
        """Empty the board; returns how many entries it had."""
        with self._lock:
            count = len(self._entries)
            self._entries.clear()
            self._recent.clear()
            self.dropped = 0
            self.version += 1
        self.saved.save(self._document)
        return count

    def as_json(self) -> dict[str, Any]:
        """The board as plain data: every entry (without its session hash), per kind the best, and what was dropped."""
        entries = self.entries()
        rows = [{k: v for k, v in asdict(e).items() if k != "session"} for e in entries]
        best = {kind: max((r for r in rows if r["kind"] == kind), key=_score, default=None) for kind in KINDS}
        return {"entries": rows, "best": best, "count": len(rows), "dropped": self.dropped,
                "kept_at_most": self.max_entries}

    def csv_text(self) -> str:
        """The board as CSV (one row an entry)."""
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=["kind", "nickname", "average", "setting", "forgotten", "controls",
                                                 "at"], extrasaction="ignore")
        writer.writeheader()
        for row in self.as_json()["entries"]:
            writer.writerow(row)
        return out.getvalue()


def _score(row: Mapping[str, Any]) -> float:
    """What "best" means per kind: the highest average; for forgetting, the controls kept minus the forgotten task."""
    if row["kind"] == "forget":
        return float(row["controls"] or 0.0) - float(row["forgotten"] or 0.0)
    return float(row["average"])


def summary(rows: Sequence[Mapping[str, Any]]) -> str:
    """One line per kind in plain words: how many entries and the best one."""
    lines = []
    for kind, words in KINDS.items():
        mine = [r for r in rows if r["kind"] == kind]
        if mine:
            best = max(mine, key=_score)
            who = best["nickname"] or "someone"
            count = f"{len(mine)} {'entry' if len(mine) == 1 else 'entries'}"
            lines.append(f"- **{words}**: {count}; best: {best['setting']} ({best['average']:.1f}% average, by {who})")
    return "\n".join(lines) or "_No entries yet._"
