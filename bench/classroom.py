"""A classroom against one launched app: N simulated students, one ``gradio_client`` session each, started together.

Each student does the lesson the page suggests, top to bottom: load the zoo, merge task arithmetic + WEMoE,
adapt WEMoE with the page's defaults, classify three example images (right after starting the adaptation, so
classification is measured while others adapt or evaluate), fill the accuracy table, show the routing (PCA).

Printed: p50 / p95 / max latency per endpoint, the time from the first click until the last student has an adapted
WEMoE and an accuracy table, the server's RSS (peak; after the first zoo load; after the first finished lesson; after
all lessons; after ``--probes`` more lessons run one by one, which give the memory per extra session; with
``--linger``, 20 s after the clients closed), every error, and, as the last line, one JSON object.
Every student's accuracy table is compared with the first student's (``mismatched_tables``): the defaults must give
every student the same numbers as a single user.

The zoo (``--zoo``) is the launched app's default zoo (``app.py --zoo``: its lesson's, warmed at start): the pocket
zoo, a preset, or a stand-in of the paper's ViT-B/32 zoo (``vit-b-32-standin``; ``vit-b-32-standin-tiny`` for tests:
``bench/standin_zoo.py``, loaded by the app through its hub code, offline). Also printed: ``ready_s`` (the app's start
until its warm-up finished: the default lesson served from the cache), ``restart_ready_s`` (the same for a second app
started on the first one's persistent cache, ``$MERGE_EXPLORER_CACHE_DIR``; null with the reason where the app has
none), and, measured before the app starts (``bench/compute_rate.py``), the machine's dense GEMM rate beside the
rate the zoo's evaluation and classification reach (FLOPs per image x images / seconds).

    python bench/classroom.py --students 30             # launches python app.py on 127.0.0.1 (a free port)
    python bench/classroom.py --zoo vit-b-32-standin --flow lesson --students 30   # the paper's zoo's size
    python bench/classroom.py --students 4 --steps 20 --samples 32
    python bench/classroom.py --url http://127.0.0.1:7860/ --server-pid 1234   # a running app (RSS needs its pid)
    python bench/classroom.py --students 30 --flow lesson --board --probes 0     # and the class board, as the teacher

With ``--board`` (the lesson's flow) each student adds its lambda, forgetting and WEMoE results to the class board
(``submit_to_board*``) as it goes, every student's page sends what an open lesson page sends on its own (its
presence every 2 s, the challenge's note every 5 s), and a teacher opens the teacher's page (``teacher_view``) and then
every ``--teacher-every`` seconds (default: the page's own refresh, 1 s) sends the page's tick (``teacher_refresh``)
and reads what it shows (the student count, the board's rows): printed are the seconds from the last submission until
the teacher's page shows every entry, and from the last student's joining (and, after the class, leaving) until the
teacher's count is right. The board buttons and every tick are sent as the page sends them, one POST on the tab's
connection (``bench/page_posts.py``), not through ``gradio_client``'s queue.

Only talks to 127.0.0.1. Bounded: 8 calls per student, each waited for at most ``--timeout`` seconds (a call over it
counts as hung and as an error, and ends that student's lesson).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_readiness import (  # noqa: E402
    CACHE_DIR_ENV,
    WarmWatch,
    persistent_cache_supported,
    ready_after_start,
    stop_app,
)
from app_server import free_port, launch_app, launch_app_args, wait_until_answering  # noqa: E402,F401
from page_posts import AsyncPagePoster, PagePoster, output_rows  # noqa: E402
from standin_zoo import ZOO_SIZES, ensure_standin  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = ROOT / "assets" / "examples"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
LESSON_METHODS = ["task_arithmetic", "wemoe"]
ADAPT_ENDPOINTS = ("/adapt_after_merge", "/adapt")  # the page's 'Merge (and adapt)' chain, else 'Adapt more'
# The students' clients talk plain http to 127.0.0.1, on the server's own two cores (a real class's browsers do not).
# With TLS verification on, gradio_client's httpx loaded the CA bundle for every request it made, even over http:
# 12x the CPU of the calls themselves (7.2 s of client CPU for 90 classifications, the server 1.2 s), which took the
# cores from the server and made every latency the clients'. Off: 0.6 s (bench/README.md, "the bench's own clients").
CLIENT_OPTIONS = {"verbose": False, "download_files": False, "analytics_enabled": False, "ssl_verify": False}
LONG_ENDPOINTS = {"/adapt_after_merge", "/adapt", "/evaluate", "/routing", "/lesson_meet", "/lesson_add",
                  "/lesson_forget", "/lesson_route", "/lesson_cost"}  # heavy calls others classify during
ENDPOINT_ORDER = ("/load_zoo", "/merge", *ADAPT_ENDPOINTS, "/classify_example", "/evaluate", "/routing")
LINGER_S = 20.0
CHANGED_LAMBDA = 0.5  # what a student of --changed sets on WEMoE before merging
TEACHER_CODE_ENV = "MERGE_EXPLORER_TEACHER_CODE"
BOARD_ENDPOINTS = {"add": "/submit_to_board", "forget": "/submit_to_board_forget", "route": "/submit_to_board_wemoe"}
LEAVE_WAIT_S = 30.0  # how long the teacher watches the count fall after the class closed its tabs
TEACHER_EVERY_S = 1.0  # the teacher's page's refresh (app.teacher.REFRESH_EVERY_S)
# an open lesson page's own ticks (app.lesson_page, app.challenge_page): the student count (the tab's session as its
# input) and the challenge's note (no input), each (seconds between ticks, the data sent)
PAGE_TIMERS: dict[str, tuple[float, list]] = {"lesson_here": (2.0, [None]), "lesson_challenge": (5.0, [])}
CHALLENGE_EVERY_S = 3.0  # the teacher's page's challenge tick (app.challenge_page: teacher_challenge_refresh)
STUDENTS_SHOWN = re.compile(r"\*\*(\d+) students?\*\*")  # the teacher's page's count (app.teacher.class_status)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--students", type=int, default=30, help="simulated students (sessions), started together")
    p.add_argument("--steps", type=int, default=None, help="adaptation steps (default: the app's default)")
    p.add_argument("--examples", type=int, default=3, help="example images each student classifies")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds one call may take before it counts as hung")
    p.add_argument("--samples", type=int, default=0, help="test images per task passed to load_zoo (0: all)")
    p.add_argument("--zoo", default="pocket",
                   help="the class's zoo: pocket, a preset, or a stand-in of the paper's ViT-B/32 zoo "
                        f"({', '.join(ZOO_SIZES)}: random weights in the hub's layout, bench/standin_zoo.py, built "
                        "first when missing); the launched app's default zoo (its lesson's, warmed at start) and "
                        "what the lab's students load")
    p.add_argument("--standin-dir", type=Path, default=None,
                   help="the stand-in's folder (default: $MERGE_EXPLORER_STANDIN_DIR/<size> or ~/.cache)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help=f"the launched app's persistent result cache (${CACHE_DIR_ENV}; default: a new temporary "
                        "folder); a second app started on it afterwards gives restart_ready_s")
    p.add_argument("--ready-timeout", type=float, default=3600.0,
                   help="seconds to wait for the launched app's warm-up (ready_s) and a restarted one's")
    p.add_argument("--deadline", type=float, default=None,
                   help="end the class this many seconds after it started, lessons still running counted as hung "
                        "(their calls so far kept): figures from a class on a zoo too slow to finish")
    p.add_argument("--no-restart", action="store_true", help="do not restart the app to measure restart_ready_s")
    p.add_argument("--no-rates", action="store_true",
                   help="do not measure the GEMM rate and the zoo's evaluation and classification rates")
    p.add_argument("--url", default=None, help="use this running app (on 127.0.0.1) instead of launching app.py")
    p.add_argument("--server-pid", type=int, default=None, help="with --url: the app's pid, to sample its RSS")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the launched app (default: unset)")
    p.add_argument("--startup-timeout", type=float, default=180.0, help="seconds to wait for the app to answer")
    p.add_argument("--probes", type=int, default=3,
                   help="after the class, this many more students, one after another, to measure memory per session")
    p.add_argument("--app-log", type=Path, default=None,
                   help="keep the launched app's log here (it says when each shared result was computed, and in how "
                        "long)")
    p.add_argument("--after-warm-up", action="store_true",
                   help="start the class once the launched app has warmed the default lesson (a Space started before "
                        "the class arrives); default: at once, while it warms (the worst case)")
    p.add_argument("--flow", choices=("lab", "lesson"), default="lab",
                   help="what students follow: the lab's panels (load, merge and adapt, classify, evaluate, routing) "
                        "or the lesson's steps (meet, add up, interference, forget, route per image while "
                        "classifying, cost)")
    p.add_argument("--changed", type=int, default=0,
                   help=f"this many of the students (the last ones) merge WEMoE with lambda {CHANGED_LAMBDA} "
                        "instead of the default: their merge, adaptation and table are their own computation, queued "
                        "with the rest")
    p.add_argument("--calls", type=Path, default=None,
                   help="write every call here, one JSON object a line (student, endpoint, start and end seconds "
                        "after the first click, ok, the student's session id): to see which calls were slow, and when")
    p.add_argument("--linger", action="store_true", help=f"also report RSS {LINGER_S:.0f} s after the clients closed")
    p.add_argument("--board", action="store_true",
                   help="students add their lesson results to the class board; a teacher watches it (--flow lesson)")
    p.add_argument("--teacher-code", default=None,
                   help=f"with --board: the teacher's code (default: ${TEACHER_CODE_ENV}, else one made up for the "
                        "launched app)")
    p.add_argument("--teacher-every", type=float, default=TEACHER_EVERY_S,
                   help="with --board: seconds between the teacher's reads (default: the teacher's page's refresh)")
    args = p.parse_args(argv)
    if args.students < 1 or args.examples < 0 or args.probes < 0 or args.timeout <= 0:
        p.error("--students must be >= 1, --examples and --probes >= 0, and --timeout > 0")
    if not 0 <= args.changed < args.students:
        p.error("--changed must be >= 0 and below --students (student 0 keeps the defaults: the reference table)")
    if args.url is not None and urllib.parse.urlparse(args.url).hostname not in LOCAL_HOSTS:
        p.error("--url must point at this machine (127.0.0.1)")
    if args.board and args.flow != "lesson":
        p.error("--board needs --flow lesson (the lesson's steps have the board buttons)")
    if args.board and args.teacher_code is None:
        args.teacher_code = os.environ.get(TEACHER_CODE_ENV) or (None if args.url else f"bench-{os.getpid()}")
    if args.board and not args.teacher_code:
        p.error(f"--board with --url needs --teacher-code (or ${TEACHER_CODE_ENV})")
    return args


# ---------------------------------------------------------------------------------------------------------------
# The server: launch, wait, RSS


def wait_for_warm_up(log_path: Path, timeout: float) -> float:
    """Seconds until the launched app's log says the default lesson is warmed (``app.warm``)."""
    watch = WarmWatch(log_path, time.perf_counter(), interval=0.2)
    ready = watch.wait(timeout)
    if watch.failed:
        raise RuntimeError("the app could not warm the default lesson (see its log)")
    if ready is None:
        raise TimeoutError(f"the app did not warm the default lesson within {timeout:.0f} s")
    return ready


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (None when unknown); of this process for pid None."""
    if pid is None:
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def read_status_kb(pid: int, key: str) -> int | None:
    """A ``/proc/<pid>/status`` field in kB (``VmRSS``, ``VmHWM``), or None when the process or field is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds in a daemon thread; keeps the peak and the latest value."""

    def __init__(self, pid: int | None, interval: float = 0.2) -> None:
        self.pid, self.interval = pid, interval
        self.peak_kb = 0
        self.peak_at = 0.0  # time.perf_counter() of the highest sample
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.now_mb()
            self._stop.wait(self.interval)

    def start(self) -> RssSampler:
        """Start sampling (a no-op without a pid)."""
        if self.pid is not None:
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def now_mb(self) -> float | None:
        """The RSS now, in MB (also counted towards the peak); None without a pid or once the process is gone."""
        if self.pid is None:
            return None
        kb = read_status_kb(self.pid, "VmRSS")
        if kb is None:
            return None
        if kb > self.peak_kb:
            self.peak_kb, self.peak_at = kb, time.perf_counter()
        self.samples += 1
        return kb / 1024

    def peak_mb(self, own_process: bool) -> float | None:
        """The peak RSS in MB: sampled, and for a process this script launched also the kernel's mark (VmHWM)."""
        if self.pid is None:
            return None
        hwm = read_status_kb(self.pid, "VmHWM") if own_process else None
        return max(self.peak_kb, hwm or 0) / 1024


