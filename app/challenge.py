"""A class challenge: the teacher picks a preset, the class plays from one starting point until the time is up, and a
leaderboard ranks the class board's entries (``app.board``) by the preset's score.

Three presets, one per lesson step a student can vary (``PRESETS``): the best average with one lambda per task (step
2's per-task sliders; a single lambda enters too, as the same lambda for every task), forgetting a chosen task while
every other task stays above X% (step 4), the best WEMoE with at most N adaptation steps (step 5). A preset declares
its parameters once (name, type, range, default, help); the teacher's page builds its fields from them and
:func:`check_params` checks what was typed.

One :class:`ChallengeRoom` per app process, owned by ``app.shared.Shared`` and changed only under its lock: at most one
challenge runs; when it ends (the teacher, or its time limit, noticed at the next read) its leaderboard is frozen and
kept, with the winner's settings, until the next one starts. Nothing here imports gradio or the library: entries are
plain mappings (``Entry`` as a dict), the winner's settings a lesson link's values (``app.lesson.link_for`` makes the
link). With a results directory (``$MERGE_EXPLORER_CACHE_DIR``) the challenge is also kept in a JSON file there
(``app.saved_json``) and restored at start, so a restart of the Space neither ends nor forgets it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.saved_json import SavedJson

MAX_ROWS = 100  # leaderboard rows kept (one per student)
MINUTES = (1.0, 120.0)  # the time limit's range
START_LAMBDA = 0.3  # every task's lambda at a per-task challenge's start: the lesson's (app.lesson.DEFAULT_LAMBDA)


class ChallengeError(ValueError):
    """A challenge the room refuses (its message says what was wrong)."""


@dataclass(frozen=True)
class Param:
    """One parameter of a preset: its name, type, range, default (None: the app's or the zoo's) and help."""

    name: str
    kind: type
    default: Any
    low: float | None = None
    high: float | None = None
    help: str = ""


@dataclass(frozen=True)
class Preset:
    """A kind of challenge: which board entries it ranks, where it starts, its rule and its score."""

    name: str
    title: str  # in plain words, for the teacher's choice
    kinds: tuple[str, ...]  # the board kinds it ranks (app.board.KINDS)
    step: str  # the lesson step it starts from (app.lesson.STEPS)
    params: tuple[Param, ...]
    goal: Callable[[Mapping[str, Any]], str]  # params -> the goal in plain words
    broken: Callable[[Mapping[str, Any], Mapping[str, Any]], str | None]  # (entry, params) -> why it does not count
    score: Callable[[Mapping[str, Any]], float]  # entry -> higher is better
    result: Callable[[Mapping[str, Any]], str]  # entry -> its result in plain words


def _plain(task: str) -> str:
    return task.removeprefix("pocket_").replace("_", " ")


def _forget_broken(entry: Mapping[str, Any], params: Mapping[str, Any]) -> str | None:
    details = entry.get("details") or {}
    if details.get("forget") != params["task"]:
        other = _plain(details["forget"]) if details.get("forget") else "another task"
        return f"forgets {other}, not {_plain(params['task'])}"
    lowest = details.get("lowest")
    if lowest is None:
        return "the other tasks' accuracies are unknown"
    if lowest < params["keep_above"]:
        return f"another task fell to {lowest:.1f}%, below {params['keep_above']:g}%"
    return None


def _steps_broken(entry: Mapping[str, Any], params: Mapping[str, Any]) -> str | None:
    steps = (entry.get("details") or {}).get("steps")
    if steps is None:
        return "its number of adaptation steps is unknown"
    if steps > params["max_steps"]:
        return f"{steps:g} adaptation steps, more than {params['max_steps']}"
    return None


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("best_lambdas", "Best average with one lambda per task", ("lambdas", "lambda"), "add", (),
           lambda p: ("Find the lambdas, one per task, that give the best average accuracy over every task (step 2, "
                      "'One lambda per task')."),
           lambda e, p: None, lambda e: float(e["average"]), lambda e: f"{e['average']:.1f}% average"),
    Preset("forget", "Forget a task, keep the others", ("forget",), "forget",
           (Param("task", str, None, help="the task to forget"),
            Param("keep_above", float, 50.0, 0.0, 100.0, help="every other task must stay above this accuracy (%)")),
           lambda p: (f"Make the model forget {_plain(p['task'])} (its accuracy as low as you can) while every other "
                      f"task stays above {p['keep_above']:g}% (step 4)."),
           _forget_broken, lambda e: 100.0 - float(e["forgotten"] if e.get("forgotten") is not None else 100.0),
           lambda e: (f"{e['forgotten']:.1f}% on the forgotten task, the others {e['controls']:.1f}% on average"
                      if e.get("forgotten") is not None else "-")),
    Preset("best_wemoe", "Best WEMoE in a few adaptation steps", ("wemoe",), "route",
           (Param("max_steps", int, None, 1, 10000, help="the most adaptation steps an entry may use"),),
           lambda p: (f"Get the best average accuracy from WEMoE with at most {p['max_steps']} adaptation steps "
                      "(step 5)."),
           _steps_broken, lambda e: float(e["average"]), lambda e: f"{e['average']:.1f}% average"),
)}


def preset(name: Any) -> Preset:
    """The preset called ``name``; an unknown name raises a :class:`ChallengeError` listing the known ones."""
    if not isinstance(name, str) or name not in PRESETS:
        raise ChallengeError(f"Challenge: one of {', '.join(PRESETS)}, got {name!r}.")
    return PRESETS[name]


def check_params(chosen: Preset, values: Mapping[str, Any], tasks: Sequence[str],
                 defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The preset's parameters from ``values`` (missing or None: ``defaults``, then the declared default; a task: the
    first of ``tasks``), each checked against its type and range; a :class:`ChallengeError` says what was wrong."""
    checked: dict[str, Any] = {}
    for param in chosen.params:
        value = values.get(param.name)
        if value is None or value == "":
            value = (defaults or {}).get(param.name, param.default)
        if param.kind is str:
            if value is None and tasks:
                value = tasks[0]
            if value not in tasks:
                raise ChallengeError(f"{param.help.capitalize()}: one of {', '.join(tasks)}, got {value!r}.")
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ChallengeError(f"{param.help.capitalize()}: a number, got {value!r}.")
            if param.kind is int and float(value) != int(value):
                raise ChallengeError(f"{param.help.capitalize()}: a whole number, got {value!r}.")
            value = param.kind(value)
            if not param.low <= value <= param.high:
                raise ChallengeError(f"{param.help.capitalize()}: from {param.low:g} to {param.high:g}, got {value!r}.")
        checked[param.name] = value
    return checked


