"""One JSON document kept in a file so that it survives a restart of the app (the class board, the challenge), or
kept nowhere when the app has no directory for it (``$MERGE_EXPLORER_CACHE_DIR`` unset).

Written whole under a temporary name and moved into place (``app.files.atomic_path``), so a crash leaves the previous
document, never half of one. A file that cannot be read back (damaged, not JSON) is ignored with one log line and the
app starts empty; a directory that cannot be written keeps the document in memory only, said once in the log.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.files import atomic_path

log = logging.getLogger(__name__)


class SavedJson:
    """A JSON document in ``path`` (None: nowhere); safe from several threads (writes are serialised)."""

    def __init__(self, path: str | Path | None) -> None:
        """``path``: the file (its folder is made on the first write); None keeps nothing."""
        self.path = None if path is None else Path(path)
        self.working = self.path is not None  # False once a write failed: the document lives in memory only
        self._lock = threading.Lock()  # guards the two fields below
        self._writing = False  # a thread is writing the file now
        self._again: Callable[[], Any] | None = None  # a save asked for meanwhile: the writer writes once more

    @property
    def kept(self) -> bool:
        """Whether the document survives a restart (a file, and the last write worked)."""
        return self.path is not None and self.working

    def load(self) -> Any | None:
        """The saved document, or None (no file, or one that cannot be read: logged once)."""
        if self.path is None:
            return None
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except OSError as error:  # the folder cannot be read (nor, most likely, written): said once, here
            log.warning("cannot read %s (%s): it is kept in memory only", self.path, error.strerror or error)
            self.working = False
            return None
        except ValueError as error:
            log.warning("ignored %s (%s): starting without it", self.path, error)
            return None

    def save(self, snapshot: Callable[[], Any]) -> bool:
        """Write the document ``snapshot()`` gives in one step; False when nothing is kept (no path, or the write
        failed: logged once).

        While another thread writes, this one only leaves its ``snapshot`` and returns (True): the writer then writes
        once more, calling the latest snapshot after its own write, so the last state is the one left in the file and
        a burst of saves (a class submitting together) writes the file twice, not once per save."""
        if self.path is None:
            return False
        with self._lock:
            self._again = snapshot
            if self._writing:
                return self.working
            self._writing = True
        kept = True
        try:
            while True:
                with self._lock:
                    snapshot, self._again = self._again, None
                    if snapshot is None:
                        self._writing = False
                        return kept
                kept = self._write(json.dumps(snapshot(), ensure_ascii=False))
        except BaseException:
            with self._lock:  # a snapshot that failed: the next save writes again
                self._writing = False
            raise

    def _write(self, text: str) -> bool:
        """Put ``text`` in the file in one step (only the thread that is writing calls this)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.path) as temporary:
                temporary.write_text(text, encoding="utf-8")
        except OSError as error:
            if self.working:
                log.warning("cannot write %s (%s): it is kept in memory only", self.path, error.strerror or error)
            self.working = False
            return False
        self.working = True
        return True