# ---------------------------------------------------------------------------------------------------------------
# Calls by parameter name


@dataclass
class Endpoints:
    """The app's named endpoints (``view_api``): parameter names, and which of them have no default."""

    params: dict[str, list[str]]
    required: dict[str, set[str]]
    defaults: dict[str, dict[str, Any]]

    @classmethod
    def read(cls, client) -> Endpoints:
        """Read them from a connected client."""
        named = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
        params = {name: [p["parameter_name"] for p in info["parameters"]] for name, info in named.items()}
        required = {name: {p["parameter_name"] for p in info["parameters"] if not p.get("parameter_has_default")}
                    for name, info in named.items()}
        defaults = {name: {p["parameter_name"]: p.get("parameter_default") for p in info["parameters"]
                           if p.get("parameter_has_default")} for name, info in named.items()}
        return cls(params, required, defaults)

    def first(self, names: tuple[str, ...]) -> str:
        """The first of ``names`` the app has."""
        for name in names:
            if name in self.params:
                return name
        raise RuntimeError(f"the app has none of the endpoints {', '.join(names)}")

    def kwargs(self, endpoint: str, wanted: dict[str, Any]) -> dict[str, Any]:
        """The values of ``wanted`` the endpoint takes (others dropped), None for a parameter it requires that the
        lesson does not know (e.g. a new one); its defaults fill in the rest."""
        if endpoint not in self.params:
            raise RuntimeError(f"the app has no endpoint {endpoint}")
        known = {k: v for k, v in wanted.items() if k in self.params[endpoint]}
        return known | {k: None for k in self.required[endpoint] if k not in known}


# ---------------------------------------------------------------------------------------------------------------
# One student


