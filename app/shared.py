"""What every session of one app process shares, owned by one object: loaded zoos, the result cache, the memory budget.

Sessions read what is here and never change it: a zoo is loaded once per (choice, test images per task) and every
session that picks it gets the same :class:`~wemoe.workbench.loaded_zoo.LoadedZoo`; merges, adaptation runs, table rows
and routing maps are computed once per process (:class:`~wemoe.workbench.result_cache.ResultCache`, single flight) and
sessions get copies of what they may change. Custom zoos are the session's own (never shared). Heavy work is refused,
with a message, while the process is above its memory budget; idle sessions' merges are dropped by :meth:`Shared.sweep`.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import functools
import math
import os
import statistics
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from app.board import ClassBoard
from app.challenge import ChallengeRoom
from app.saved_json import SavedJson
from wemoe.workbench.result_cache import ResultCache
from wemoe.workbench.result_store import ResultStore, results_dir, store_bound

ProgressFn = Callable[[float, str], None]


def rss_mb() -> float:
    """This process's resident memory in MiB (Linux /proc; 0 where it cannot be read)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)


@functools.cache
def _glibc() -> Any:
    """The C library, loaded once (None where it is not glibc)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


def trim_free_memory() -> bool:
    """Hand the C allocator's free memory back to the system (glibc's ``malloc_trim``); False where there is none.

    After a transient peak (an adaptation step's activations, a batch's scratch) glibc keeps freed memory in its
    arenas, one per thread that allocated: the process's RSS stays near the peak although nothing uses it, and the
    memory budget (:meth:`Shared.check_memory`, read from the RSS) would refuse every heavy call after it."""
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """At most ``arenas`` glibc malloc arenas for the threads created from now on (glibc's default: 8 per core, each
    keeping what its threads freed); False where there is no glibc. Called once at the app's start: a class's 30
    request threads otherwise scatter the freed scratch of their calls over 16 arenas."""
    libc = _glibc()
    return libc is not None and bool(libc.mallopt(M_ARENA_MAX, arenas))


RESULTS_MB_ENV = "MERGE_EXPLORER_RESULTS_MB"  # what results kept in memory may hold (default: a third of the budget)
LIGHT_QUIET_S = 0.25  # long jobs' steps wait this long after the last click's handler (see LightFirst)
PRESENT_EVERY_S = 2.0  # how often a student's open page says it is there (a tick with no computation)
PRESENT_S = 4.5  # a page silent for longer is gone: the teacher's count is right within 5 s of a tab closing


class LightFirst:
    """Light calls before long jobs' next step: a classification takes 0.05 s of the CPU alone, but seconds while
    adaptations and evaluations run beside it on the same two cores. Light calls run inside :meth:`light`; a long job
    calls :meth:`wait` between its steps, which returns once no light call runs and none ended in the last ``quiet``
    seconds (or after ``timeout``, so that a stream of light calls cannot starve it).

    ``quiet``: a handler's 1-10 ms are the smaller part of a click: gradio then sends its answer (a table, an image, a
    figure) on the same cores, and in a class the next clicks follow within milliseconds; a step taken in that gap
    delays all of them.
    """

    def __init__(self, quiet: float = 0.0) -> None:
        self.quiet = quiet
        self._running = 0
        self._last_end = -math.inf
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def light(self) -> Iterator[None]:
        """Mark a light call as running for the duration of the block."""
        with self._changed:
            self._running += 1
        try:
            yield
        finally:
            with self._changed:
                self._running -= 1
                self._last_end = time.monotonic()
                self._changed.notify_all()

    def running(self) -> int:
        """How many light calls run now."""
        with self._changed:
            return self._running

    def wait(self, timeout: float = 2.0) -> float:
        """Block until no light call runs nor ended within ``quiet`` s, at most ``timeout`` s; returns the seconds
        waited."""
        start = time.monotonic()
        deadline = start + timeout
        with self._changed:
            while True:
                now = time.monotonic()
                calm_in = 0.0 if self._running == 0 else math.inf
                calm_in = max(calm_in, self._last_end + self.quiet - now)
                if calm_in <= 0 or now >= deadline:
                    break
                self._changed.wait(min(calm_in, deadline - now))
        return time.monotonic() - start


class StepTimes:
    """Seconds per adaptation step on this machine now, per (merge, images per task, device): the median of the
    latest run's steps (or of the latest single timing), whichever session ran it, so an estimate follows the
    machine's load of the last run, never the one the first student met at start-up. Entries older than ``max_age``
    seconds are forgotten."""

    def __init__(self, window: int = 10, max_age: float = 900.0) -> None:
        self.window, self.max_age = window, max_age
        self._steps: dict[Any, collections.deque] = {}
        self._timing: set[Any] = set()  # keys being timed now (by one caller; the others go on without)
        self._lock = threading.Lock()

    def record(self, key: Any, seconds: float, new_run: bool = True) -> None:
        """One step of ``key`` took ``seconds`` (just now); ``new_run``: it replaces what was known (a timing, or a
        run's first step), else it joins the steps of the same run."""
        with self._lock:
            steps = self._steps.setdefault(key, collections.deque(maxlen=self.window))
            if new_run:
                steps.clear()
            steps.append((time.monotonic(), seconds))

    def estimate(self, key: Any) -> float | None:
        """The median of the recent steps of ``key``, or None when none is recent."""
        with self._lock:
            return self._estimate(key)

    def estimate_or_time(self, key: Any, time_one: Callable[[], float]) -> float | None:
        """The recent estimate of ``key``; without one, ``time_one()`` (recorded), unless another caller is timing
        ``key`` now: then None at once. A class merging together times one step, not thirty, and nobody waits for
        another's timing (a merge holds its session, whose classifications would wait too)."""
        with self._lock:
            known = self._estimate(key)
            if known is not None or key in self._timing:
                return known
            self._timing.add(key)
        try:
            seconds = time_one()
            self.record(key, seconds)
            return seconds
        finally:
            with self._lock:
                self._timing.discard(key)

    def _estimate(self, key: Any) -> float | None:
        """:meth:`estimate` for a caller holding the lock."""
        now = time.monotonic()
        recent = [s for t, s in self._steps.get(key, ()) if now - t <= self.max_age]
        return statistics.median(recent) if recent else None


class WarmProgress:
    """How far the warm-up of the default lesson is (``app.warm``), for every page to show; written by the warm-up's
    thread only."""

    def __init__(self) -> None:
        self.stage: str | None = None  # None: no warm-up (turned off, or not started)
        self.fraction = 0.0
        self.started = 0.0
        self.finished = False
        self.failed = False
        self._lock = threading.Lock()

    def update(self, stage: str, fraction: float) -> None:
        """The warm-up is at ``stage``, ``fraction`` (0-1) of the way."""
        with self._lock:
            if self.stage is None:
                self.started = time.monotonic()
            self.stage, self.fraction = stage, min(max(fraction, 0.0), 1.0)

    def finish(self, failed: bool = False) -> None:
        """The warm-up is over (``failed``: it stopped with an error; sessions compute the lesson themselves)."""
        with self._lock:
            self.finished, self.failed, self.fraction = True, failed, 1.0

    def text(self, now: float | None = None) -> str:
        """What a page says: the stage and the time left, measured from the progress so far ("" when none runs)."""
        with self._lock:
            if self.stage is None or self.finished:
                return ""
            elapsed = (time.monotonic() if now is None else now) - self.started
            left = elapsed * (1 - self.fraction) / self.fraction if self.fraction >= 0.05 else None
        when = f"about {left:.0f} s left" if left is not None else "measuring how long it takes"
        return (f"_The lesson is being prepared for the class ({self.stage}, {self.fraction:.0%}, {when}). You can "
                "start now: steps that need it wait for it and then answer at once._")


def switch_interval() -> float:
    """The GIL switch interval while a classification computes ($MERGE_EXPLORER_SWITCH_INTERVAL, default 0.0002 s)."""
    value = float(os.environ.get("MERGE_EXPLORER_SWITCH_INTERVAL", "0.0002"))
    if not 0 < value <= 1:
        raise ValueError(f"MERGE_EXPLORER_SWITCH_INTERVAL must be in (0, 1] seconds, not {value}.")
    return value


class ClassifyTurn:
    """The turn every classification of new images on this process's shared zoos takes (one at a time), with a short
    GIL switch interval while it computes.

    A classification's forward passes are hundreds of small torch calls, each letting go of the GIL and then waiting
    for it; with Python's default interval (5 ms) the threads serving a class's page kept it that long every time, so
    a 0.02 s classification took 0.6-2.7 s among 30 students on 2 cores (0.06 s with 0.2 ms). While nothing computes
    the default stays: a class served from the cache ran slower with the short interval (more handovers between the
    threads serving the page). One object for the whole process, so the interval is saved and restored in turn.
    """

    def __init__(self, interval: float | None = None) -> None:
        self.interval = switch_interval() if interval is None else interval
        self._lock = threading.Lock()
        self._saved = 0.0  # the interval before the turn, kept while it is held

    def __enter__(self) -> ClassifyTurn:
        self._lock.acquire()
        self._saved = sys.getswitchinterval()
        sys.setswitchinterval(self.interval)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.setswitchinterval(self._saved)
        self._lock.release()


class MemoryBudgetExceeded(RuntimeError):
    """The process is above its memory budget: new heavy work is refused until memory is freed."""


def results_bytes(memory_budget_mb: float) -> float:
    """Bytes the results kept in memory may hold together: ``$MERGE_EXPLORER_RESULTS_MB`` MiB, else a third of the
    memory budget (a class's lab merges at many lambdas would otherwise keep a whole tower each, 350 MB on ViT-B/32)."""
    given = os.environ.get(RESULTS_MB_ENV, "").strip()
    return float(given) * 2**20 if given else memory_budget_mb * 2**20 / 3


class Shared:
    """Loaded zoos and deterministic results for every session of one process, each owned here behind a lock."""

    def __init__(self, memory_budget_mb: float | None = None, zoo_slots: int = 4, results: int = 512,
                 cache_dir: str | None = None) -> None:
        """``memory_budget_mb``: refuse heavy work above this RSS (default: $MERGE_EXPLORER_MEMORY_MB or 8192);
        ``cache_dir``: where results, the class board and the challenge survive a restart (default:
        $MERGE_EXPLORER_CACHE_DIR; unset: memory only; ``wemoe.workbench.result_store``)."""
        if memory_budget_mb is None:
            memory_budget_mb = float(os.environ.get("MERGE_EXPLORER_MEMORY_MB", "8192"))
        self.memory_budget_mb = memory_budget_mb
        self.zoos = ResultCache(max_entries=zoo_slots)
        kept = Path(cache_dir) if cache_dir is not None else results_dir()
        store = None if kept is None else ResultStore(kept / "results", **store_bound())
        self.results = ResultCache(max_entries=results, store=store, max_bytes=results_bytes(memory_budget_mb))
        self.light_first = LightFirst(quiet=LIGHT_QUIET_S)
        self.classify_turn = ClassifyTurn()
        self.step_times = StepTimes()  # seconds per adaptation step now, for estimates (app.jobs.step_key)
        self.warm = WarmProgress()  # the warm-up of the default lesson (app.warm), shown on every page
        # what the class found (app.board), shown to the teacher (app.teacher); the class's challenge (app.challenge)
        self.board = ClassBoard(saved=SavedJson(kept and kept / "class-board.json"))
        self.challenge = ChallengeRoom(saved=SavedJson(kept and kept / "class-challenge.json"))
        # adaptation steps computed at once (app.jobs.locked_steps): one per CPU, whoever's run they are
        self.compute_slots = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))
        self._sessions: weakref.WeakSet = weakref.WeakSet()
        self._lock = threading.Lock()

    def workbench(
        self, choice: str, samples: int | None, load: Callable[[ProgressFn], tuple[Any, list | None]],
        progress: ProgressFn,
    ) -> tuple[Any, bool]:
        """A new workbench on the shared zoo ``choice`` (loaded on first use); ``(bench, zoo_was_loaded_before)``."""
        from wemoe.workbench.loaded_zoo import LoadedZoo  # here, not at import: building the page loads no model code
        from wemoe.workbench.workbench import Workbench

        def build() -> LoadedZoo:
            zoo, tasks = load(lambda f, m: progress(0.6 * f, m))
            loaded = LoadedZoo(zoo, tasks, samples=samples, seed=0, classify_turn=self.classify_turn)
            loaded.data(progress=lambda f, m: progress(0.6 + 0.3 * f, m))
            progress(0.95, "building zero-shot heads")
            loaded.heads()
            return loaded

        loaded, reused = self.zoos.get_or_compute((choice, samples), build)
        return Workbench.sharing(loaded, self.results, (choice, samples)), reused

    def check_memory(self) -> None:
        """Raise MemoryBudgetExceeded when the process uses more than its budget."""
        used = rss_mb()
        if used > self.memory_budget_mb and trim_free_memory():
            used = rss_mb()  # what is in use, not what the allocator kept after a peak
        if used > self.memory_budget_mb:
            raise MemoryBudgetExceeded(
                f"The server is using {used / 1024:.1f} GB, above its {self.memory_budget_mb / 1024:.1f} GB budget, so "
                "new heavy work is paused. Try again in a minute, or use fewer images per task."
            )

    def here(self, session: Any, now: float | None = None) -> None:
        """A student's open page says it is still there (every :data:`PRESENT_EVERY_S`): counted by
        :meth:`class_now` until it stops for :data:`PRESENT_S` (a closed tab, within seconds; gradio's own notice of a
        closed tab took about 30 s)."""
        session.seen_at = time.monotonic() if now is None else now
        self.track(session)

    def track(self, session: Any) -> None:
        """Remember a session (weakly) so that :meth:`sweep` can drop its heavy state when it idles."""
        with self._lock:
            self._sessions.add(session)

    def close(self, session_hash: str | None) -> int:
        """Close every tracked session of the browser session ``session_hash`` (its tab was closed); how many."""
        with self._lock:
            closing = [s for s in self._sessions if session_hash is not None and s.session_hash == session_hash]
        for session in closing:
            session.seen_at = None  # out of the teacher's count at once
            session.close()
        return len(closing)

    def sessions(self) -> int:
        """How many sessions are tracked (alive)."""
        with self._lock:
            return len(self._sessions)

    def class_now(self, now: float | None = None) -> dict[str, Any]:
        """The class as a teacher sees it: the students whose page is open now (it said so within
        :data:`PRESENT_S`, :meth:`here`), and how many are at each lesson step."""
        now = time.monotonic() if now is None else now
        with self._lock:
            live = [s for s in self._sessions if now - (getattr(s, "seen_at", None) or -PRESENT_S - 1) <= PRESENT_S]
        steps: dict[str, int] = {}
        for session in live:
            step = getattr(session, "lesson_step", None) or "not started"
            steps[step] = steps.get(step, 0) + 1
        return {"students": len(live), "steps": steps, "memory_mb": round(rss_mb()),
                "memory_budget_mb": round(self.memory_budget_mb)}

    def sweep(self, idle_seconds: float, now: float | None = None) -> int:
        """Drop the merges of every session idle for more than ``idle_seconds``; returns how many were dropped."""
        now = time.monotonic() if now is None else now
        with self._lock:
            sessions = list(self._sessions)
        return sum(session.drop_if_idle(idle_seconds, now) for session in sessions)

    def start_sweeper(self, idle_seconds: float, every: float = 60.0) -> threading.Thread:
        """A daemon thread calling :meth:`sweep` every ``every`` seconds."""

        def loop() -> None:
            while True:
                time.sleep(every)
                self.sweep(idle_seconds)

        thread = threading.Thread(target=loop, name="idle-session-sweeper", daemon=True)
        thread.start()
        return thread
