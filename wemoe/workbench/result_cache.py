"""Deterministic results computed once per process and handed to every later caller that asks with the same inputs.

A merge, an adaptation run (method, parameters, steps, learning rate, images per task, loss, seeds), an accuracy table
and a routing map are pure functions of their inputs: a class of 30 students asking for the default lesson needs it
computed once. :class:`ResultCache` keys each result by its inputs and computes it *single flight*: while one caller
computes a key, others asking for it wait for that computation instead of starting their own. A computation that
fails or is cancelled stores nothing (an entry is never half-written) and wakes the waiters, one of which then computes
it. The cache owns its entries; callers treat what they get as read-only (copy before changing, see
``wemoe.workbench.workbench``). Least recently used entries are dropped beyond ``max_entries``, and beyond
``max_bytes`` of the tensors they hold (:func:`~wemoe.workbench.result_size.result_bytes`; a merged ViT-B/32 tower is
350 MB, a table a few kB): a dropped result is computed again, or read from the store, when asked for again.

With a ``store`` (:class:`~wemoe.workbench.result_store.ResultStore`, a directory) the cache has a disk layer under
it: the caller that claims a key missing in memory first looks for it on disk (others wait meanwhile, as for a
computation), and every finished result is also written there when a codec can write it (tensors as safetensors, the
rest as JSON), so that a restarted process gets it at once. A ``codec`` passed with a key says how its result is
written (default: :class:`~wemoe.workbench.result_codecs.TreeCodec`); the store never breaks a computation.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from wemoe.stopping import check_stop
from wemoe.workbench.result_size import result_bytes

NOTABLE_SECONDS = 1.0  # computations at least this long are logged at INFO (a zoo load, a merge, a run)

log = logging.getLogger(__name__)


@dataclass
class Flight:
    """One computation in progress: its owner reports progress; waiters watch ``done``."""

    done: threading.Event = field(default_factory=threading.Event)
    progress: str = ""
    started: float = field(default_factory=time.perf_counter)


class ResultCache:
    """A process-wide, thread-safe map from a result's inputs to the result, filled single flight."""

    def __init__(self, max_entries: int = 256, store: Any | None = None, max_bytes: float | None = None) -> None:
        """``store``: the disk layer (a :class:`~wemoe.workbench.result_store.ResultStore`), or None (memory only);
        ``max_bytes``: the most the kept results may hold together (None: no bound; the newest is kept even alone
        above it)."""
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.store = store
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._sizes: dict[Hashable, int] = {}
        self.kept_bytes = 0  # what the kept results hold together (result_size.result_bytes of each)
        self.dropped = 0  # entries dropped for the bounds
        self._flights: dict[Hashable, Flight] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.disk_hits = 0  # hits read from the store (counted in ``hits`` too)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(self, key: Hashable) -> Any | None:
        """The stored result for ``key``, or None (counts as a hit when found)."""
        with self._lock:
            if key not in self._entries:
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return self._entries[key]

    def in_flight(self, key: Hashable) -> Flight | None:
        """The computation of ``key`` in progress, if any (looks only: claims nothing)."""
        with self._lock:
            return self._flights.get(key)

    def claim(self, key: Hashable, codec: Any = None) -> tuple[str, Any]:
        """What to do for ``key``: ``("hit", result)``, ``("compute", flight)`` (yours: call :meth:`finish` or
        :meth:`abandon`), or ``("wait", flight)`` (another caller computes it: wait on ``flight.done``, then claim
        again). With a store, a key missing in memory is read from disk (with ``codec``) before it is yours to compute.
        """
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return "hit", self._entries[key]
            if key in self._flights:
                return "wait", self._flights[key]
            flight = self._flights[key] = Flight()
        if self.store is not None:
            flight.progress = "reading it from disk"
            try:
                found = self.store.load(key, codec)
            except BaseException:  # the store never raises; an interrupt must not leave the key claimed forever
                self.abandon(key, flight)
                raise
            if found is not _missing():
                self._keep(key, flight, found)
                log.debug("read %s from disk", _short(key))
                with self._lock:
                    self.hits += 1
                    self.disk_hits += 1
                return "hit", found
            flight.progress = ""
        with self._lock:
            self.misses += 1
        return "compute", flight

    def _keep(self, key: Hashable, flight: Flight, result: Any) -> None:
        """Keep ``result`` in memory under ``key`` (dropping the least recently used beyond the bounds) and wake the
        waiters of ``flight``."""
        size = result_bytes(result) if self.max_bytes is not None else 0
        with self._lock:
            self.kept_bytes += size - self._sizes.get(key, 0)
            self._entries[key], self._sizes[key] = result, size
            self._entries.move_to_end(key)
            while len(self._entries) > 1 and (len(self._entries) > self.max_entries or (
                    self.max_bytes is not None and self.kept_bytes > self.max_bytes)):
                oldest, _ = self._entries.popitem(last=False)
                self.kept_bytes -= self._sizes.pop(oldest)
                self.dropped += 1
            if self._flights.get(key) is flight:
                del self._flights[key]
        flight.done.set()

    def finish(self, key: Hashable, flight: Flight, result: Any, codec: Any = None) -> None:
        """Store the finished ``result`` of a claimed computation (in memory, and with a store on disk through
        ``codec``) and wake its waiters."""
        self._keep(key, flight, result)
        seconds = time.perf_counter() - flight.started
        # routine results (a classification, a cached table cell) at debug level: a class makes hundreds a minute
        log.log(logging.INFO if seconds >= NOTABLE_SECONDS else logging.DEBUG, "computed %s in %.2f s", _short(key),
                seconds)
        if self.store is not None:  # after the waiters woke: they need not wait for the disk
            self.store.save(key, result, codec)

    def abandon(self, key: Hashable, flight: Flight) -> None:
        """Give up a claimed computation (failed or cancelled): nothing is stored; waiters wake and claim again."""
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
        flight.done.set()
        log.debug("abandoned %s after %.2f s", _short(key), time.perf_counter() - flight.started)

    def get_or_compute(self, key: Hashable, compute: Callable[[], Any], wait_seconds: float = 0.5,
                       codec: Any = None) -> tuple[Any, bool]:
        """``(result, from_cache)``: the stored result, or ``compute()``'s (stored unless it raises); ``codec``: how
        the disk layer writes and reads it (see :meth:`claim`)."""
        while True:
            action, value = self.claim(key, codec)
            if action == "hit":
                return value, True
            if action == "wait":
                value.done.wait(wait_seconds)
                check_stop()  # a cancelled caller stops waiting for another's computation
                continue
            try:
                result = compute()
            except BaseException:
                self.abandon(key, value)
                raise
            self.finish(key, value, result, codec)
            return result, False

    def clear(self) -> None:
        """Drop every stored result (computations in flight finish and store theirs)."""
        with self._lock:
            self._entries.clear()
            self._sizes.clear()
            self.kept_bytes = 0


def _missing() -> object:
    """The store's marker for a key it does not hold (imported here, when a store is in use)."""
    from wemoe.workbench.result_store import MISSING

    return MISSING


def _short(key: Hashable, limit: int = 160) -> str:
    """A key's repr cut to ``limit`` characters, for the log."""
    text = repr(key)
    return text if len(text) <= limit else text[: limit - 3] + "..."
