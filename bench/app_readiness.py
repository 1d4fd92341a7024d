"""How long a launched app takes to serve the default lesson from its cache: from the process's start until its log
says the warm-up (``app.warm``) finished; and the same for an app restarted on a persistent cache.

The app's warm-up computes the default lesson (load the default zoo, merge, adapt, classify the gallery, evaluate, map
the routing) into the shared cache, and logs ``default lesson warmed in ... s`` when done: from then on the default
lesson is served from the cache. With a persistent cache (``MERGE_EXPLORER_CACHE_DIR``) a second process started on
the same folder should find it there.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

from app_server import free_port, launch_app_args, wait_until_answering

ROOT = Path(__file__).resolve().parent.parent
WARMED = "default lesson warmed"
WARM_FAILED = "warming the default lesson failed"
CACHE_DIR_ENV = "MERGE_EXPLORER_CACHE_DIR"


class WarmWatch:
    """Watches a launched app's log in a daemon thread: ``ready_s`` is the seconds from ``launched_at`` (a
    ``time.perf_counter()``) until the log said the default lesson is warmed; ``failed`` when it said it could not."""

    def __init__(self, log_path: Path, launched_at: float, interval: float = 0.5) -> None:
        self.log_path, self.launched_at, self.interval = log_path, launched_at, interval
        self.ready_s: float | None = None
        self.failed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="warm-watch", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set() and self.ready_s is None and not self.failed:
            self.check()
            self._stop.wait(self.interval)

    def check(self) -> None:
        """Read the log once (from the watcher's thread or a waiting caller: both only ever set, never clear)."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        if WARMED in text and self.ready_s is None:
            self.ready_s = time.perf_counter() - self.launched_at
        elif WARM_FAILED in text:
            self.failed = True

    def start(self) -> WarmWatch:
        """Start watching."""
        self._thread.start()
        return self

    def wait(self, timeout: float) -> float | None:
        """Wait at most ``timeout`` seconds for the warm-up's end; ``ready_s`` (None: failed or not yet)."""
        end = time.perf_counter() + timeout
        self.check()
        while self.ready_s is None and not self.failed and time.perf_counter() < end:
            time.sleep(self.interval)
            self.check()
        return self.ready_s

    def stop(self) -> None:
        """Stop watching."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


def persistent_cache_supported(root: Path = ROOT) -> bool:
    """Whether this checkout's app reads a persistent result cache (``$MERGE_EXPLORER_CACHE_DIR``): the variable is
    named in the app's or the library's code."""
    sources = [root / "app.py", *(root / "app").glob("*.py"), *(root / "wemoe").rglob("*.py")]
    return any(CACHE_DIR_ENV in path.read_text(errors="replace") for path in sources if path.is_file())


def ready_after_start(extra: list[str], env: dict[str, str], threads: int | None, log_path: Path,
                      timeout: float) -> dict[str, float | None]:
    """Start ``python app.py EXTRA...`` on a free port with ``env``, wait until it answers and until its warm-up
    finished (at most ``timeout`` seconds in all), stop it; returns ``answer_s`` and ``ready_s`` from its start (None
    when it did not get there)."""
    port = free_port()
    started = time.perf_counter()
    process = launch_app_args(port, log_path, extra, threads, env)
    watch = WarmWatch(log_path, started).start()
    answer_s = None
    try:
        wait_until_answering(f"http://127.0.0.1:{port}/", timeout, process)
        answer_s = time.perf_counter() - started
        watch.wait(max(1.0, timeout - answer_s))
    except (RuntimeError, TimeoutError):
        pass
    finally:
        watch.stop()
        stop_app(process)
    return {"answer_s": answer_s, "ready_s": watch.ready_s}


def stop_app(process: subprocess.Popen) -> None:
    """Terminate a launched app (kill it when it does not stop within 15 s)."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)
