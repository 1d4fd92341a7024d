"""Per-browser-session state and the app's settings.

One :class:`Session` per browser tab (held in a ``gr.State``): the loaded zoo's Workbench, its merges, the last
accuracy table, the last image tried, and a folder for downloads. Nothing here is shared between sessions; the
only module-level object is the read-only :class:`AppConfig`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from app.shared import LightFirst, Shared, StepTimes
from wemoe.zoo.source_policy import SourcePolicy

ProgressFn = Callable[[float, str], None]
# A zoo loader returns the zoo and, for zoos whose tasks are not in the task registry, their tasks.
ZooLoader = Callable[[ProgressFn], tuple[Any, list | None]]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = ROOT / "assets" / "examples"
POCKET_DIR = ROOT / "assets" / "pocket"  # the shipped pocket zoo (wemoe.pocket.DEFAULT_PATH)
POCKET20_DIR = ROOT / "assets" / "pocket20"  # the twenty-task pocket zoo (wemoe.pocket.loader.POCKET20_PATH)
CUSTOM = "custom"


def _registry_loader(spec: str) -> ZooLoader:
    def load(progress: ProgressFn) -> tuple[Any, None]:
        from wemoe.loading import load_zoo

        return load_zoo(spec, progress=progress), None

    return load


def pocket_label(path: str | Path | None = None) -> str:
    """The pocket zoo's label in the zoo choice, with its number of experts read from its manifest.

    Reads the manifest's JSON directly: building the app imports no part of ``wemoe.pocket``.
    """
    try:
        count = len(json.loads((Path(path or POCKET_DIR) / "manifest.json").read_text())["tasks"])
    except (OSError, ValueError, KeyError, TypeError):  # no or a broken manifest: loading it says what is wrong
        return "Pocket zoo (offline, tiny CLIP and one expert per pocket task)"
    return f"Pocket zoo (offline, tiny CLIP + {count} expert{'s' if count != 1 else ''})"


def default_zoos() -> dict[str, tuple[str, ZooLoader]]:
    """Zoo choices: value -> (label shown, loader): the pocket zoo, the presets (names only; nothing is loaded) and the
    twenty-task pocket zoo where it is shipped."""
    from wemoe.zoo.presets import PRESETS

    zoos = {"pocket": (pocket_label(), _registry_loader("pocket"))}
    for name, spec in PRESETS.items():
        zoos[name] = (f"{name} (Hugging Face hub: {spec.description.split(':')[0]})", _registry_loader(name))
    if (POCKET20_DIR / "manifest.json").is_file():  # the twenty-task pocket zoo, where it is shipped (#33)
        zoos["pocket-20"] = (pocket_label(POCKET20_DIR).replace("Pocket zoo", "Pocket-20 zoo"),
                             _registry_loader("pocket-20"))
    return zoos


def zoo_choices(default: str) -> tuple[dict[str, tuple[str, ZooLoader]], str]:
    """The zoo choices and the page's default zoo (its lesson's, its warm-up's): ``default`` is one of
    :func:`default_zoos`, or the operator's path of a ``.json`` zoo spec, then offered under the spec's name."""
    zoos = default_zoos()
    if default in zoos:
        return zoos, default
    path = Path(default).expanduser()
    if path.suffix != ".json" or not path.is_file():
        raise ValueError(f"Zoo {default!r}: choose one of {', '.join(zoos)}, or give a .json zoo spec file.")
    try:
        spec = json.loads(path.read_text())
        name = str(spec.get("name") or path.stem)
    except (OSError, ValueError, AttributeError) as error:
        raise ValueError(f"Zoo spec {default!r} is not a JSON object: {error}") from error
    if name in zoos or name == CUSTOM:
        name = f"{name} ({path.name})"
    zoos[name] = (f"{name} ({spec.get('description') or path})", _registry_loader(str(path)))
    return zoos, name


DEFAULT_IMAGE_SIZE = "20mb"
# A ViT-B/32 expert is about 350 MB, a ViT-L/14 one 1.2 GB, a whole ViT-L/14 CLIP 1.7 GB: large locally; on a Space
# (SPACE_ID set) uploads fill its disk and memory, so less: bigger checkpoints can come as hub ids instead.
DEFAULT_CHECKPOINT_SIZE = "8gb"
DEFAULT_ARCHIVE_SIZE = "256mb"
SPACE_CHECKPOINT_SIZE = "1gb"
_UNITS = {"": 1, "b": 1, "kb": 2**10, "mb": 2**20, "gb": 2**30, "tb": 2**40}


def default_checkpoint_size() -> str:
    """``$WEMOE_MAX_CHECKPOINT_SIZE``, else 1gb on Hugging Face Spaces and 8gb elsewhere."""
    return os.environ.get("WEMOE_MAX_CHECKPOINT_SIZE") or (
        SPACE_CHECKPOINT_SIZE if os.environ.get("SPACE_ID") else DEFAULT_CHECKPOINT_SIZE)


def parse_size(size: str | int | None, what: str = "size") -> int | None:
    """Bytes in an upload limit such as ``"20mb"``, ``"1.5 GB"`` or ``350000000`` (units of 1024, as Gradio's);
    None, ``""`` or ``"none"`` is no limit. Anything else raises a ValueError naming ``what``."""
    if size is None or isinstance(size, int):
        return size
    text = str(size).strip().lower().replace(" ", "")
    if text in ("", "none", "unlimited"):
        return None
    number = text.rstrip("kmgtb")
    unit = text[len(number):]
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in _UNITS or value <= 0:
        raise ValueError(f"{what} {size!r} is not a size: write it like 20mb, 1.5gb or 500kb (or none for no limit).")
    return int(value * _UNITS[unit])


def format_size(size: int) -> str:
    """A byte count for messages: ``"350.2 MB"``."""
    for unit, factor in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} bytes"


@dataclass
class AppConfig:
    """Settings of one app instance (read-only once the app is built)."""

    zoos: dict[str, tuple[str, ZooLoader]] = field(default_factory=default_zoos)
    default_zoo: str = "pocket"
    samples: int = 0  # test images per task for evaluation and adaptation; 0 = every image
    # 100 steps of the pocket zoo take about 60 s on 2 busy CPU cores (0.63 s/step measured); the CLI default is 300
    default_steps: int = 100
    # IM repairs the pocket zoo's merge in every seed measured; the paper's plain entropy meets the bar at 300 steps
    # with the default seeds and less in others (README), and is one click away in the UI.
    default_loss: str = "im"
    examples_dir: Path = EXAMPLES_DIR
    routing_per_task: int = 64  # images per task in the routing panel's heatmaps and maps
    centroid_per_task: int = 32  # images per task that define each task's routing pattern
    max_pixels: int = 40_000_000  # refuse larger uploads (decompression bombs, memory)
    display_side: int = 1024  # larger images are downscaled before anything else
    # Upload limits. Gradio's launch(max_file_size=...) is one limit for every upload, so it is the larger of the two
    # (the checkpoint limit) and read_upload enforces the image limit itself. Environment: WEMOE_MAX_IMAGE_SIZE,
    # WEMOE_MAX_CHECKPOINT_SIZE; app.py: --max-image-size, --max-checkpoint-size. "none" = no limit.
    max_image_size: str = field(default_factory=lambda: os.environ.get("WEMOE_MAX_IMAGE_SIZE", DEFAULT_IMAGE_SIZE))
    max_checkpoint_size: str = field(default_factory=lambda: default_checkpoint_size())
    # task archives (.zip, .parquet): the library's own bound on what a task may unpack to
    # (wemoe.tasks.readers.TASK_MAX_BYTES)
    max_archive_size: str = field(
        default_factory=lambda: os.environ.get("WEMOE_MAX_ARCHIVE_SIZE", DEFAULT_ARCHIVE_SIZE))

    # Where the app serves others (a Space, or listening beyond localhost) a visitor's sources are uploads and hub ids,
    # paths only under $WEMOE_ALLOWED_PATHS (wemoe.zoo.source_policy); app.py sets it from where it listens.
    sources: SourcePolicy = field(default_factory=lambda: SourcePolicy.for_app(served=bool(os.environ.get("SPACE_ID"))))

    # What every session shares (loaded zoos, the result cache, the memory budget): one object for the whole app.
    shared: Shared = field(default_factory=Shared)
    idle_minutes: float = field(default_factory=lambda: float(os.environ.get("MERGE_EXPLORER_IDLE_MINUTES", "20")))
    warm_start: bool = False  # compute the default lesson in the background at start-up (app.py turns it on)

    def __post_init__(self) -> None:
        parse_size(self.max_image_size, "max_image_size")  # a typo in a flag or variable fails at start, not upload
        parse_size(self.max_checkpoint_size, "max_checkpoint_size")
        parse_size(self.max_archive_size, "max_archive_size")

    @property
    def max_file_size(self) -> int | None:
        """Gradio's launch limit in bytes (None: no limit): the largest of the limits by kind."""
        limits = list(self.upload_limits().values())
        return None if None in limits else max(limits)

    def upload_limits(self) -> dict[str, int | None]:
        """Bytes an upload may have by kind (``app.upload_limits.upload_kind``; None: no limit)."""
        return {"image": parse_size(self.max_image_size), "checkpoint": parse_size(self.max_checkpoint_size),
                "archive": parse_size(self.max_archive_size)}

    def launch_options(self) -> dict[str, Any]:
        """``Blocks.launch`` keywords every launch of this app uses: gradio's upload limit and the limits by kind
        enforced at the upload itself (``app.upload_limits.UploadLimits``), and the MCP server of the stateless tools
        alone (``app.mcp_tools``)."""
        from starlette.middleware import Middleware

        from app.mcp_tools import tools_only_lifespan
        from app.upload_limits import UploadLimits

        return {"max_file_size": self.max_file_size, "show_error": False, "mcp_server": True,
                "app_kwargs": {"middleware": [Middleware(UploadLimits, limits=self.upload_limits())],
                               "lifespan": tools_only_lifespan}}


class Session:
    """What one browser session holds. Handlers replace fields only after their work succeeded."""

    def __init__(self) -> None:
        self.zoo_name: str | None = None
        self.bench = None  # wemoe.workbench.workbench.Workbench
        self.table: pd.DataFrame | None = None
        self.image: Image.Image | None = None  # the image last tried
        self.predictions: pd.DataFrame | None = None  # its top-5 under every model (handlers.predict)
        self.prediction_columns: list[str] = []  # the compact view's columns: the merged model, its expert
        self.show_all_predictions = False  # the 'every model' checkbox
        self.last_merged: list[str] = []  # methods of the last merge (what "merge and adapt" adapts)
        self._own_step_times: StepTimes | None = None  # before a zoo is shared (app.shared.StepTimes)
        self.lock = threading.Lock()  # one heavy job per session at a time
        # this session's classifications waiting for or holding its lock: its long job lets them take it first
        # (threading.Lock is not fair: a job retaking it at once between steps kept a click waiting for 1.9 s)
        self.light_first = LightFirst()
        self.stop = threading.Event()  # set by Cancel; the running merge or adaptation checks it between steps
        self.job: tuple[str, str | None] | None = None  # what runs now: ("merge", None) or ("adapt", merge name)
        self._job_guard = threading.Lock()  # makes Cancel and a job's last check-and-commit one atomic step
        self.step_losses: dict[str, list[str]] = {}  # merge -> the loss each of its adaptation steps used
        self._workdir: str | None = None
        self.session_hash: str | None = None  # gradio's id of the browser session (closed on its unload)
        self.shared: Shared | None = None  # the app's shared zoos and cache (set when a zoo is loaded)
        self.last_active = time.monotonic()
        self.long_running: str | None = None  # the long job running now (one per session: see claim_long)
        self.dropped_note: str | None = None  # why the merges are gone (idle), said once when the user comes back
        self.lesson_step: str | None = None  # the lesson step last used (app.lesson), for the teacher's count
        self.seen_at: float | None = None  # when its page last said it is open (app.shared.Shared.here)
        self.findings: dict[str, dict] = {}  # the lesson's last result per board kind (app.board.KINDS), to submit

    def claim_long(self, what: str) -> str | None:
        """Start a long job (adapting, evaluating, mapping the routing) unless one runs: None, or what runs."""
        with self._job_guard:
            if self.long_running is not None:
                return self.long_running
            self.long_running = what
            return None

    def release_long(self) -> None:
        """The long job is over."""
        with self._job_guard:
            self.long_running = None

    @property
    def step_times(self) -> StepTimes:
        """Recent seconds per adaptation step: the app's (shared by every session on this machine) once a zoo is
        loaded, else this session's own."""
        if self.shared is not None:
            return self.shared.step_times
        if self._own_step_times is None:
            self._own_step_times = StepTimes()
        return self._own_step_times

    def touch(self) -> None:
        """The user did something: the session is not idle."""
        self.last_active = time.monotonic()

    def drop_if_idle(self, idle_seconds: float, now: float) -> bool:
        """Drop the merges (the heavy part) of a session idle for over ``idle_seconds`` that runs nothing; True if
        dropped. The loaded zoo is shared and stays; the next action says what happened."""
        busy = self.job is not None or self.long_running is not None
        if not self.bench or not self.bench.merges or now - self.last_active < idle_seconds or busy:
            return False
        if not self.lock.acquire(blocking=False):
            return False
        try:
            self.bench.merges.clear()
            self.last_merged, self.table, self.predictions = [], None, None
            self.step_losses.clear()
            self.dropped_note = (f"Your merges were dropped after {idle_seconds / 60:.0f} minutes without activity, to "
                                 "free memory for others. Press 'Merge' again: settings used before come back at once.")
        finally:
            self.lock.release()
        return True

    @property
    def workdir(self) -> Path:
        """This session's folder for downloads (removed with the session)."""
        if self._workdir is None:
            self._workdir = tempfile.mkdtemp(prefix="merge-explorer-")
        return Path(self._workdir)

    def reset_results(self) -> None:
        """Forget results that depend on the merges (called when merges change)."""
        self.table = None

    def begin(self, kind: str, target: str | None = None, fresh: bool = True) -> tuple[str, str | None] | None:
        """Mark a job (``load``, ``merge`` or ``adapt``) as running and return its token, or None (nothing changed)
        when the session already runs one: one model job per session, so a Merge pressed while the session adapts
        or loads is refused instead of racing it. A load also waits for no long job (it replaces the models they
        read). ``fresh`` forgets an earlier Cancel (a job chained to the previous one keeps it, so Cancel during a
        merge also stops the adaptation after it)."""
        job = (kind, target)
        with self._job_guard:
            adapting_elsewhere = self.long_running == "adapting" and kind != "adapt"
            if self.job is not None or adapting_elsewhere or (kind == "load" and self.long_running is not None):
                return None
            if fresh:
                self.stop.clear()
            self.job = job
        return job

    def running(self) -> str | None:
        """What the session runs now, in words ("adapting wemoe", "loading the pocket zoo"), or None."""
        with self._job_guard:
            if self.job is not None:
                kind, target = self.job
                return {"merge": "merging", "adapt": f"adapting {target}",
                        "load": f"loading the {target} zoo"}.get(kind, kind)
            return self.long_running

    def finish(self, job: tuple[str, str | None]) -> None:
        """The job ``job`` (the token from :meth:`begin`) is over."""
        with self._job_guard:
            if self.job is job:
                self.job = None

    def request_stop(self) -> tuple[str, str | None] | None:
        """Cancel: ask the running job to stop at its next check; returns that job (None when nothing runs)."""
        with self._job_guard:
            self.stop.set()
            return self.job

    def commit(self, job: tuple[str, str | None], swap: Callable[[], None]) -> bool:
        """Run ``swap`` (a job's results replacing the session's) unless Cancel came first, and end the job, in one
        step that Cancel cannot split. True when ``swap`` ran."""
        with self._job_guard:
            if self.stop.is_set():
                return False
            swap()
            if self.job is job:
                self.job = None
            return True

    def close(self) -> None:
        """Drop models and delete the download folder."""
        self.bench = None
        self.last_merged = []
        self.step_losses.clear()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __deepcopy__(self, memo: dict) -> Session:
        # gr.State deep-copies its initial value per session: a fresh Session is the right copy
        return Session()


def close_session(session: Session | None) -> None:
    """gr.State's delete callback: free the models and files of a closed session."""
    if isinstance(session, Session):
        session.close()