def start_settings(chosen: Preset, params: Mapping[str, Any], experts: Sequence[str]) -> dict[str, Any]:
    """The shared starting point as a lesson link's values (``step``, ``experts``; ``forget`` for forgetting;
    ``lambdas``, every task at :data:`START_LAMBDA`, for one lambda per task)."""
    settings: dict[str, Any] = {"step": chosen.step, "experts": list(experts)}
    if "task" in params:
        settings["forget"] = params["task"]
    if "lambdas" in chosen.kinds:
        settings["lambdas"] = dict.fromkeys(experts, START_LAMBDA)
    return settings


def entry_settings(chosen: Preset, entry: Mapping[str, Any]) -> dict[str, Any]:
    """What an entry set, as a lesson link's values (``step``, ``experts``, ``lam``, ``lambdas``, ``forget``,
    ``strength``)."""
    details = entry.get("details") or {}
    settings: dict[str, Any] = {"step": chosen.step, "experts": list(details.get("experts") or [])}
    for key, name in (("lambda", "lam"), ("lambdas", "lambdas"), ("forget", "forget"), ("strength", "strength")):
        if details.get(key) is not None:
            settings[name] = details[key]
    return settings


def rank(chosen: Preset, params: Mapping[str, Any], experts: Sequence[str], entries: Sequence[Mapping[str, Any]]
         ) -> list[dict[str, Any]]:
    """The leaderboard: one row per student (their best entry that counts, else their latest), the ones that count
    first, best first (ties: the earlier entry), then the ones that do not, each with why; at most ``MAX_ROWS``."""
    by_student: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        if entry.get("kind") not in chosen.kinds:
            continue
        why = chosen.broken(entry, params)
        used = (entry.get("details") or {}).get("experts")
        if why is None and used and sorted(used) != sorted(experts):
            why = f"merged {len(used)} experts, the challenge uses {len(experts)}"
        row = {"nickname": entry.get("nickname") or "", "result": chosen.result(entry),
               "score": round(chosen.score(entry), 2), "setting": entry.get("setting", ""), "counts": why is None,
               "why": why or "", "at": entry.get("at", 0.0), "settings": entry_settings(chosen, entry)}
        by_student.setdefault(entry.get("session") or f"entry-{id(entry)}", []).append(row)
    rows = []
    for tries in by_student.values():
        counting = [r for r in tries if r["counts"]]
        rows.append(max(counting, key=lambda r: (r["score"], -r["at"])) if counting else max(tries, key=lambda r:
                                                                                               r["at"]))
    rows.sort(key=lambda r: (not r["counts"], -r["score"] if r["counts"] else 0.0, r["at"]))
    for place, row in enumerate(rows, start=1):
        row["rank"] = place if row["counts"] else None
    return rows[:MAX_ROWS]