class CallFailed(Exception):
    """A call that raised or hung; its message names the endpoint."""

    def __init__(self, endpoint: str, error: BaseException) -> None:
        text = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
        super().__init__(f"{endpoint}: {type(error).__name__}: {text}")


@dataclass
class Call:
    """One timed call: the endpoint, when it started and ended (seconds after the first click), and how it went."""

    endpoint: str
    start: float
    end: float
    ok: bool
    during_heavy: bool = False  # a long call (adapt, evaluate, routing; the student's own too) ran at its start

    @property
    def seconds(self) -> float:
        """How long the call took."""
        return self.end - self.start


@dataclass
class Student:
    """What one student's lesson left: timed calls, errors, and what the page showed."""

    index: int
    changed: bool = False  # merged WEMoE with lambda CHANGED_LAMBDA (--changed), not the defaults
    calls: list[Call] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    hung: int = 0
    adapted_at: float | None = None  # seconds after the first click
    table_at: float | None = None
    lesson_done_at: float | None = None
    status: str | None = None  # the adaptation's last status line
    waiting: dict[str, float] = field(default_factory=dict)  # calls in flight: endpoint -> when it started
    table: Any = None  # (headers, rows) of the accuracy table
    tab: str | None = None  # its client's session id (the server's logs name a call by it)


class Classroom:
    """The shared clock, the heavy calls in flight, and the RSS snapshots taken when students reach milestones."""

    def __init__(self, args: argparse.Namespace, url: str, endpoints: Endpoints, sampler: RssSampler) -> None:
        self.args, self.url, self.endpoints, self.sampler = args, url, endpoints, sampler
        self.t0 = 0.0
        self.barrier = threading.Barrier(args.students, action=self._first_click, timeout=args.startup_timeout)
        self.lock = threading.Lock()
        self.heavy_in_flight = 0
        self.rss_after_first_load: float | None = None
        self.rss_after_first_lesson: float | None = None
        self.clients: list[Any] = []
        self.started: dict[int, Student] = {}  # every student whose lesson began, by index
        self.submitted: list[float] = []  # --board: when each submission came back (seconds after the first click)
        self.met: list[float] = []  # when each student's first step (its zoo loaded: counted by the teacher) came back
        self.pages: dict[int, PagePoster] = {}  # each student's tab's connection for its instant events
        self.clicked = threading.Event()  # the class started (the clock runs from then)

    def _first_click(self) -> None:
        self.t0 = time.perf_counter()
        self.clicked.set()

    def clock(self) -> float:
        """Seconds since the first click (the barrier's release)."""
        return time.perf_counter() - self.t0

    def call(self, student: Student, client, endpoint: str, wanted: dict[str, Any],
             submitted: threading.Event | None = None) -> Any:
        """Submit ``endpoint`` with the ``wanted`` values it takes (then set ``submitted``); wait at most
        ``--timeout``; time it.

        Returns the final output (for a generator, its last update). Raises on an error or a hung call (recorded).
        """
        from concurrent.futures import TimeoutError as FutureTimeout

        long = endpoint in LONG_ENDPOINTS
        with self.lock:
            during = self.heavy_in_flight > 0
            self.heavy_in_flight += long
        start = self.clock()
        student.waiting[endpoint] = start
        ok = False
        try:
            job = client.submit(api_name=endpoint, **self.endpoints.kwargs(endpoint, wanted))
            if submitted is not None:
                submitted.set()
            try:
                result = job.result(timeout=self.args.timeout)
            except FutureTimeout:
                job.cancel()
                student.hung += 1
                raise TimeoutError(f"no answer within {self.args.timeout:.0f} s (hung)") from None
            ok = True
            return result
        except Exception as error:
            raise CallFailed(endpoint, error) from error
        finally:
            with self.lock:
                self.heavy_in_flight -= long
            student.waiting.pop(endpoint, None)
            student.calls.append(Call(endpoint, start, self.clock(), ok, during_heavy=during))

    def instant(self, student: Student, endpoint: str, data: list) -> list:
        """An instant event of the student's page (no queue: a board button), sent as the page sends it (one POST on
        the tab's connection, :mod:`page_posts`); timed and recorded as :meth:`call` does. Raises on an error."""
        with self.lock:
            page = self.pages.setdefault(student.index, PagePoster(self.url, self.args.timeout))
            during = self.heavy_in_flight > 0
        start = self.clock()
        ok = False
        try:
            outputs = page.post(endpoint, data, student.tab)
            ok = True
            return outputs
        except Exception as error:
            raise CallFailed(endpoint, error) from error
        finally:
            student.calls.append(Call(endpoint, start, self.clock(), ok, during_heavy=during))

    def lesson(self, index: int, together: bool = True) -> Student:
        """One student's lesson (``together``: started with the others by the barrier, else at once); errors end it
        early and are recorded, never raised."""
        from gradio_client import Client

        student = Student(index, changed=together and index >= self.args.students - self.args.changed)
        with self.lock:
            self.started[index] = student  # its calls so far count even if the class ends before it does
        step = "connecting"
        try:
            try:
                client = Client(self.url, **CLIENT_OPTIONS)
            except Exception:
                if together:
                    self.barrier.abort()
                raise
            with self.lock:
                self.clients.append(client)
            student.tab = client.session_hash
            step = "waiting for the others"
            if together:
                self.barrier.wait()
            step = "the lesson"
            (self._run_lesson_steps if self.args.flow == "lesson" else self._run_lesson)(student, client)
            student.lesson_done_at = self.clock()
            with self.lock:
                if together and self.rss_after_first_lesson is None:
                    self.rss_after_first_lesson = self.sampler.now_mb()
        except Exception as error:  # noqa: BLE001  (every failure is a finding: recorded, the others go on)
            if isinstance(error, CallFailed):
                student.errors.append(f"student {index} {error}")
            else:
                message = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
                student.errors.append(f"student {index} ({step}): {type(error).__name__}: {message}")
        return student

    def _run_lesson(self, student: Student, client) -> None:
        args, endpoints = self.args, self.endpoints
        zoo = getattr(args, "zoo_choice", args.zoo)
        loaded = self.call(student, client, "/load_zoo", {"zoo": zoo, "samples": args.samples})
        with self.lock:
            if self.rss_after_first_load is None:
                self.rss_after_first_load = self.sampler.now_mb()
        examples = pick_examples(loaded, student.index, args.examples)
        settings = {"wemoe__lambda": CHANGED_LAMBDA} if student.changed else {}
        merged = self.call(student, client, "/merge", {"methods": LESSON_METHODS, **settings})
        target = dropdown_value(merged[1]) if isinstance(merged, (list, tuple)) and len(merged) > 1 else None
        adapt = endpoints.first(ADAPT_ENDPOINTS)
        wanted = {"target": target or "wemoe"} | ({"steps": args.steps} if args.steps is not None else {})
        # The adaptation runs while this student classifies: the call is timed in a thread of its own.
        done: dict[str, Any] = {}
        submitted = threading.Event()
        adapting = threading.Thread(target=self._adapt, args=(student, client, adapt, wanted, done, submitted),
                                    daemon=True)
        adapting.start()
        submitted.wait(timeout=args.timeout)  # the adaptation is on its way (or failed) before the first click
        for example in examples:
            self.call(student, client, "/classify_example", {"example": example})
        adapting.join(timeout=args.timeout + 10)
        if "error" in done:
            raise done["error"]
        if adapting.is_alive():
            raise TimeoutError(f"{adapt} did not come back")
        status = done["result"][0] if isinstance(done["result"], (list, tuple)) else done["result"]
        student.status = status if isinstance(status, str) else repr(status)
        if not (isinstance(status, str) and status.startswith("Adapted")):
            raise RuntimeError(f"{adapt} ended without adapting: {student.status[:200]}")
        student.adapted_at = done["end"]
        table = self.call(student, client, "/evaluate", {"oracle": False})
        student.table = table_rows(table[0] if isinstance(table, (list, tuple)) else table)
        student.table_at = self.clock()
        if not student.table or not student.table[1]:
            raise RuntimeError("/evaluate gave no accuracy table")
        self.call(student, client, "/routing", {"feature_map": "pca"})

    def _run_lesson_steps(self, student: Student, client) -> None:
        """The lesson tab's seven steps as a student clicks them (step 6 as gallery clicks while step 5 adapts)."""
        args = self.args
        self.call(student, client, "/lesson_meet", {"chosen": None})
        with self.lock:
            self.met.append(self.clock())
        with self.lock:
            if self.rss_after_first_load is None:
                self.rss_after_first_load = self.sampler.now_mb()
        self.call(student, client, "/lesson_add", {"lam_value": 0.3})
        self._to_board(student, client, "add")
        self.call(student, client, "/lesson_interfere", {"keep_percent": 20})
        self.call(student, client, "/lesson_forget", {"task": None, "amount": 0.5})
        self._to_board(student, client, "forget")
        done: dict[str, Any] = {}
        submitted = threading.Event()
        routing = threading.Thread(target=self._adapt, args=(student, client, "/lesson_route", {}, done, submitted),
                                   daemon=True)
        routing.start()
        submitted.wait(timeout=args.timeout)
        for example in pick_examples(None, student.index, args.examples):
            self.call(student, client, "/classify_example", {"example": example})
        routing.join(timeout=args.timeout + 10)
        if "error" in done:
            raise done["error"]
        status = done["result"][0] if isinstance(done.get("result"), (list, tuple)) else done.get("result")
        student.status = status if isinstance(status, str) else repr(status)
        if not (isinstance(status, str) and status.startswith("Adapted")):
            raise RuntimeError(f"/lesson_route ended without adapting: {student.status[:200]}")
        student.adapted_at = done["end"]
        self._to_board(student, client, "route")
        self.call(student, client, "/lesson_cost", {})
        # the numbers the lesson shows: WEMoE's and task arithmetic's averages (every student must see the same)
        student.table = (("lesson",), tuple(re.findall(r"\d+\.\d+%", status.split("**WEMoE:")[-1])))
        student.table_at = self.clock()

    def _to_board(self, student: Student, client, step: str) -> None:
        """With ``--board``: add this step's result to the class board as the page's button does (its end time kept
        as a submission)."""
        if not self.args.board:
            return
        self.instant(student, BOARD_ENDPOINTS[step], [None, f"student {student.index}"])  # the tab's state, the name
        with self.lock:
            self.submitted.append(self.clock())

    def _adapt(self, student: Student, client, endpoint: str, wanted: dict[str, Any], done: dict[str, Any],
               submitted: threading.Event) -> None:
        try:
            done["result"] = self.call(student, client, endpoint, wanted, submitted)
            done["end"] = self.clock()
        except Exception as error:  # noqa: BLE001  (handed to the lesson's thread)
            done["error"] = error
        finally:
            submitted.set()


