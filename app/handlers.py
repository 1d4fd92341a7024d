"""Event handlers: plain functions over a :class:`~app.session.Session`, callable without a browser.

Each handler checks its input first and changes the session only after its work succeeded, so bad input leaves
the loaded models and results as they were. User mistakes raise ``gr.Error`` with what to do (gradio shows the
message, never a traceback). Long work is a generator (adaptation, evaluation, routing maps) so the page updates
as it goes and a Cancel button can stop it between steps. No merge math here: everything calls ``wemoe``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from app import figures
from app.gpu import adapt_device, chunk_steps, zero_gpu, zero_gpu_runner
from app.shared import MemoryBudgetExceeded, Shared
from app.session import CUSTOM, AppConfig, Session
from wemoe.adapt import DEFAULT_LOSS, LOSSES
from wemoe.errors import WemoeError

log = logging.getLogger(__name__)
AUTO_TASK = "auto (the routers' guess)"
DIGITS_TASK = "pocket_digits"  # drawings for this task are redrawn like its images (read_sketch)
MAX_STEPS = 5000
CACHED = "; computed earlier with the same settings, from the server's cache"
NO_ZOO = "Load a zoo first (step 1, 'Load zoo')."


def _noop_progress(fraction: float, desc: str = "", **_: Any) -> None:
    pass


def refuse(message: str, title: str = "Error") -> gr.Error:
    """A ``gr.Error`` for a user mistake (or a cancelled job): gradio shows ``message`` and prints no traceback.

    The event wrappers of ``app.layout`` log each refusal as one line.
    """
    return gr.Error(message, title=title, print_exception=False)


@contextlib.contextmanager
def friendly(action: str) -> Iterator[None]:
    """Turn any failure inside into a ``gr.Error`` saying what failed and why.

    A user mistake (``gr.Error``, or a ``WemoeError``: bad parameters, unknown names, a diverged adaptation) is
    passed on as a message without a traceback; only unexpected failures log their traceback.
    """
    try:
        yield
    except gr.Error:
        raise
    except WemoeError as error:
        raise refuse(f"{action}: {error}") from None
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        log.exception("%s failed", action)
        raise refuse(f"{action} failed: {error}. Nothing was changed; check the input and try again.") from None


def number(value: Any, field: str, *, whole: bool = False, minimum: float | None = None, maximum: float | None = None,
           hint: str = "") -> float | int:
    """``value`` as a finite number (an ``int`` when ``whole``) within [minimum, maximum], else a ``gr.Error`` naming
    ``field`` (the control's label) and what to enter. Accepts numbers and numeric text ("3", "1e-3")."""
    what = "a whole number" if whole else "a number"
    if minimum is not None and maximum is not None:
        what += f" from {minimum:g} to {maximum:g}"
    elif minimum is not None:
        what += f" of at least {minimum:g}"
    elif maximum is not None:
        what += f" of at most {maximum:g}"
    refused = refuse(f"{field}: enter {what}{f' ({hint})' if hint else ''}, got {value!r}.")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise refused
    try:
        parsed = float(value.strip()) if isinstance(value, str) else float(value)
    except (ValueError, OverflowError):
        raise refused from None
    if not math.isfinite(parsed) or (whole and not parsed.is_integer()):
        raise refused
    if (minimum is not None and parsed < minimum) or (maximum is not None and parsed > maximum):
        raise refused
    return int(parsed) if whole else parsed


def flag(value: Any, field: str) -> bool:
    """``value`` as a checkbox's ``bool`` (None is off), else a ``gr.Error`` naming ``field``."""
    if value is None or isinstance(value, bool):
        return bool(value)
    raise refuse(f"{field}: enter true or false, got {value!r}.")


def _setting(name: str):
    """The declared adaptation setting ``name`` (``wemoe.adapt.SETTINGS``: its range is the app's too)."""
    from wemoe.adapt import SETTINGS

    return next(p for p in SETTINGS if p.name == name)


@contextlib.contextmanager
def busy(session: Session, timeout: float = 120.0) -> Iterator[None]:
    """Hold the session's lock (one computation on its models at a time); waits for a running step to finish."""
    if not session.lock.acquire(timeout=timeout):
        raise refuse("This session is busy with another job. Wait for it to finish, or press Cancel.")
    try:
        yield
    finally:
        session.lock.release()


def _bench(session: Session):
    """The session's workbench (a clear error before any zoo is loaded); says once if idle merges were dropped."""
    if session.bench is None:
        raise refuse(NO_ZOO)
    session.touch()
    if session.dropped_note:
        gr.Warning(session.dropped_note)
        session.dropped_note = None
    return session.bench


# ---------------------------------------------------------------------------------------------------------------
# 1. Models


def custom_spec(base_model: str, base_pretrained: str, experts_text: str, expert_files: Sequence[str] | None) -> dict:
    """A zoo spec mapping from the custom-zoo fields.

    ``experts_text`` has one ``task: source`` line per expert (source: hub id, local file or folder, or the name of
    an uploaded file); uploaded files not named in it become experts of the task named by the file's stem.
    """
    base_model = (base_model or "").strip()
    if not base_model:
        raise gr.Error("Custom zoo: give the base model's open_clip name, e.g. ViT-B-32.")
    uploads = {Path(f).name: str(f) for f in (expert_files or [])}
    experts: dict[str, str] = {}
    for number, line in enumerate((experts_text or "").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        task, sep, source = line.partition(":") if ":" in line else line.partition("=")
        if not sep or not task.strip() or not source.strip():
            raise gr.Error(f"Custom zoo, experts line {number} ({line!r}) must look like 'task: source', "
                           "e.g. 'mnist: tanganke/clip-vit-base-patch32_mnist'.")
        source = source.strip()
        experts[task.strip()] = uploads.pop(source, source)
    for name, path in uploads.items():
        experts.setdefault(Path(name).stem, path)
    if not experts:
        raise gr.Error("Custom zoo: name at least one expert ('task: hub id or file' lines) or upload checkpoint files.")
    return {"name": "custom", "model": base_model, "pretrained": (base_pretrained or "").strip() or None, "experts": experts}


def read_tasks(tasks_text: str, task_files: Sequence[str] | None = None) -> tuple[dict[str, Any], str]:
    """The custom zoo's own tasks, and a Markdown table of what was read (classes, test images, where from).

    ``tasks_text`` has one ``task: source`` line per task (``wemoe.tasks.task_from_source``): an image folder
    (``class/xxx.png``), a ``.zip`` of one or a ``.parquet`` file (local, or the name of an uploaded file), or
    ``hf:owner/dataset`` with ``split=``, ``image=``, ``label=`` options. Uploaded files not named in it become
    the task named by the file's stem. Class names are read from the data.
    """
    from wemoe.tasks import task_from_source

    uploads = {Path(f).name: str(f) for f in (task_files or [])}
    lines: dict[str, str] = {}
    for number, line in enumerate((tasks_text or "").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, source = line.partition(":")
        if not sep or not name.strip() or not source.strip() or " " in name.strip():
            raise gr.Error(f"Custom zoo, tasks line {number} ({line!r}) must look like 'task: source', e.g. "
                           "'pets: pets.zip' or 'digits: hf:ylecun/mnist split=test image=image label=label'.")
        if name.strip() in lines:
            raise gr.Error(f"Custom zoo: task {name.strip()!r} is given twice in the tasks.")
        lines[name.strip()] = source.strip()
    named = {s.split()[0] for s in lines.values() if s.split()}
    for file_name in uploads:
        if file_name not in named:
            lines.setdefault(Path(file_name).stem, file_name)
    tasks = {}
    with friendly("Reading the custom tasks"):
        for name, source in lines.items():
            tasks[name] = task_from_source(source, name, uploads=uploads)
        rows = []
        for task in tasks.values():
            shown = ", ".join(task.classnames[:6]) + (", ..." if len(task.classnames) > 6 else "")
            where = task.source if task.source.startswith("hf:") else Path(task.source).name
            rows.append(f"| {task.name} | {len(task.classnames)} | {len(task.dataset('test'))} | {shown} | "
                        f"{where} | {task.templates[0]} |")
    if not tasks:
        return {}, "_No custom tasks: every expert must be named after a registered task._"
    header = "| task | classes | test images | class names | from | prompt |\n|---|---|---|---|---|---|\n"
    return tasks, f"**Read {len(tasks)} task{'s' if len(tasks) != 1 else ''}**\n\n{header}" + "\n".join(rows)


def load_zoo(
    session: Session,
    config: AppConfig,
    choice: str,
    samples: float | None = None,
    base_model: str = "",
    base_pretrained: str = "",
    experts_text: str = "",
    expert_files: Sequence[str] | None = None,
    progress: Any = _noop_progress,
    tasks_text: str = "",
    task_files: Sequence[str] | None = None,
) -> str:
    """Load a zoo, its tasks' test images and heads into the session; returns the description of what is loaded."""
    from wemoe.workbench import Workbench

    if samples is not None:
        samples = number(samples, "Test images per task", whole=True, hint="0 = every image")
    samples_per_task = int(samples) if samples else (config.samples or None)
    if samples_per_task is not None and samples_per_task < 1:
        raise gr.Error("Test images per task must be at least 1 (or 0 for every image).")
    if choice == CUSTOM:
        from app.session import format_size, parse_size
        from wemoe.tasks import list_tasks

        spec = custom_spec(base_model, base_pretrained, experts_text, expert_files)
        limit = parse_size(config.max_checkpoint_size)
        for file in expert_files or []:
            if limit is not None and Path(file).is_file() and Path(file).stat().st_size > limit:
                raise gr.Error(f"Custom zoo: {Path(file).name!r} is {format_size(Path(file).stat().st_size)}, more "
                               f"than the {format_size(limit)} this app accepts for a checkpoint upload. Give a hub id "
                               "or a local path instead (or raise --max-checkpoint-size).")
        custom, _ = read_tasks(tasks_text, task_files)
        registered = set(list_tasks())
        orphans = [t for t in custom if t not in spec["experts"]]
        if orphans:
            raise gr.Error(f"Custom zoo: task(s) {orphans} have no expert. Experts: {', '.join(spec['experts'])}.")

        def loader(report):
            from wemoe.errors import TaskError
            from wemoe.tasks import get_task
            from wemoe.loading import load_zoo as library_load_zoo

            zoo = library_load_zoo(spec, progress=report)  # first: a checkpoint that does not fit says so first
            untasked = [e for e in zoo.task_names if e not in custom and e not in registered]
            if untasked:
                raise TaskError(f"expert(s) {untasked} have no task. Give each a line 'name: image folder, .zip or "
                                f"hf:dataset' under Tasks, or name it after a registered task ({', '.join(sorted(registered))}).")
            return zoo, [custom[name] if name in custom else get_task(name) for name in zoo.task_names]
    elif choice in config.zoos:
        loader = config.zoos[choice][1]
    else:
        raise gr.Error(f"Unknown zoo {choice!r}. Choose one of: {', '.join([*config.zoos, CUSTOM])}.")

    def report(fraction: float, message: str) -> None:
        progress(0.6 * fraction, desc=message)

    reused = False
    with friendly(f"Loading the {choice} zoo"), busy(session):
        if choice == CUSTOM:  # the session's own zoo: never shared
            zoo, tasks = loader(report)
            bench = Workbench(zoo, tasks, samples=samples_per_task, seed=0)
            bench.data(progress=lambda f, m: progress(0.6 + 0.3 * f, desc=m))
            progress(0.95, desc="building zero-shot heads")
            bench.heads()
        else:  # loaded once per process and shared, read-only, by every session that picks it
            guard_memory(config.shared)
            bench, reused = config.shared.workbench(choice, samples_per_task, loader, lambda f, m: progress(f, desc=m))
    session.close()
    session.zoo_name, session.bench = choice, bench
    session.reset_results()
    session.image = None
    session.touch()
    session.shared = config.shared
    config.shared.track(session)
    note = "\n\n_This zoo was already loaded on this server: it is shared with every session that uses it._" \
        if reused else ""
    return zoo_summary(session) + note


@contextlib.contextmanager
def long_job(session: Session, what: str) -> Iterator[None]:
    """Run a long job (adaptation, evaluation, routing map): at most one per session, so that one student cannot
    hold several of the few shared long-job slots; a second one is refused with what runs."""
    running = session.claim_long(what)
    if running is not None:
        raise refuse(f"This session is already {running}: wait for it to finish (or press Cancel), then try again.",
                     title="One job at a time")
    try:
        yield
    finally:
        session.release_long()


def one_long_job(what: str) -> Callable:
    """Decorator: the generator handler runs as the session's one long job (see :func:`long_job`)."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(session: Session, *args: Any, **kwargs: Any) -> Iterator:
            with long_job(session, what):
                yield from fn(session, *args, **kwargs)

        return run

    return wrap


def guard_memory(shared: Shared | None) -> None:
    """Refuse new heavy work (a ``gr.Error`` saying what to do) while the process is above its memory budget."""
    if shared is None:
        return
    try:
        shared.check_memory()
    except MemoryBudgetExceeded as error:
        log.warning("refused heavy work: %s", error)
        raise refuse(str(error), title="Server busy") from None


def _megabytes(tensors) -> float:
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def zoo_summary(session: Session) -> str:
    """Markdown: base, experts, tasks (classes, test images), parameter counts and memory."""
    if session.bench is None:
        return "_Nothing loaded yet._"
    bench = session.bench
    zoo = bench.zoo
    counts = zoo.parameter_count()
    memory = _megabytes(zoo.clip.state_dict().values()) + sum(_megabytes(s.values()) for s in zoo.experts.values())
    data = bench.data()
    info = zoo.info or {}
    base = info.get("model") or type(zoo.clip).__name__
    if info.get("pretrained"):
        base += f" ({info['pretrained']})"
    rows = "\n".join(
        f"| {t.name} | {len(t.classnames)} | {len(data[t.name])} | {', '.join(t.classnames[:4])}{', ...' if len(t.classnames) > 4 else ''} |"
        for t in bench.tasks
    )
    return (
        f"**Loaded: {zoo.name}** ({zoo.description or 'no description'})\n\n"
        f"- Base model: {base}; image tower {counts['image_tower'] / 1e6:.2f} M parameters, text tower and rest "
        f"{counts['text_and_rest'] / 1e6:.2f} M\n"
        f"- Experts: {len(zoo.experts)} ({', '.join(zoo.task_names)}), {counts['experts'] / 1e6:.2f} M parameters together\n"
        f"- Memory for the weights: {memory:.1f} MiB\n\n"
        f"| task | classes | test images used | class names |\n|---|---|---|---|\n{rows}"
    )


def task_choices(session: Session) -> list[str]:
    """Choices of the 'task (head)' dropdown: the routers' guess, then every task."""
    return [AUTO_TASK, *(session.bench.task_names if session.bench is not None else [])]


def list_examples(config: AppConfig, tasks: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """Shipped example images as (path, "task/file") pairs, for the given tasks (all when None)."""
    root = Path(config.examples_dir)
    if not root.is_dir():
        return []
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and (tasks is None or p.name in tasks)):
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp", ".bmp"}:
                found.append((str(path), f"{folder.name}/{path.name}"))
    return found


# ---------------------------------------------------------------------------------------------------------------
# 2. Merge and adapt


def adaptive_merges(session: Session) -> list[str]:
    """Names of the session's merges that can be adapted (WEMoE, AdaMerging)."""
    if session.bench is None:
        return []
    return [name for name, result in session.bench.merges.items() if result.adaptive]


def _device_name() -> str:
    return "GPU" if adapt_device() is None and torch.cuda.is_available() else "CPU"


def measure_step(session: Session, name: str, per_task: int) -> float:
    """Seconds of one adaptation step of merge ``name`` on this machine (measured without changing the model)."""
    from wemoe.adapt import time_step

    bench = _bench(session)
    seconds = time_step(bench.merges[name].model, bench.data(), bench.heads(), per_task=per_task, device=adapt_device())
    session.step_seconds[(name, per_task)] = seconds
    return seconds


def estimate(session: Session, target: str | None, steps: Any, per_task: Any) -> str:
    """Markdown: how long ``steps`` adaptation steps of ``target`` should take here (from a measured step), and
    that merging again would replace an adapted ``target``."""
    if session.bench is None or not isinstance(target, str) or target not in session.bench.merges:
        return "_Merge with WEMoE to see how long adaptation will take on this machine._"
    try:
        steps = number(steps, "Adaptation steps", whole=True, minimum=0)
        per_task = number(per_task, "Images per task per step", whole=True, minimum=1)
    except gr.Error as error:
        return f"_{error.message}_"
    adapted = session.bench.merges[target].adapt_steps
    replaced = (f" Pressing Merge again replaces {target} and its {adapted} adaptation steps; 'Adapt more' continues "
                "from them." if adapted else "")
    seconds = session.step_seconds.get((target, per_task))
    if seconds is None:
        return (f"_The time per step of {target} with {per_task} images per task is measured at its first step._"
                f"{replaced}")
    total = seconds * steps
    return (f"Estimated time: **{total:.0f} s** for {steps} steps of {target} on this {_device_name()} "
            f"({seconds:.3f} s per step measured).{replaced}")


def merge(
    session: Session,
    methods: Sequence[str],
    params: Mapping[str, Mapping[str, Any]],
    per_task: Any = 16,
    default_steps: int = 100,
    progress: Any = _noop_progress,
) -> str:
    """Merge with each chosen method (parameters checked before any work); returns a status line with timings.

    All new models are made (and a WEMoE step timed) before any replaces the session's merges, in one swap at the
    end: Cancel before that swap (:func:`cancelled`) leaves every merge as it was and raises a ``gr.Error`` titled
    "Cancelled" (so the adaptation chained after a merge does not start). Replacing an adapted merge says so.
    """
    from wemoe.adapt import time_step
    from wemoe.methods import get_method

    bench = _bench(session)
    methods = [methods] if isinstance(methods, str) else methods
    if not isinstance(methods, (list, tuple)) or not all(isinstance(m, str) for m in methods):
        raise refuse(f"Merge methods: give a list of method names, e.g. ['task_arithmetic', 'wemoe'], got {methods!r}.")
    methods = list(dict.fromkeys(methods))
    if not methods:
        raise refuse("Choose at least one merge method.")
    images = _setting("per_task")
    per_task = number(per_task, "Images per task per step", whole=True, minimum=images.min, maximum=images.max)
    with friendly("Checking the merge parameters"):
        resolved = {m: get_method(m).resolve((params or {}).get(m)) for m in methods}
    made: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    job = session.begin("merge")
    try:
        with friendly("Merging"), busy(session):
            for i, method in enumerate(methods):
                if session.stop.is_set():
                    break
                progress(i / len(methods), desc=f"merging {method}")
                made[method] = bench.build(method, resolved[method])  # from the cache when made before
            for method, result in made.items():
                if result.adaptive and not session.stop.is_set():
                    progress(0.95, desc=f"timing one adaptation step of {method}")
                    device = adapt_device()
                    seconds[method], _ = bench.cached(
                        None if result.key is None else ("step_seconds", result.key, per_task, str(device)),
                        lambda r=result: time_step(r.model, bench.data(), bench.heads(), per_task=per_task,
                                                   device=device))
            replaced = {m: bench.merges[m].adapt_steps for m in made
                        if m in bench.merges and bench.merges[m].adapt_steps}

            def swap() -> None:
                bench.merges.update(made)
                for method in made:
                    session.step_losses.pop(method, None)
                session.step_seconds.update({(m, per_task): s for m, s in seconds.items()})
                session.last_merged = list(made)
                session.reset_results()

            swapped = len(made) == len(methods) and session.commit(job, swap)
    finally:
        session.finish(job)
    if not swapped:
        raise refuse("Merge cancelled: the session's merges are as they were (nothing was replaced).",
                     title="Cancelled")
    message = "Merged: " + ", ".join(f"{m} ({r.merge_seconds:.1f} s{CACHED if r.from_cache else ''})"
                                     for m, r in made.items()) + "."
    for method, count in replaced.items():
        note = (f"Replaced the adapted {method}: its {count} adaptation steps are gone and the new {method} starts "
                "from step 0 ('Adapt more' continues an adapted merge instead).")
        message += " " + note
        gr.Warning(note)
    adaptive = [m for m in methods if bench.merges[m].adaptive]
    if adaptive:
        message += " " + estimate(session, adaptive[-1], default_steps, per_task)
    return message


@one_long_job("adapting")
def adapt(
    session: Session,
    target: str | None,
    steps: Any,
    lr: Any,
    per_task: Any,
    loss: str = DEFAULT_LOSS,
    progress: Any = _noop_progress,
    update_every: float = 0.5,
    chained: bool = False,
) -> Iterator[tuple[str, Any]]:
    """Adapt merge ``target`` step by step with ``loss`` (``entropy``, the paper's, or ``im``); yields (status,
    loss curve) after the first and last step and at most every ``update_every`` seconds between.

    Cancel (:func:`cancelled`, or closing the generator) stops it between steps; the routers keep the last
    finished step. ``chained``: this run follows a merge (:func:`adapt_after_merge`), so a Cancel that came during
    that merge stops it too.

    On ZeroGPU the steps run in GPU calls of :func:`app.gpu.chunk_steps` steps each (sized from the measured time per
    step); Cancel then stops at the end of the running chunk, and a call that runs out of GPU time leaves the routers
    of the last finished chunk, with a message saying how many steps were done.
    """
    bench = _bench(session)
    if not isinstance(target, str) or target not in bench.merges:
        raise refuse("Merge with WEMoE first: adaptation trains the routers of a WEMoE (or AdaMerging) merge.")
    if not bench.merges[target].adaptive:
        raise refuse(f"The {target} merge has nothing to adapt: only WEMoE and AdaMerging merges adapt.")
    steps = number(steps, "Adaptation steps", whole=True, minimum=1, maximum=MAX_STEPS)
    rate, images = _setting("lr"), _setting("per_task")
    lr = number(lr, "Learning rate", minimum=rate.min, maximum=rate.max, hint="the paper uses 1e-3")
    per_task = number(per_task, "Images per task per step", whole=True, minimum=images.min, maximum=images.max)
    if not isinstance(loss, str) or loss not in LOSSES:
        raise refuse(f"Unknown adaptation loss {loss!r}; choose one of {', '.join(LOSSES)}.")
    guard_memory(session.shared)
    result = bench.merges[target]
    start_step, start_loss, ran, elapsed = result.adapt_steps, None, 0, 0.0
    losses = session.step_losses

    def curve():
        return figures.loss_curve({target: result.history}, losses)

    job = session.begin("adapt", target, fresh=not chained)
    try:
        known = session.step_seconds.get((target, per_task))
        if known is not None:  # say how long before starting (the step time was measured when merging)
            note = (f"Adapting {target}: {steps} steps, about {known * steps:.0f} s on this {_device_name()} "
                    f"({known:.3f} s per step measured)...")
            yield note, curve()
        chunk, options = 0, {"device": adapt_device()}
        if zero_gpu():  # each chunk in a ZeroGPU call, sized from the measured (CPU: pessimistic) time per step
            per_step = known if known is not None else measure_step(session, target, per_task)
            chunk = chunk_steps(per_step)
            options = {"device": None, "runner": zero_gpu_runner(per_step), "chunk_steps": chunk}
        # Another session computing this very run: watch it without holding this session's lock, so that this
        # student's classifications go on meanwhile; the run then comes from the cache.
        last_yield = 0.0
        for shared_progress in bench.waiting_for_run(target, steps=steps, lr=lr, per_task=per_task, loss=loss):
            if session.stop.is_set():
                break
            if time.perf_counter() - last_yield >= update_every:
                last_yield = time.perf_counter()
                yield (f"Another session is computing this same adaptation ({target}, {steps} steps, the same "
                       f"settings): {shared_progress}. You get its result as soon as it is done."), curve()
        records = bench.adapt(target, steps=steps, lr=lr, per_task=per_task, loss=loss, stop=session.stop.is_set,
                              **options)
        last_yield, stopped, out_of_time = 0.0, False, None
        with friendly(f"Adapting {target}"), contextlib.closing(records):
            while True:
                with busy(session):
                    # checked under the lock: Cancel, waiting for it, counts exactly (in chunks: at a chunk's end,
                    # where the model and its history agree)
                    if session.stop.is_set() and (not chunk or ran % chunk == 0):
                        stopped = True
                        break
                    try:
                        record = next(records, None)
                    except WemoeError:
                        raise
                    except Exception as error:  # noqa: BLE001 - a GPU call that failed or ran out of time
                        if not chunk:
                            raise
                        log.warning("adaptation chunk failed after %d steps: %s", ran, error)
                        out_of_time, record = error, None
                    kept = losses.setdefault(target, [])
                    kept.extend([loss] * (len(result.history) - len(kept)))
                if record is None:
                    stopped = stopped or session.stop.is_set()  # Cancel while waiting for another session's same run
                    break
                ran, elapsed = ran + 1, record.elapsed
                start_loss = record.loss if start_loss is None else start_loss
                if record.step == 1:
                    first_elapsed = record.elapsed  # the first step also pays one-off warm-up costs
                else:  # refine the time per step from the running steps, leaving the first one out
                    session.step_seconds[(target, per_task)] = (record.elapsed - first_elapsed) / (record.step - 1)
                per_step = session.step_seconds.get((target, per_task), record.elapsed / record.step)
                remaining = per_step * (steps - record.step)
                status = (f"{target}: step {record.step}/{steps} (total {start_step + record.step}), loss "
                          f"{record.loss:.3f}; about {remaining:.0f} s left on this {_device_name()} "
                          f"(estimated total {record.elapsed + remaining:.0f} s).")
                progress(record.step / steps, desc=f"adapting {target}: step {record.step}/{steps}")
                now = time.perf_counter()
                if record.step in (1, steps) or now - last_yield >= update_every:
                    last_yield = now
                    yield status, curve()
    finally:
        session.finish(job)
    change = (f"loss {start_loss:.3f} -> {result.history[-1].loss:.3f}" if ran else "no step run")
    session.reset_results()
    if out_of_time is not None:
        yield (f"**Out of GPU time after {ran} of {steps} steps** ({change}): the {target} routers are kept as they "
               f"were after step {result.adapt_steps}, the last finished chunk. Log in to Hugging Face for more GPU "
               f"quota, or adapt again with fewer steps. ({_first_line(out_of_time)})"), curve()
        return
    if stopped:
        yield (f"Stopped after {ran} of {steps} steps ({change}). The {target} routers are kept as they were after "
               f"step {result.adapt_steps}."), curve()
        return
    if result.from_cache:
        yield (f"Adapted {target}: {ran} steps, {change} ({result.adapt_steps} steps in all). Computed earlier with "
               f"the same settings (it took {elapsed:.1f} s then), so it came from the server's cache at once."), curve()
        return
    yield (f"Adapted {target}: {ran} steps in {elapsed:.1f} s, {change} ({result.adapt_steps} steps in all)."), curve()


def _first_line(error: BaseException, width: int = 200) -> str:
    """An error's first line, at most ``width`` characters (a worker's error carries its whole traceback)."""
    text = str(getattr(error, "message", None) or error or type(error).__name__).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:width]


def adapt_after_merge(
    session: Session,
    target: str | None,
    steps: Any,
    lr: Any,
    per_task: Any,
    loss: str = DEFAULT_LOSS,
    progress: Any = _noop_progress,
    update_every: float = 0.5,
) -> Iterator[tuple[Any, Any]]:
    """The adaptation chained after "Merge (and adapt)": adapts ``target`` only when that merge has just made it
    and was not cancelled; otherwise (also for 0 steps) yields one pair of ``gr.skip()``."""
    steps = number(steps, "Adaptation steps", whole=True, minimum=0, maximum=MAX_STEPS,
                   hint="0 merges without adapting")
    if not steps or session.stop.is_set() or session.bench is None or not isinstance(target, str) \
            or target not in session.last_merged:
        yield gr.skip(), gr.skip()
        return
    yield from adapt(session, target, steps, lr, per_task, loss, progress, update_every, chained=True)


def cancelled(session: Session, target: str | None = None, wait: float = 120.0) -> str:
    """Cancel: stop the session's running merge or adaptation at its next check, and say what is kept.

    A merge replaces nothing. An adaptation finishes the step running now (it is kept), so this waits for it and
    names the step the routers really stay at.
    """
    job = session.request_stop()
    if job is not None and job[0] == "merge":
        return "Cancelled the merge: the session's merges stay as they were (nothing is replaced)."
    bench = session.bench
    if job is not None and job[0] == "adapt":
        target = job[1]
        if not session.lock.acquire(timeout=wait):
            return f"Stopping {target} after the step running now."
        session.lock.release()  # the running step has finished: the routers stay as after it
        if bench is not None and target in bench.merges:
            return f"Stopped. The {target} routers are kept as they were after step {bench.merges[target].adapt_steps}."
    if bench is None or not isinstance(target, str) or target not in bench.merges:
        return "Nothing to cancel."
    return f"Nothing is running. The {target} routers are as they were after step {bench.merges[target].adapt_steps}."


# ---------------------------------------------------------------------------------------------------------------
# 3. Try images


def read_upload(path: str | None, config: AppConfig) -> Image.Image:
    """An uploaded file as an RGB image: refuses empty, non-image, corrupt and huge files; converts other modes."""
    if not path:
        raise gr.Error("Upload an image first (PNG, JPEG, WebP, BMP or TIFF).")
    file = Path(path)
    if not file.is_file() or file.stat().st_size == 0:
        raise gr.Error("The uploaded file is empty. Upload an image file (PNG, JPEG, WebP, BMP or TIFF).")
    check_image_size(file, config)
    try:
        with Image.open(file) as image:
            width, height = image.size
            if width * height > config.max_pixels:
                raise gr.Error(f"The image is {width} x {height} pixels, more than the {config.max_pixels / 1e6:.0f} "
                               "megapixels this app accepts. Downscale it (the models see 32-224 px anyway) and upload again.")
            image.load()
            image = ImageOps.exif_transpose(image)
            return normalise_image(image, config)
    except gr.Error:
        raise
    except Image.DecompressionBombError as error:  # PIL refuses images this large as soon as it reads their header
        pixels = re.search(r"\((\d+) pixels\)", str(error))
        size = f" ({int(pixels.group(1)) / 1e6:.0f} megapixels)" if pixels else ""
        raise gr.Error(f"{file.name!r} is too large{size}: this app accepts at most {config.max_pixels / 1e6:.0f} "
                       "megapixels. Downscale it (the models see 32-224 px anyway) and upload again.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise gr.Error(f"{file.name!r} is not an image this app can read ({type(error).__name__}). "
                       "Upload a PNG, JPEG, WebP, BMP or TIFF image.") from None


def check_image_size(file: Path, config: AppConfig) -> None:
    """Refuse an image file over ``config.max_image_size`` (Gradio's own limit is the larger checkpoint limit)."""
    from app.session import format_size, parse_size

    limit, size = parse_size(config.max_image_size), file.stat().st_size
    if limit is not None and size > limit:
        raise gr.Error(f"{file.name!r} is {format_size(size)}, more than the {format_size(limit)} this app accepts for "
                       "an image (checkpoints have their own, larger limit). Downscale or compress it (the models see "
                       "32-224 px anyway) and upload again.")


def normalise_image(image: Image.Image, config: AppConfig) -> Image.Image:
    """Any PIL image as 8-bit RGB (grayscale, RGBA, 16-bit converted), no side longer than ``config.display_side``."""
    from wemoe.task_images import to_rgb

    mode = image.mode
    image = to_rgb(image)
    if mode != "RGB":
        gr.Info(f"Converted the {mode} image to RGB.")
    if max(image.size) > config.display_side:
        gr.Info(f"Downscaled the {image.size[0]} x {image.size[1]} image to at most {config.display_side} px per side.")
        image = image.copy()
        image.thumbnail((config.display_side, config.display_side))
    return image


def read_sketch(
    value: Any, config: AppConfig, session: Session | None = None, task_choice: str | None = None
) -> Image.Image:
    """The sketchpad's drawing (its composite image) as RGB; refuses an empty canvas.

    When the drawing is for the pocket digits task (the session's zoo has it and it is the chosen task, or auto),
    it is redrawn like that task's images (:func:`wemoe.pocket.sketch.drawing_like_digits`): cropped, scaled,
    given the task's stroke thickness and drawn as an 8x8 digit on 32x32: that is what gets classified (and previewed).
    """
    composite = value.get("composite") if isinstance(value, Mapping) else value
    if composite is None:
        raise gr.Error("The sketchpad is empty: draw a digit first.")
    if not isinstance(composite, Image.Image):
        composite = Image.open(composite) if isinstance(composite, (str, Path)) else Image.fromarray(composite)
    extrema = composite.convert("L").getextrema()
    if extrema[0] == extrema[1]:
        raise gr.Error("The sketchpad is empty: draw a digit first.")
    image = normalise_image(composite, config)
    names = session.bench.task_names if session is not None and session.bench is not None else []
    if DIGITS_TASK in names and (task_choice or AUTO_TASK) in (AUTO_TASK, DIGITS_TASK):
        from wemoe.pocket.sketch import drawing_like_digits

        image = drawing_like_digits(image)
    return image


def read_example(name: str | None, config: AppConfig) -> Image.Image:
    """A shipped example image by its ``task/file`` name."""
    if not name:
        raise gr.Error("Pick an example image first.")
    root = Path(config.examples_dir).resolve()
    path = (root / name).resolve()
    if root not in path.parents or not path.is_file():
        raise gr.Error(f"No example image {name!r}. Pick one from the gallery.")
    return read_upload(str(path), config)


def _expert_tower(session: Session, task: str):
    return session.bench.loaded.expert_tower(task)  # built once per process, shared by every session


def _wemoe_merge(session: Session) -> str | None:
    return next((n for n, r in session.bench.merges.items() if r.routes), None)


def _centroids(session: Session, name: str, config: AppConfig):
    result = session.bench.merges[name]
    key = (name, result.adapt_steps, id(result.model))
    if key not in session._centroids:
        analysis, _ = session.bench.routing_analysis(name, config.centroid_per_task)  # shared when made before
        session._centroids = {key: analysis.centroids()}
    return session._centroids[key]


ALL_TASKS = "all tasks together"


def _merged_name(session: Session) -> str | None:
    """The merge the compact predictions show: the WEMoE merge if there is one, else the latest merge."""
    merges = list(session.bench.merges)
    return _wemoe_merge(session) or (merges[-1] if merges else None)


def _routing_guess(session: Session, name: str, routing, config: AppConfig) -> tuple[str | None, str]:
    """The routers' task guess for one image's routing ``[1, L, T]`` (None when routing says nothing) and its text."""
    from wemoe.routing import guess_task_argmax, uninformative_routing

    bench = session.bench
    centroids = _centroids(session, name, config)
    why_not = uninformative_routing(routing[0], centroids.centroids)
    if why_not is not None:
        advice = ("adapt first" if "same weight" in why_not or "alike" in why_not
                  else "merge again, and adapt with a smaller learning rate")
        return None, (f"**No guess yet: {advice}.** The {name} routing of this image says nothing about its task: "
                      f"{why_not}.")
    order = centroids.distances(routing)[0].argsort().tolist()
    guess = centroids.task_names[order[0]]
    runner_up = f" (next closest: {centroids.task_names[order[1]]})" if len(order) > 1 else ""
    text = (f"**The {name} routers' guess: {guess}**{runner_up}. This image's routing, over all layers, is closest "
            f"to the average routing of {guess} test images.")
    heaviest = guess_task_argmax(routing, bench.task_names)[0]
    if heaviest != guess:
        text += (f" The heatmap's largest weight, averaged over layers, is on another expert ({heaviest}): routers "
                 "need not favour a task's own expert, so the guess compares whole routing patterns instead.")
    return guess, text


def _joint_head(session: Session) -> tuple[Any, list[str]]:
    """One head over every task's classes (``task: class`` names): predictions that assume no task."""
    bench = session.bench
    heads = bench.heads()
    shorts = dict(zip(bench.task_names, figures.short_names(bench.task_names)))
    head = torch.cat([heads[t.name] for t in bench.tasks])
    return head, [f"{shorts[t.name]}: {c}" for t in bench.tasks for c in t.classnames]


def predict(session: Session, image: Image.Image, task_choice: str | None, config: AppConfig) -> tuple[Image.Image, pd.DataFrame, str, Any]:
    """Top-5 of every model under one task's head, the routers' task guess and this image's routing heatmap.

    The head is the chosen task's, or with "auto" the routers' guess; when there is no guess (no WEMoE merge, or
    routing that says nothing, e.g. unadapted routers) the classes of all tasks together. The table returned is the
    compact one (the merged model and the expert of the task, rows in rank order) unless the session shows every model
    (:func:`prediction_view`); the full one is kept in ``session.predictions``.
    """
    bench = _bench(session)
    task_choice = task_choice or AUTO_TASK
    if task_choice != AUTO_TASK and task_choice not in bench.task_names:
        raise gr.Error(f"Unknown task {task_choice!r}. Choose one of: {', '.join(bench.task_names)}.")
    with friendly("Classifying the image"), busy(session):
        key = _prediction_key(session, image, task_choice, config)
        (table, guess_text, heatmap, task), _ = bench.cached(
            key, lambda: _predictions(session, image, task_choice, config))
    experts = {t: f"expert {short}" for t, short in zip(bench.task_names, figures.short_names(bench.task_names))}
    merged = _merged_name(session)  # compact: no rank column (the rows are in rank order), so it fits a phone
    session.prediction_columns = [merged or "pretrained", experts[task] if task is not None else "pretrained"]
    session.predictions = table
    session.image = image
    return enlarged(image), prediction_view(session), guess_text, heatmap


def _prediction_key(session: Session, image: Image.Image, task_choice: str, config: AppConfig) -> tuple | None:
    """What a classification depends on: the image's pixels, the task chosen, every merge as made (None: a merge the
    cache does not know, e.g. a custom zoo's), the routing reference images. Equal keys give equal predictions."""
    keys = tuple((name, session.bench.merge_key(name)) for name in session.bench.merges)
    if any(key is None for _, key in keys):
        return None
    pixels = hashlib.sha256(image.tobytes()).hexdigest()
    return ("predict", pixels, image.size, image.mode, task_choice, keys, config.centroid_per_task)


def _predictions(session: Session, image: Image.Image, task_choice: str, config: AppConfig) -> tuple:
    """(every model's top-5 table, the guess text, the routing heatmap, the task whose head was used)."""
    from wemoe.routing import features_and_routing, top_k, top_k_from_features
    from wemoe.task_images import encode_images

    bench = session.bench
    batch = encode_images([image], bench.zoo.preprocess)
    wemoe_name = _wemoe_merge(session)
    guess = None
    known_features = {}  # one pass through the WEMoE tower gives its routing and its predictions
    if wemoe_name is not None:
        tower = bench.merges[wemoe_name].model
        known_features[wemoe_name], routing = features_and_routing(tower, batch)
        guess, guess_text = _routing_guess(session, wemoe_name, routing, config)
        layers = sorted(routing_layers(tower))
        heatmap = figures.routing_heatmap(routing[0].numpy(), layers, bench.task_names,
                                          f"Routing of this image ({wemoe_name})")
    else:
        guess_text = "_No guess: merge with WEMoE to see which task the routers think this image is from._"
        heatmap = figures.empty_figure("Merge with WEMoE to see this image's routing per layer.")
    task = task_choice if task_choice != AUTO_TASK else guess
    if task is not None:
        head = bench.heads()[task]
        classnames = next(t.classnames for t in bench.tasks if t.name == task)
        how = "chosen by you" if task_choice != AUTO_TASK else "the routers' guess"
        guess_text += f"\n\nPredictions use the head of **{task}** ({how})."
    else:
        head, classnames = _joint_head(session)
        guess_text += (f"\n\nPredictions use the classes of **{ALL_TASKS}** (no task guessed); choose a task above "
                       "to use its head.")
    towers = [("pretrained", bench.zoo.visual)]
    towers += [(name, result.model) for name, result in bench.merges.items()]
    experts = {t: f"expert {short}" for t, short in zip(bench.task_names, figures.short_names(bench.task_names))}
    towers += [(experts[t], _expert_tower(session, t)) for t in bench.task_names]
    columns = {}
    for name, tower in towers:
        if name in known_features:
            ranked = top_k_from_features(known_features[name], head, classnames, k=5)[0]
        else:
            ranked = top_k(tower, batch, head, classnames, k=5)[0]
        columns[name] = [f"{c} ({100 * p:.1f}%)" for c, p in ranked]
    depth = max(len(v) for v in columns.values())
    table = pd.DataFrame({"rank": list(range(1, depth + 1)), **{k: v + [""] * (depth - len(v)) for k, v in columns.items()}})
    return table, guess_text, heatmap, task


def prediction_view(session: Session, show_all: bool | None = None) -> pd.DataFrame:
    """The last predictions: compact (the merged model, the expert of the task used) or every model with their rank.

    ``show_all`` None keeps the session's choice; True or False sets it (the 'every model' checkbox).
    """
    if show_all is not None:
        session.show_all_predictions = bool(show_all)
    table = session.predictions
    if table is None:
        return pd.DataFrame({"rank": []})
    if session.show_all_predictions:
        return table
    return table[list(dict.fromkeys(c for c in session.prediction_columns if c in table.columns))]


def enlarged(image: Image.Image, side: int = 192) -> Image.Image:
    """A tiny image scaled up (nearest neighbour, pixels stay sharp) so it is visible on the page."""
    factor = side // max(image.size)
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST) if factor > 1 else image


def routing_layers(tower) -> list[int]:
    """Upscaled block indices of a WEMoE tower."""
    from wemoe.moe import moe_layers

    return list(moe_layers(tower))


# ---------------------------------------------------------------------------------------------------------------
# 4. Accuracy


# the marked best merge: a translucent green under the theme's own text colour reads in light and dark mode
BEST_STYLE = "font-weight: bold; background-color: rgba(34, 160, 80, 0.32)"
REFERENCE_STYLE = "font-style: italic"


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The accuracy table as shown: a ``model`` column, then ``average``, then the tasks (short names), one decimal."""
    from wemoe.evaluate import AVERAGE

    shown = table.round(1)
    tasks = [c for c in shown.columns if c != AVERAGE]
    shown = shown[[c for c in (AVERAGE, *tasks) if c in shown.columns]]
    shown = shown.rename(columns=dict(zip(tasks, figures.short_names(tasks))))
    return shown.reset_index()


def style_table(table: pd.DataFrame):
    """The accuracy table for display (:func:`display_table`): in each column the best *merge* in bold on green;
    the reference rows (pretrained, experts, oracle) in italics and never marked."""
    from wemoe.workbench import EXPERTS, ORACLE, PRETRAINED

    shown = display_table(table)
    numeric = [c for c in shown.columns if c != "model"]
    is_merge = ~shown["model"].isin([PRETRAINED, EXPERTS, ORACLE])

    def best_merge(column: pd.Series) -> list[str]:
        merges = column[is_merge]
        best = merges.max() if merges.notna().any() else None
        return [BEST_STYLE if best is not None and m and v == best else "" for v, m in zip(column, is_merge)]

    def reference(row: pd.Series) -> list[str]:
        return ["" if is_merge[row.name] else REFERENCE_STYLE] * len(row)

    return (shown.style.format({c: "{:.1f}" for c in numeric}, na_rep="")
            .apply(reference, axis=1).apply(best_merge, subset=numeric, axis=0))


def evaluation_names(session: Session, include_oracle: bool = False) -> list[str]:
    """Rows of the accuracy table: pretrained, experts, every merge (and the oracle if asked and possible)."""
    from wemoe.workbench import EXPERTS, ORACLE, PRETRAINED

    names = [PRETRAINED, EXPERTS, *_bench(session).merges]
    if include_oracle and _wemoe_merge(session) is not None:
        names.append(ORACLE)
    return names


def evaluation_scores(session: Session, names: Sequence[str]) -> Iterator[Any]:
    """The accuracy cells (``wemoe.evaluate.Score``) of models ``names`` on every task, as they are computed.

    Reads the session and changes nothing in it, so on ZeroGPU it can run in the GPU worker (``app.layout``
    decorates it); :func:`evaluate` builds the table and updates the session from its Scores in the main process.
    """
    yield from session.bench.iter_scores(names)


@one_long_job("evaluating")
def evaluate(
    session: Session,
    include_oracle: bool = False,
    progress: Any = _noop_progress,
    scores_of: Callable[[Session, Sequence[str]], Iterator[Any]] = evaluation_scores,
    update_every: float = 0.5,
) -> Iterator[tuple]:
    """Evaluate every model on every task, yielding (table, bar chart, note, CSV path, JSON path) as cells arrive:
    at most every ``update_every`` seconds while cells are computed (none for cells from the cache), then the whole.

    ``scores_of``: what computes the cells (:func:`evaluation_scores`, on ZeroGPU inside ``spaces.GPU``); the table,
    the files and ``session.table`` are made here from what it yields.
    """
    from wemoe.evaluate import table_from_scores
    from wemoe.report import build_report

    bench = _bench(session)
    include_oracle = flag(include_oracle, "Also the WEMoE oracle")
    names = evaluation_names(session, include_oracle)
    total = len(names) * len(bench.task_names)
    scores, last_update = [], 0.0
    guard_memory(session.shared)
    with friendly("Evaluating"):
        cells = scores_of(session, names)
        while True:
            with busy(session):
                score = next(cells, None)
            if score is None:
                break
            scores.append(score)
            progress(len(scores) / total, desc=f"{score.model} on {score.task}: {score.accuracy:.1f}%")
            # every update is a table and a figure sent to the browser: a class asking for the cached table at
            # once must not pay one per cell
            if not score.cached and time.perf_counter() - last_update >= update_every:
                last_update = time.perf_counter()
                table = table_from_scores(scores, bench.task_names)
                yield (style_table(table), figures.accuracy_bars(table), f"Evaluating: {len(scores)}/{total} done.",
                       None, None)
        table = table_from_scores(scores, bench.task_names)
        counts = table.attrs["samples_per_task"]
        stem = session.workdir / f"results-{session.zoo_name}"
        table.round(2).to_csv(f"{stem}.csv")
        report = build_report(session.zoo_name or bench.zoo.name, bench.task_names, table, bench.merges)
        Path(f"{stem}.json").write_text(json.dumps(report, indent=2))
    session.table = table
    note = "Test images per task: " + ", ".join(f"{t} {n}" for t, n in counts.items()) + "."
    cached = sorted({s.model for s in scores if s.cached})
    if cached:
        note += (f" Rows computed earlier with the same settings came from the server's cache: {', '.join(cached)}.")
    yield style_table(table), figures.accuracy_bars(table), note, f"{stem}.csv", f"{stem}.json"


# ---------------------------------------------------------------------------------------------------------------
# 5. Routing


@one_long_job("mapping the routing")
def routing(
    session: Session,
    method: str = "umap",
    config: AppConfig | None = None,
    progress: Any = _noop_progress,
    maps_of: Callable[[Session, str, str, AppConfig], Iterator[tuple]] | None = None,
) -> Iterator[tuple]:
    """Per-task routing heatmaps, adaptation curves and the 2-D feature map (PCA first, then UMAP if asked).

    ``maps_of``: what computes them (:func:`routing_maps`, on ZeroGPU inside ``spaces.GPU``); the checks, the
    session's lock and its one long job stay here in the main process.
    """
    config = config or AppConfig()
    _bench(session)
    name = _wemoe_merge(session)
    if name is None:
        raise gr.Error("Merge with WEMoE first (step 2): routing belongs to the WEMoE routers.")
    if not isinstance(method, str) or method not in {"umap", "pca"}:
        raise gr.Error(f"Unknown map {method!r}: choose umap or pca.")
    with friendly("Analysing the routing"):
        progress(0.1, desc="routing the test images")
        guard_memory(session.shared)
        maps = (maps_of or routing_maps)(session, name, method, config)
        with busy(session):  # the test images through the routers: the models must not change meanwhile
            first = next(maps)
        progress(0.7 if method == "umap" else 1.0, desc="UMAP map (the first run compiles numba code)")
        yield first
        yield from maps


def routing_maps(session: Session, name: str, method: str, config: AppConfig) -> Iterator[tuple]:
    """(heatmaps, loss curve, entropy curve, feature map, note) of WEMoE merge ``name``: with the PCA map first,
    then (``method`` umap) the UMAP one.

    Reads the session and changes nothing in it, so on ZeroGPU it can run in the GPU worker; the caller
    (:func:`routing`) holds the session's lock for the first item (the pass through the routers).
    """
    from wemoe.routing import embed_2d

    bench = session.bench
    result = bench.merges[name]
    histories = {n: r.history for n, r in bench.merges.items() if r.history}
    analysis, from_cache = bench.routing_analysis(name, config.routing_per_task)
    merge_key = bench.merge_key(name)

    def embedding(kind: str):
        key = None if merge_key is None else ("embedding", merge_key, config.routing_per_task, kind)
        return bench.cached(key, lambda: embed_2d(analysis.features, kind, seed=0))[0]

    tasks = list(dict.fromkeys(analysis.labels))
    heat = figures.task_routing_heatmaps(analysis.task_average().numpy(), tasks, analysis.layers, analysis.task_names)
    curve = figures.loss_curve(histories, session.step_losses)
    entropy = figures.task_entropy_curve(result.history, name)
    dominant = analysis.dominant_expert()
    agree = sum(d == t for d, t in zip(dominant, analysis.labels)) / len(dominant)
    note = (f"{len(analysis.labels)} test images of {len(tasks)} tasks through {name} after {result.adapt_steps} "
            f"adaptation steps. For {100 * agree:.0f}% of them the most-weighted expert (layer average) is their own "
            "task's expert. Left map: images of one task should form a group; right map: do the routers' "
            "favourite experts follow those groups?")
    if from_cache:
        note += " Computed earlier with the same settings: the routing came from the server's cache."
    pca = figures.feature_maps(embedding("pca"), analysis.labels, dominant, "pca")
    yield heat, curve, entropy, pca, note + (" UMAP is computing (the first run compiles it: up to a minute)..." if method == "umap" else "")
    if method == "umap":
        points = embedding("umap")
        yield heat, curve, entropy, figures.feature_maps(points, analysis.labels, dominant, "umap"), note


# ---------------------------------------------------------------------------------------------------------------
# 6. Export


def export(session: Session, name: str | None) -> str:
    """Save merge ``name`` (static: open_clip CLIP safetensors; WEMoE: the WEMoE format) and return the file path."""
    from wemoe.export import save_model

    bench = _bench(session)
    if not isinstance(name, str) or name not in bench.merges:
        known = ", ".join(bench.merges) or "none yet: merge first (step 2)"
        raise gr.Error(f"Choose a merge to export. Merges: {known}.")
    model = bench.merges[name].model
    path = session.workdir / f"{session.zoo_name}-{name}.safetensors"
    with friendly(f"Exporting {name}"), busy(session):
        save_model(bench.zoo.clip, model, path)
    return str(path)