def time_left(seconds: float) -> str:
    """Seconds left in plain words ("4 min 05 s left", "time is up")."""
    if seconds <= 0:
        return "time is up"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest:02d} s left" if minutes else f"{rest} s left"


class ChallengeRoom:
    """The class's challenge: at most one running, the last one's frozen result; safe from every session's thread."""

    def __init__(self, saved: SavedJson | None = None) -> None:
        """``saved``: the file the challenge is kept in across restarts (restored here), or None (memory only)."""
        self._current: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self.saved = saved or SavedJson(None)
        kept = self.saved.load()
        if isinstance(kept, dict) and kept.get("preset") in PRESETS and isinstance(kept.get("params"), dict):
            self._current = kept | {"kinds": list(PRESETS[kept["preset"]].kinds)}  # its preset's, as they are now

    def _save(self) -> None:
        def document() -> dict[str, Any] | None:
            with self._lock:
                return None if self._current is None else dict(self._current)

        self.saved.save(document)

    def start(self, name: Any, values: Mapping[str, Any], tasks: Sequence[str], minutes: Any,
              defaults: Mapping[str, Any] | None = None, now: float | None = None) -> dict[str, Any]:
        """Start a challenge of preset ``name`` with the parameters ``values`` over every task of ``tasks`` for
        ``minutes``; refused (a :class:`ChallengeError`) while another runs or with a wrong value. Returns it."""
        chosen = preset(name)
        params = check_params(chosen, values, tasks, defaults)
        if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not (
                MINUTES[0] <= minutes <= MINUTES[1]):
            raise ChallengeError(f"Time limit: from {MINUTES[0]:g} to {MINUTES[1]:g} minutes, got {minutes!r}.")
        now = time.time() if now is None else now
        with self._lock:
            if self._current is not None and self._current["ended_at"] is None and now < self._current["ends_at"]:
                raise ChallengeError("A challenge is running: end it first.")
            self._current = {"preset": chosen.name, "title": chosen.title, "kinds": list(chosen.kinds),
                             "params": params, "goal": chosen.goal(params), "experts": list(tasks),
                             "start": start_settings(chosen, params, tasks), "started_at": now,
                             "ends_at": now + 60.0 * float(minutes), "ended_at": None, "leaderboard": None}
            started = dict(self._current)
        self._save()
        return started

    def end(self, entries: Sequence[Mapping[str, Any]], now: float | None = None) -> bool:
        """End the running challenge now, freezing its leaderboard from ``entries``; False when none ran."""
        now = time.time() if now is None else now
        with self._lock:
            current = self._current
            if current is None or current["ended_at"] is not None:
                return False
            self._finish(current, entries, min(now, current["ends_at"]))
        self._save()
        return True

    def _finish(self, current: dict[str, Any], entries: Sequence[Mapping[str, Any]], at: float) -> None:
        current["ended_at"] = at
        current["leaderboard"] = self._rank(current, entries, at)

    @staticmethod
    def _rank(current: Mapping[str, Any], entries: Sequence[Mapping[str, Any]], until: float) -> list[dict[str, Any]]:
        during = [e for e in entries if current["started_at"] <= e.get("at", 0.0) <= until]
        return rank(PRESETS[current["preset"]], current["params"], current["experts"], during)

    def state(self, entries: Sequence[Mapping[str, Any]], now: float | None = None,
              link: Callable[[Mapping[str, Any]], str] | None = None) -> dict[str, Any]:
        """The challenge as plain data: ``running``, the preset, its parameters and goal, the starting point, the time
        left, the leaderboard (live while it runs, frozen once ended) and the ``winner`` (once ended); a run past its
        time limit ends here. ``link`` turns a lesson link's values into a link (added as ``link``)."""
        now = time.time() if now is None else now
        with self._lock:
            current = self._current
            if current is None:
                return {"running": False, "challenge": None}
            ended_now = current["ended_at"] is None and now >= current["ends_at"]
            if ended_now:
                self._finish(current, entries, current["ends_at"])
            running = current["ended_at"] is None
            board = self._rank(current, entries, now) if running else current["leaderboard"]
            shown = {k: v for k, v in current.items() if k != "leaderboard"}
        if ended_now:
            self._save()
        board = [dict(row) for row in board]
        if link is not None:
            shown["start"] = dict(shown["start"], link=link(shown["start"]))
            for row in board:
                row["link"] = link(row["settings"])
        winner = next((row for row in board if row["counts"]), None) if not running else None
        return {"running": running, "challenge": shown, "seconds_left": round(max(0.0, shown["ends_at"] - now), 1)
                if running else 0.0, "leaderboard": board, "winner": winner}

    def empty(self) -> bool:
        """Whether there is no challenge, running or ended (nothing to rank)."""
        with self._lock:
            return self._current is None

    def clear(self) -> None:
        """Forget the challenge (running or ended)."""
        with self._lock:
            self._current = None
        self._save()


def in_words(state: Mapping[str, Any]) -> str:
    """The challenge for a student, in plain markdown: the goal, the time left and where to start; once it ended, the
    winner and a link that opens the winning settings ("" when there is no challenge)."""
    current = state.get("challenge")
    if not current:
        return ""
    start = current["start"].get("link")
    if state["running"]:
        counting = sum(row["counts"] for row in state["leaderboard"])
        return (f"**Class challenge: {current['title']}.** {current['goal']} "
                f"_{time_left(state['seconds_left'])}; {counting} entr{'y' if counting == 1 else 'ies'} so far._ "
                + (f"[Start here]({start}), then add your result to the class board." if start else
                   "Add your result to the class board to enter."))
    winner = state.get("winner")
    if winner is None:
        return f"**The challenge is over ({current['title']}):** no entry met its rule."
    who = winner["nickname"] or "someone"
    opened = f" [Open the winning settings]({winner['link']})" if winner.get("link") else ""
    return (f"**The challenge is over ({current['title']}).** The winner: {who}, {winner['result']} "
            f"({winner['setting']}).{opened}")