STEPS_IN_ALL = re.compile(r"\((\d+) steps in all\)")  # the end of an adaptation's status (app.messages)


def adapted_steps(students: list[Student]) -> int | None:
    """The adaptation steps the first adapted student's last status reports (None when none says)."""
    for student in students:
        found = STEPS_IN_ALL.search(student.status or "")
        if found:
            return int(found.group(1))
    return None


def dropdown_value(update: Any) -> Any:
    """The value of a dropdown update as the client returns it (a dict with ``value``, or the value itself)."""
    return update.get("value") if isinstance(update, dict) else update


def table_rows(table: Any) -> tuple[tuple, tuple] | None:
    """A Dataframe output as (headers, rows), comparable between students; None when it is not a table."""
    if isinstance(table, dict) and "data" in table:
        return tuple(table.get("headers") or ()), tuple(tuple(row) for row in table["data"])
    return None


def gallery_names(outputs: Any) -> list[str]:
    """Example names (``task/file``) among the outputs of /load_zoo: the gallery's captions."""
    for output in outputs if isinstance(outputs, (list, tuple)) else []:
        if not isinstance(output, list):
            continue
        names = []
        for item in output:
            caption = item.get("caption") if isinstance(item, dict) else (item[1] if isinstance(item, (list, tuple))
                                                                          and len(item) > 1 else None)
            if isinstance(caption, str) and "/" in caption:
                names.append(caption)
        if names:
            return names
    return []


def pick_examples(loaded: Any, index: int, count: int) -> list[str]:
    """``count`` example names for student ``index``: each from another task, starting at a task that moves on with
    the student (the gallery's names, else the files under assets/examples)."""
    names = gallery_names(loaded) or sorted(f"{p.parent.name}/{p.name}" for p in EXAMPLES_DIR.glob("*/*.png"))
    if not names or count <= 0:
        return []
    by_task: dict[str, list[str]] = {}
    for name in names:
        by_task.setdefault(name.split("/")[0], []).append(name)
    tasks = sorted(by_task)
    picked = []
    for i in range(count):
        turn = index + i
        task_examples = by_task[tasks[turn % len(tasks)]]
        picked.append(task_examples[(turn // len(tasks)) % len(task_examples)])
    return picked


class TeacherWatch:
    """``--board``: a teacher's page. It opens (``teacher_view``, the Open button), then every ``--teacher-every``
    seconds sends the page's tick (``teacher_refresh``, as the page sends it: :mod:`page_posts`) and reads what the
    page shows from its answer (the student count in its first line, the board's rows when it redrew them), and every
    :data:`CHALLENGE_EVERY_S` its challenge's tick; in a thread of its own. Every read kept as (seconds after the first
    click when the answer came, entries shown, students shown)."""

    def __init__(self, room: Classroom, code: str) -> None:
        from gradio_client import Client

        self.room, self.code = room, code
        self.client = Client(room.url, **CLIENT_OPTIONS)
        self.page = PagePoster(room.url, 30.0)
        self.entries: int | None = None  # the rows the page's board shows (drawn again only when it changed)
        self._challenge_at = 0.0
        self.reads: list[tuple[float, int | None, int | None]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="teacher", daemon=True)

    def _predict(self, endpoint: str, wanted: dict[str, Any]) -> Any:
        return self.client.predict(api_name=endpoint, **self.room.endpoints.kwargs(endpoint, wanted))

    def open(self) -> None:
        """Open the page (the teacher types the code and presses Open): its ticks draw the class from then on."""
        try:
            shown = self._predict("/teacher_view", {"typed": self.code})
            self.entries = output_rows(shown[2]) if isinstance(shown, (list, tuple)) and len(shown) > 2 else None
        except Exception as error:  # noqa: BLE001  (a failed open is a finding)
            self.errors.append(f"teacher: {type(error).__name__}: {str(error).strip()[:200]}")

    def read(self) -> tuple[float, int | None, int | None]:
        """The page's tick (and its challenge's, when due) and what it shows now (recorded)."""
        students = None
        try:
            # the page's inputs: the code typed, then its two states (the session's own: sent as None)
            status, _, table, *_ = self.page.post("/teacher_refresh", [self.code, None, None], self.client.session_hash)
            status = status.get("value") if isinstance(status, dict) else status
            found = STUDENTS_SHOWN.search(status) if isinstance(status, str) else None
            students = int(found.group(1)) if found else None
            rows = output_rows(table)
            self.entries = self.entries if rows is None else rows
            if time.perf_counter() >= self._challenge_at:
                self._challenge_at = time.perf_counter() + CHALLENGE_EVERY_S
                self.page.post("/teacher_challenge_refresh", [], self.client.session_hash)
        except Exception as error:  # noqa: BLE001  (a failed read is a finding, the teacher reads again)
            self.errors.append(f"teacher: {type(error).__name__}: {str(error).strip()[:200]}")
        read = (self.room.clock(), self.entries, students)
        self.reads.append(read)
        return read

    def _run(self) -> None:
        self.open()
        # reads before the first click would carry no time of the class's clock (it starts then)
        self.room.clicked.wait(self.room.args.startup_timeout)
        while not self._stop.is_set():
            start = time.perf_counter()
            self.read()
            self._stop.wait(max(0.0, self.room.args.teacher_every - (time.perf_counter() - start)))

    def start(self) -> TeacherWatch:
        """Start reading."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop reading."""
        self._stop.set()
        self._thread.join(timeout=30)

    def until(self, fallen_by: int, timeout: float) -> None:
        """Read (after :meth:`stop`) until the count fell by ``fallen_by`` or ``timeout`` seconds passed."""
        before = next((s for _, _, s in reversed(self.reads) if s is not None), None)
        end = time.perf_counter() + timeout
        while time.perf_counter() < end and (before is None or (self.read()[2] or 0) > before - fallen_by):
            time.sleep(self.room.args.teacher_every)

    def first(self, after: float, check) -> float | None:
        """When the first read answered at or after ``after`` whose (entries, students) pass ``check``."""
        return next((at for at, entries, students in self.reads if at >= after and check(entries, students)), None)


class PageTicks:
    """What every open lesson page sends on its own (``PAGE_TIMERS``): ``/lesson_here`` every 2 s (the teacher's count
    of students now) and ``/lesson_challenge`` every 5 s (the challenge's note), for each connected student, until
    :meth:`stop` (the tabs close). Sent as a page's timer sends them (one small POST with the tab's session id, no
    queue, on the tab's own kept-alive connection: :mod:`page_posts`), every tab's at once (a page's ticks wait for no
    other page's), from one thread with an event loop: on a class's own machines the ticks cost the server's cores
    nothing else, so this script must not spend them on clients either (httpx spent about 2 ms of CPU a tick)."""

    def __init__(self, room: Classroom, timers: dict[str, tuple[float, list]] | None = None) -> None:
        self.room, self.timers = room, dict(PAGE_TIMERS if timers is None else timers)
        self.sent = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="page-ticks", daemon=True)

    def _run(self) -> None:
        import asyncio

        asyncio.run(self._tick_all())

    async def _tick_all(self) -> None:
        import asyncio

        connections: dict[tuple[str, str], AsyncPagePoster] = {}  # a tab's timers each on a connection of its own
        try:
            await asyncio.gather(*(self._tick(connections, endpoint, every, data)
                                   for endpoint, (every, data) in self.timers.items()))
        finally:
            for connection in connections.values():
                connection.close()

    async def _tick(self, connections: dict, endpoint: str, every: float, data: list) -> None:
        import asyncio

        while not self._stop.is_set():
            start = time.perf_counter()
            with self.room.lock:
                tabs = [c.session_hash for c in self.room.clients]
            posters = [connections.setdefault((tab, endpoint), AsyncPagePoster(self.room.url)) for tab in tabs]
            await asyncio.gather(*(self._post(poster, endpoint, tab, data) for poster, tab in zip(posters, tabs,
                                                                                                  strict=True)))
            await asyncio.sleep(max(0.0, every - (time.perf_counter() - start)))

    async def _post(self, poster: AsyncPagePoster, endpoint: str, tab: str, data: list) -> None:
        try:
            await poster.post(endpoint, data, tab)
            self.sent += 1
        except Exception as error:  # noqa: BLE001  (a lost tick is a finding; the page ticks again)
            self.errors.append(f"tick: {type(error).__name__}: {str(error).strip()[:120]}")

    def start(self) -> PageTicks:
        """Start ticking."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop ticking (every page closed)."""
        self._stop.set()
        self._thread.join(timeout=15)


def board_figures(room: Classroom, watch: TeacherWatch, students: int, closed_at: float | None) -> dict[str, Any]:
    """``--board``'s figures: entries submitted and seen, the seconds from the last submission until the teacher's view
    held them all, from the last student's joining until the count said every student, and from the tabs closing
    until it said none."""
    submitted = len(room.submitted)
    last = max(room.submitted, default=None)
    seen = watch.first(last, lambda e, s: e is not None and e >= submitted) if last is not None else None
    joined = max(room.met[:students]) if len(room.met) >= students else None  # the class's (probes come after)
    # the count is of sessions with a zoo loaded: the app's warm-up (and a probe) count while they last
    counted = watch.first(joined, lambda e, s: s is not None and s >= students) if joined is not None else None
    before = next((s for at, _, s in reversed(watch.reads) if at < (closed_at or 0) and s is not None), None)
    # gone: the class's students left the count (a tick late under load may have left it lower just before)
    left = watch.first(closed_at, lambda e, s: s is not None and s <= max(0, before - students)) \
        if closed_at is not None and before is not None else None
    return {"board_submitted": submitted, "board_seen": max((e or 0 for _, e, _ in watch.reads), default=0),
            "board_last_submit_s": _round(last, 2), "board_all_seen_s": _round(seen, 2),
            "board_lag_s": _round(None if seen is None else seen - last, 2),
            "count_join_lag_s": _round(None if counted is None else counted - joined, 2),
            "count_leave_lag_s": _round(None if left is None else left - closed_at, 2),
            "count_max": max((s or 0 for _, _, s in watch.reads), default=0), "count_before_close": before,
            "count_at_end": watch.reads[-1][2] if watch.reads else None,
            "count_after_close": [[_round(at, 1), count] for at, _, count in watch.reads
                                  if closed_at is not None and at >= closed_at][:40], "teacher_reads": len(watch.reads),
            "teacher_every_s": room.args.teacher_every, "teacher_errors": watch.errors[:5]}


# ---------------------------------------------------------------------------------------------------------------
# Figures


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def latency_table(students: list[Student]) -> dict[str, dict[str, Any]]:
    """Per endpoint: calls, failed calls, p50 / p95 / max seconds (of every call, failed ones included)."""
    found: dict[str, list[Call]] = {}
    for student in students:
        for call in student.calls:
            found.setdefault(call.endpoint, []).append(call)
    order = [e for e in ENDPOINT_ORDER if e in found] + sorted(e for e in found if e not in ENDPOINT_ORDER)
    table = {}
    for endpoint in order:
        seconds = [c.seconds for c in found[endpoint]]
        table[endpoint] = {"calls": len(seconds), "failed": sum(not c.ok for c in found[endpoint]),
                           "p50_s": _round(percentile(seconds, 0.5)), "p95_s": _round(percentile(seconds, 0.95)),
                           "max_s": _round(max(seconds))}
    return table


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def summarise(args: argparse.Namespace, room: Classroom, students: list[Student], probes: list[Student], steps: Any,
              rss: dict[str, float | None], wall_s: float) -> dict[str, Any]:
    """The benchmark's figures as one JSON-ready dict (``rss``: end, probed, linger, peak in MB; None: unknown).

    Latencies and times are the class's; errors, hung calls and table mismatches also count the probes'.
    """
    n = len(students)
    rss_end = rss["end"]
    classify = [c for s in students for c in s.calls if c.endpoint == "/classify_example"]
    everyone = students + probes
    reference = next((s.table for s in everyone if s.table is not None and not s.changed), None)  # student 0's
    mismatched = sum(s.table != reference for s in everyone if s.table is not None and not s.changed)
    changed = [s for s in students if s.changed]
    changed_tables = {s.table for s in changed if s.table is not None}
    adapted = [s.adapted_at for s in students if s.adapted_at is not None]
    tables = [s.table_at for s in students if s.table_at is not None]
    one = room.rss_after_first_lesson
    in_class = (rss_end - one) / (n - 1) if n > 1 and rss_end is not None and one is not None else None
    probed = rss["probed"]
    by_probes = (probed - rss_end) / len(probes) if probes and probed is not None and rss_end is not None else None
    per_session = by_probes if probes else in_class
    base = room.rss_after_first_load
    upper = (rss_end - base) / (n - 1) if n > 1 and rss_end is not None and base is not None else None
    errors = [e for s in everyone for e in s.errors]
    peak_at = room.sampler.peak_at - room.t0 if room.sampler.peak_at else None
    return {
        "students": n, "after_warm_up": bool(getattr(args, "after_warm_up", False)), "steps": steps,
        "samples": args.samples, "examples": args.examples, "zoo": args.zoo,
        "errors": len(errors), "hung": sum(s.hung for s in everyone), "probes": len(probes),
        "adapted": len(adapted), "tables": len(tables), "mismatched_tables": mismatched,
        "classify_p50_s": _round(percentile([c.seconds for c in classify], 0.5)),
        "classify_p95_s": _round(percentile([c.seconds for c in classify], 0.95)),
        "classify_max_s": _round(max((c.seconds for c in classify), default=None) if classify else None),
        "classify_during_heavy": sum(c.during_heavy for c in classify), "classify_calls": len(classify),
        "last_adapted_s": _round(last_of([s.adapted_at for s in students]), 2),
        "first_adapted_s": _round(min(adapted, default=None) if adapted else None, 2),
        "last_table_s": _round(last_of([s.table_at for s in students]), 2),
        "last_lesson_s": _round(last_of([s.lesson_done_at for s in students]), 2),
        "peak_rss_mb": _round(rss["peak"], 1), "peak_sampled_at_s": _round(peak_at, 1),
        "in_flight_at_peak": in_flight(everyone, peak_at), "rss_after_first_load_mb": _round(base, 1),
        "rss_after_first_lesson_mb": _round(one, 1), "rss_end_mb": _round(rss_end, 1),
        "rss_after_probes_mb": _round(probed, 1), "per_session_mb": _round(per_session, 2),
        "per_session_class_mb": _round(in_class, 2), "per_session_upper_mb": _round(upper, 2),
        "rss_linger_mb": _round(rss["linger"], 1), "wall_s": round(wall_s, 2),
        "changed": len(changed), "changed_lambda": CHANGED_LAMBDA if changed else None,
        "default_last_adapted_s": _round(last_of([s.adapted_at for s in students if not s.changed]), 2),
        "default_last_table_s": _round(last_of([s.table_at for s in students if not s.changed]), 2),
        "changed_last_adapted_s": _round(last_of([s.adapted_at for s in changed]), 2),
        "changed_last_table_s": _round(last_of([s.table_at for s in changed]), 2),
        # their own computation: one table among them, not the defaults' (None without --changed)
        "changed_tables_own": (len(changed_tables) == 1 and reference not in changed_tables) if changed else None,
        "students_timeline": [timeline(s) for s in everyone],
        "endpoints": latency_table(students), "error_messages": errors[:20],
    }


def in_flight(students: list[Student], at: float | None) -> dict[str, int]:
    """How many calls of each endpoint were running at ``at`` (seconds after the first click): what made a peak."""
    if at is None:
        return {}
    return dict(collections.Counter(c.endpoint for s in students for c in s.calls if c.start <= at <= c.end))


def last_of(times: list[float | None]) -> float | None:
    """The latest of ``times``; None when one of them is missing (that student never got there)."""
    return None if not times or any(t is None for t in times) else max(times)


def timeline(student: Student) -> str:
    """One line per student: when it had an adapted model, a table, its whole lesson, and its adaptation status."""
    def at(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} s"

    changed = f" (lambda {CHANGED_LAMBDA})" if student.changed else ""
    return (f"student {student.index}{changed}: adapted {at(student.adapted_at)}, table {at(student.table_at)}, lesson "
            f"{at(student.lesson_done_at)}; {(student.status or '-')[:110]}")


def _fmt(value: Any, unit: str = "") -> str:
    return "-" if value is None else f"{value}{unit}"


def report(result: dict[str, Any]) -> None:
    """Print the human-readable figures (the JSON line follows)."""
    print(f"classroom: {result['students']} students, zoo {result['zoo']}, {result['steps']} adaptation steps, "
          f"samples {result['samples']}, {result['examples']} examples each")
    print(f"{'endpoint':<20} {'calls':>5} {'failed':>6} {'p50 s':>8} {'p95 s':>8} {'max s':>8}")
    for endpoint, row in result["endpoints"].items():
        print(f"{endpoint:<20} {row['calls']:>5} {row['failed']:>6} {_fmt(row['p50_s']):>8} {_fmt(row['p95_s']):>8} "
              f"{_fmt(row['max_s']):>8}")
    print(f"classification: p95 {_fmt(result['classify_p95_s'], ' s')} ({result['classify_during_heavy']} of "
          f"{result['classify_calls']} calls started while an adapt/evaluate/routing call ran)")
    print(f"adapted: {result['adapted']}/{result['students']} (first {_fmt(result['first_adapted_s'], ' s')}, last "
          f"{_fmt(result['last_adapted_s'], ' s')}); tables: {result['tables']}/{result['students']} (last "
          f"{_fmt(result['last_table_s'], ' s')}); tables differing from student 0's: {result['mismatched_tables']}")
    if result["changed"]:
        print(f"the {result['students'] - result['changed']} students with the defaults: last adapted "
              f"{_fmt(result['default_last_adapted_s'], ' s')}, "
              f"last table {_fmt(result['default_last_table_s'], ' s')}")
        print(f"{result['changed']} students merged WEMoE with lambda {result['changed_lambda']}: last adapted "
              f"{_fmt(result['changed_last_adapted_s'], ' s')}, "
              f"last table {_fmt(result['changed_last_table_s'], ' s')}; "
              f"their tables are their own (one table, not the defaults'): {result['changed_tables_own']}")
    print(f"server RSS: peak {_fmt(result['peak_rss_mb'], ' MB')}, after the first zoo load "
          f"{_fmt(result['rss_after_first_load_mb'], ' MB')}, after the first lesson "
          f"{_fmt(result['rss_after_first_lesson_mb'], ' MB')}, after all lessons {_fmt(result['rss_end_mb'], ' MB')}"
          + (f", {LINGER_S:.0f} s after the clients closed {_fmt(result['rss_linger_mb'], ' MB')}"
             if result["rss_linger_mb"] is not None else ""))
    print(f"highest sampled RSS at {_fmt(result['peak_sampled_at_s'], ' s')}, calls running then: "
          f"{result['in_flight_at_peak']}")
    print(f"per extra session: {_fmt(result['per_session_mb'], ' MB')} (RSS after {result['probes']} probe lessons "
          f"after the class {_fmt(result['rss_after_probes_mb'], ' MB')}, minus after all lessons, / probes); in the "
          f"class: {_fmt(result['per_session_class_mb'], ' MB')} ((after all lessons - after the first lesson) / "
          f"(N-1)); at most {_fmt(result['per_session_upper_mb'], ' MB')} ((after all lessons - after the first zoo "
          "load) / (N-1))")
    for line in result["students_timeline"]:
        print("  " + line)
    cpu = result.get("cpu_s") or {}
    if cpu:
        print(f"CPU during the class ({cpu['class_wall_s']} s, {os.cpu_count()} cores): the server "
              f"{_fmt(cpu['server'], ' s')}, this script's clients {_fmt(cpu['clients'], ' s')}")
    board = result.get("board")
    if board:
        print(f"class board: {board['board_seen']} of {board['board_submitted']} entries seen by the teacher, all "
              f"{_fmt(board['board_lag_s'], ' s')} after the last submission (at "
              f"{_fmt(board['board_last_submit_s'], ' s')}"
              f"; the teacher read every {board['teacher_every_s']} s, {board['teacher_reads']} reads); the student "
              f"count said all {result['students']} {_fmt(board['count_join_lag_s'], ' s')} after the last joined, "
              f"and {result['students']} fewer {_fmt(board['count_leave_lag_s'], ' s')} after the tabs closed (before: "
              f"{board['count_before_close']}, at the end {board['count_at_end']}, most seen {board['count_max']})")
        for message in board["teacher_errors"]:
            print("  " + message)
    report_ready_and_rates(result)
    print(f"errors: {result['errors']} (hung calls: {result['hung']}); wall {result['wall_s']} s")
    for message in result["error_messages"]:
        print("  " + message)


def report_ready_and_rates(result: dict[str, Any]) -> None:
    """Print ``ready_s``, ``restart_ready_s`` and the machine's GEMM rate beside the zoo's effective rates."""
    if "ready_s" not in result:
        return
    print(f"ready_s: {_fmt(result['ready_s'], ' s')} (the app's start until its warm-up served the default lesson "
          "from the cache)")
    restart = result.get("restart_ready_s")
    print("restart_ready_s: " + (f"{restart} s (a second app on the same persistent cache)" if restart is not None
                                 else f"null ({result.get('restart_note') or 'not measured'})"))
    rates = result.get("rates") or {}
    if rates.get("error"):
        print(f"rates: not measured ({rates['error']})")
    elif rates:
        gemm = rates["gemm_gflops"]["total"]
        print(f"CPU: {rates.get('cpu')}, {rates['threads']} threads; dense GEMM (torch.matmul, a ViT-B/32 block's "
              f"shapes at batch 16): {gemm:.0f} GFLOPS")
        if "eval_gflops" in rates:
            print(f"effective: evaluation {rates['eval_gflops']:.0f} GFLOPS ({rates['eval_share']:.0%} of GEMM; "
                  f"{rates['eval_images']} images in {rates['eval_s']} s), classification "
                  f"{rates['classify_gflops']:.0f} GFLOPS ({rates['classify_share']:.0%}; one image through "
                  f"{rates['classify_towers']} towers in {rates['classify_s']} s); {rates['gflop_per_image']} GFLOP "
                  "per image and tower")


# ---------------------------------------------------------------------------------------------------------------


def run_class(args: argparse.Namespace, url: str, pid: int | None, own_process: bool) -> dict[str, Any]:
    """Connect, read the endpoints, run every student's lesson together; return the figures."""
    from gradio_client import Client

    probe = Client(url, **CLIENT_OPTIONS)
    try:
        endpoints = Endpoints.read(probe)
    finally:
        probe.close()
    adapt = endpoints.first(ADAPT_ENDPOINTS)
    steps = args.steps if args.steps is not None else endpoints.defaults.get(adapt, {}).get("steps")
    sampler = RssSampler(pid).start()
    room = Classroom(args, url, endpoints, sampler)
    students: list[Student | None] = [None] * args.students
    start = time.perf_counter()
    cpu_before = {"server": cpu_seconds(pid), "clients": cpu_seconds(None)}

    def run(i: int) -> None:
        students[i] = room.lesson(i)

    threads = [threading.Thread(target=run, args=(i,), name=f"student-{i}", daemon=True) for i in range(args.students)]
    watch = TeacherWatch(room, args.teacher_code).start() if args.board else None
    ticks = PageTicks(room).start() if args.board else None
    for thread in threads:
        thread.start()
    budget = args.startup_timeout + 8 * (args.timeout + 10)  # connect + every call of one lesson, bounded
    if args.deadline is not None:
        budget = min(budget, args.deadline)
    for thread in threads:
        thread.join(timeout=max(1.0, budget - (time.perf_counter() - start)))
    done = [s if s is not None else unfinished(room, i) for i, s in enumerate(students)]
    steps = adapted_steps(done) or steps  # the lesson sizes its adaptation: what the students' statuses say it ran
    rss_end = sampler.now_mb()
    cpu = {"class_wall_s": round(time.perf_counter() - start, 2)}
    for who in ("server", "clients"):  # what the class cost each side (this script's clients share the cores)
        now = cpu_seconds(pid if who == "server" else None)
        cpu[who] = None if now is None or cpu_before[who] is None else round(now - cpu_before[who], 2)
    probes = []
    for k in range(args.probes):  # the same lesson on the warm app, one session at a time
        probes.append(room.lesson(args.students + k, together=False))
    rss_probed = sampler.now_mb() if probes else None
    if watch is not None:
        watch.stop()
    if ticks is not None:  # the tabs close: their pages stop saying they are open
        ticks.stop()
    closed_at = room.clock()

    def close_clients() -> None:  # tens of seconds for 30 clients: beside the teacher's reads, not before them
        for page in room.pages.values():
            page.close()
        for client in room.clients:
            with contextlib.suppress(Exception):  # closing is best effort
                client.close()

    closing = threading.Thread(target=close_clients, name="closing", daemon=True)
    closing.start()
    if watch is not None:  # the tabs are closed: how long until the teacher's count says so
        watch.until(args.students, LEAVE_WAIT_S)
        with contextlib.suppress(Exception):
            watch.page.close()
            watch.client.close()
    closing.join(timeout=120)
    rss_linger = None
    if args.linger:
        time.sleep(LINGER_S)
        rss_linger = sampler.now_mb()
    sampler.stop()
    rss = {"end": rss_end, "probed": rss_probed, "linger": rss_linger, "peak": sampler.peak_mb(own_process)}
    if args.calls is not None:
        write_calls(args.calls, done + probes)
    result = summarise(args, room, done, probes, steps, rss, time.perf_counter() - start)
    result["cpu_s"] = cpu
    if watch is not None:
        result["board"] = board_figures(room, watch, args.students, closed_at)
    return result


def unfinished(room: Classroom, index: int) -> Student:
    """A student whose lesson was still running when the class ended: its calls so far, one hung call more."""
    with room.lock:
        student = room.started.get(index) or Student(index)
    waiting = ", ".join(f"{e} since {at:.1f} s" for e, at in dict(student.waiting).items()) or "no call"
    student.errors.append(f"student {index}: lesson still running at the end (hung; waiting for {waiting})")
    student.hung += 1
    return student


def write_calls(path: Path, students: list[Student]) -> None:
    """Every student's calls, one JSON object a line, in the order they started (with the student's session id)."""
    calls = sorted(((s.index, c) for s in students for c in s.calls), key=lambda pair: pair[1].start)
    tabs = {s.index: s.tab for s in students}
    with open(path, "w") as out:
        for index, call in calls:
            out.write(json.dumps({"student": index, "endpoint": call.endpoint, "start": round(call.start, 3),
                                  "end": round(call.end, 3), "ok": call.ok, "tab": tabs[index]}) + "\n")


@dataclass
class ClassZoo:
    """The zoo a class runs on: what ``app.py --zoo`` and ``load_zoo`` are given, its value among the app's zoo
    choices (what the lab's students load) and the environment that finds its weights (a stand-in's)."""

    app_zoo: str
    choice: str
    env: dict[str, str]


def class_zoo(args: argparse.Namespace) -> ClassZoo:
    """The class's zoo from ``--zoo``: a stand-in is built first when missing."""
    if args.zoo in ZOO_SIZES:
        standin = ensure_standin(ZOO_SIZES[args.zoo], args.standin_dir, progress=print)
        return ClassZoo(standin.zoo, standin.choice, standin.env())
    return ClassZoo(args.zoo, args.zoo, {})


def machine_rates(zoo: ClassZoo, threads: int | None, timeout: float = 1800.0) -> dict[str, Any]:
    """``bench/compute_rate.py`` in a fresh process on the class's zoo, before the app starts: the GEMM rate and the
    library's evaluation and classification rates (``error`` when it failed)."""
    command = [sys.executable, str(Path(__file__).resolve().parent / "compute_rate.py"), "--zoo", zoo.app_zoo,
               *(["--threads", str(threads)] if threads else [])]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **zoo.env}
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"compute_rate.py took over {timeout:.0f} s"}
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return {"error": lines[-1][:300] if lines else f"compute_rate.py exited with {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point: launch the app (unless ``--url``), run the class, print the figures and the JSON line."""
    args = parse_args(argv)
    zoo = class_zoo(args)
    args.zoo_choice = zoo.choice  # what the lab's students load
    rates = None if args.no_rates else machine_rates(zoo, args.threads)
    process, watch = None, None
    ready: dict[str, Any] = {"ready_s": None, "restart_ready_s": None, "restart_note": None}
    with tempfile.TemporaryDirectory(prefix="classroom-") as tmp:
        log_path = Path(tmp) / "app.log"
        # a cold start: heads and results computed afresh (the persistent results in their own folder)
        app_env = {**zoo.env, CACHE_DIR_ENV: str(args.cache_dir or Path(tmp) / "results"),
                   "WEMOE_CACHE": str(Path(tmp) / "wemoe-cache")}
        if args.board:
            app_env[TEACHER_CODE_ENV] = args.teacher_code
        try:
            if args.url is None:
                port = free_port()
                url = f"http://127.0.0.1:{port}/"
                launched = time.perf_counter()
                process = launch_app_args(port, log_path, ["--zoo", zoo.app_zoo], args.threads, app_env)
                watch = WarmWatch(log_path, launched).start()
                try:
                    startup = wait_until_answering(url, args.startup_timeout, process)
                except Exception:
                    print(log_path.read_text()[-3000:], file=sys.stderr)
                    raise
                print(f"app.py (zoo {zoo.app_zoo}) answered on {url} after {startup:.1f} s (pid {process.pid})")
                if args.after_warm_up:
                    warmed = watch.wait(args.ready_timeout)
                    if warmed is None:
                        raise RuntimeError(f"the app did not warm the default lesson (failed: {watch.failed}; see "
                                           "its log)")
                    print(f"the app warmed the default lesson {warmed:.1f} s after its start; the class starts now")
                pid = process.pid
            else:
                url, pid = args.url, args.server_pid
                wait_until_answering(url, args.startup_timeout)
            result = run_class(args, url, pid, own_process=process is not None)
            if watch is not None:  # the class may end before the warm-up does
                ready["ready_s"] = _round(watch.wait(args.ready_timeout), 1)
        finally:
            if watch is not None:
                watch.stop()
            if process is not None:
                stop_app(process)
        if process is not None and args.app_log is not None:
            shutil.copyfile(log_path, args.app_log)
        if process is not None and result["errors"]:
            print("--- the end of the app's log ---\n" + log_path.read_text()[-2000:])
        if process is not None and not args.no_restart:
            ready |= restart_ready(zoo, app_env, args, Path(tmp), first_warmed=ready["ready_s"] is not None)
    result |= ready | machine_figures(rates)
    report(result)
    print(json.dumps(result))
    return result


def restart_ready(zoo: ClassZoo, app_env: dict[str, str], args: argparse.Namespace, tmp: Path,
                  first_warmed: bool) -> dict[str, Any]:
    """``restart_ready_s``: a second app started on the first one's persistent cache (its heads cache afresh, as on
    a restarted Space), from its start until its warm-up finished; None with the reason when not measured."""
    if not persistent_cache_supported():
        return {"restart_note": "no persistent cache"}
    if not first_warmed:
        return {"restart_note": "the first app never finished its warm-up"}
    env = {**app_env, "WEMOE_CACHE": str(tmp / "wemoe-cache-restart")}
    restarted = ready_after_start(["--zoo", zoo.app_zoo], env, args.threads, tmp / "restart.log", args.ready_timeout)
    note = None if restarted["ready_s"] is not None else "the restarted app did not finish its warm-up"
    return {"restart_ready_s": _round(restarted["ready_s"], 1), "restart_answer_s": _round(restarted["answer_s"], 1),
            "restart_note": note}


def machine_figures(rates: dict[str, Any] | None) -> dict[str, Any]:
    """The machine's GEMM rate and the zoo's effective rates as result fields (None when not measured)."""
    rates = rates or {}
    return {"cpu": rates.get("cpu"), "gemm_gflops": (rates.get("gemm_gflops") or {}).get("total"),
            "eval_gflops": rates.get("eval_gflops"), "classify_gflops": rates.get("classify_gflops"),
            "rates": rates or None}


if __name__ == "__main__":
    main()
