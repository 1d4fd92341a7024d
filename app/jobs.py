"""Running a session's work: one computation on its models at a time (its lock), one long job at a time, steps taken
under the lock so that Cancel and other events see the models between steps, and the computing parts of the long
jobs (evaluation cells, routing maps), which read a session and change nothing, so on ZeroGPU they run in the GPU
worker (``app.layout`` decorates them) while the session is updated in the main process.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from app import figures, messages
from app.errors import refuse
from app.files import atomic_path
from app.gpu import adapt_device, chunk_steps, zero_gpu, zero_gpu_runner
from app.session import CUSTOM, AppConfig, Session
from app.shared import MemoryBudgetExceeded, Shared, trim_free_memory
from wemoe.errors import WemoeError

log = logging.getLogger(__name__)


def step_key(session: Session, name: str, per_task: int) -> tuple:
    """What an adaptation step's time depends on (``Session.step_times`` keys): the merge's zoo, method and
    parameters (not how far it adapted), the images per task and the device."""
    return merge_step_key(session.bench, session.bench.merges[name], per_task)


def merge_step_key(bench: Any, result: Any, per_task: int) -> tuple:
    """:func:`step_key` of merge ``result`` of workbench ``bench`` (a shared zoo by its name, a session's own by
    identity)."""
    zoo = bench.cache_key if bench.cache_key is not None else id(bench)
    return (zoo, result.method, repr(sorted(result.params.items())), per_task, str(adapt_device()))


def step_estimate(session: Session, name: str, per_task: int) -> float | None:
    """Seconds per adaptation step of merge ``name`` from the latest steps run or timed on this machine, or None."""
    if session.bench is None or name not in session.bench.merges:
        return None
    return session.step_times.estimate(step_key(session, name, per_task))


def measure_step(session: Session, name: str, per_task: int) -> float:
    """Seconds of one adaptation step of merge ``name`` on this machine (measured without changing the model)."""
    from wemoe.adaptation.adapt import time_step

    bench = session.bench
    seconds = time_step(bench.merges[name].model, bench.data(), bench.heads(), per_task=per_task, device=adapt_device())
    session.step_times.record(step_key(session, name, per_task), seconds)
    return seconds


def run_beside(work: Callable[[], Any], abandon: Callable[[], None], every: float = 1.0) -> Generator[float, None, Any]:
    """Run ``work()`` in a thread of its own and return its result (or raise its error), yielding the seconds so far
    every ``every`` seconds meanwhile.

    An event whose generator waits here stays able to notice that its caller went away: gradio closes the generator
    of a cancelled event (the page's Cancel, a client's ``job.cancel()``, a closed tab) at its next yield, and closing
    this one calls ``abandon()`` (say, the session's stop flag) while ``work`` still runs, so the work stops at its
    next check instead of finishing unseen. The thread runs in a copy of the caller's context (gradio's toasts work).
    """
    context = contextvars.copy_context()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = context.run(work)
        except BaseException as error:  # noqa: BLE001 - handed to the caller below
            outcome["error"] = error

    thread = threading.Thread(target=target, name="merge-explorer-beside", daemon=True)
    start = time.perf_counter()
    thread.start()
    try:
        while thread.is_alive():
            thread.join(every)
            if thread.is_alive():
                yield time.perf_counter() - start
    finally:
        if thread.is_alive():  # closed while the work runs: the caller is gone
            abandon()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def no_progress(fraction: float, desc: str = "", **_: Any) -> None:
    """A ``gr.Progress`` stand-in that shows nothing (verbs called without a page)."""


@contextlib.contextmanager
def busy(session: Session, timeout: float = 120.0) -> Iterator[None]:
    """Hold the session's lock (one computation on its models at a time); waits for a running step to finish."""
    if not session.lock.acquire(timeout=timeout):
        raise refuse("This session is busy with another job. Wait for it to finish, or press Cancel.")
    try:
        yield
    finally:
        session.lock.release()


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
        trim_free_memory()  # its activations and scratch are free now: give them back (the RSS is what a Space counts)


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


@contextlib.contextmanager
def light_call(session: Session) -> Iterator[None]:
    """A light call (a classification): long jobs of every session hold their next step while it runs
    (``app.shared.LightFirst``)."""
    gate = session.shared.light_first if session.shared is not None else None
    with gate.light() if gate is not None else contextlib.nullcontext():
        yield


def light_first(session: Session) -> None:
    """Before a long job's next step: wait (at most two seconds) while light calls run (``app.shared.LightFirst``)."""
    if session.shared is not None:
        session.shared.light_first.wait()


@dataclass
class StepsOutcome:
    """How :func:`locked_steps` ended: stopped by Cancel, or by a failed chunk (``failed``: its error)."""

    stopped: bool = False
    failed: BaseException | None = None


def locked_steps(
    session: Session,
    steps: Iterator[Any],
    outcome: StepsOutcome | None = None,
    cancellable: bool = False,
    chunk: int = 0,
    after_step: Callable[[], None] | None = None,
    compute_slot: bool = False,
) -> Iterator[Any]:
    """The items of ``steps``, each taken under the session's lock (the models do not change meanwhile).

    ``compute_slot``: each item is taken in one of the process's compute slots (``Shared.compute_slots``, one per
    CPU), except after a ``Waiting`` item (the run is another session's; waiting computes nothing), so that the
    long-job queue's threads can serve waiting and cached jobs while adaptations of their own share the CPU.

    ``cancellable``: Cancel (``session.stop``), checked under the lock, ends it before the next step (with chunks of
    ``chunk`` steps, only at a chunk's end, where the model and its history agree). With chunks a failed chunk (a GPU
    call out of time) ends it too, its error kept in ``outcome.failed``; a ``WemoeError`` always propagates.
    ``after_step`` runs under the lock after each step taken. Each step waits first while light calls run.
    """
    outcome = outcome if outcome is not None else StepsOutcome()
    taken, waiting = 0, False
    slots = session.shared.compute_slots if compute_slot and session.shared is not None else None
    while True:
        light_first(session)  # a classification running now goes first: it takes 0.05 s alone, seconds beside us
        session.light_first.wait()  # and one of this session waiting for its lock takes it before our next step
        # the slot before the session's lock: a classification of this session never waits for a slot
        with (slots if slots is not None and not waiting else contextlib.nullcontext()), busy(session):
            if cancellable and session.stop.is_set() and (not chunk or taken % chunk == 0):
                outcome.stopped = True
                return
            try:
                item = next(steps, None)
            except WemoeError:
                raise
            except Exception as error:  # noqa: BLE001 - a GPU call that failed or ran out of time
                if not chunk:
                    raise
                log.warning("a chunk failed after %d steps: %s", taken, error)
                outcome.failed, item = error, None
            if after_step is not None:
                after_step()
        if item is None:
            outcome.stopped = cancellable and (outcome.stopped or session.stop.is_set())
            return
        waiting = not getattr(item, "counts_as_step", True)  # a Workbench.adapt ``Waiting`` item is no step
        taken += not waiting
        yield item


def device_name() -> str:
    """Where adaptation runs, for messages: GPU or CPU."""
    if zero_gpu():
        return "ZeroGPU Space"  # the steps run in GPU chunks (app.gpu.zero_gpu_runner)
    return "GPU" if adapt_device() is None and torch.cuda.is_available() else "CPU"


def adapt_options(per_step: Callable[[], float]) -> tuple[int, dict[str, Any]]:
    """``(chunk steps, Workbench.adapt options)``: on ZeroGPU, chunks sized from ``per_step()`` seconds, each run in
    a GPU call; elsewhere one run on the adaptation device (chunk 0)."""
    if not zero_gpu():
        return 0, {"device": adapt_device()}
    seconds = per_step()
    chunk = chunk_steps(seconds)
    return chunk, {"device": None, "runner": zero_gpu_runner(seconds), "chunk_steps": chunk}


def load_workbench(config: AppConfig, choice: str, loader: Callable, samples: int | None,
                   progress: Callable[..., None]) -> tuple[Any, bool]:
    """``(workbench, reused)`` of zoo ``choice``: a custom zoo is the session's own (never shared); any other is
    loaded once per process and shared, read-only, by every session that picks it (``reused``: it was already)."""
    from wemoe.workbench.workbench import Workbench  # when a zoo loads: building the page loads no model code

    if choice != CUSTOM:
        guard_memory(config.shared)
        return config.shared.workbench(choice, samples, loader, lambda f, m: progress(f, desc=m))
    zoo, tasks = loader(lambda fraction, message: progress(0.6 * fraction, desc=message))
    bench = Workbench(zoo, tasks, samples=samples, seed=0)
    bench.data(progress=lambda f, m: progress(0.6 + 0.3 * f, desc=m))
    progress(0.95, desc="building zero-shot heads")
    bench.heads()
    return bench, False


def write_results(session: Session, table: Any) -> tuple[str, str]:
    """The accuracy table as the downloads: a CSV and the JSON report (everything needed to rerun it)."""
    from wemoe.evaluation.report import build_report

    bench = session.bench
    stem = session.workdir / f"results-{session.zoo_name}"
    with atomic_path(f"{stem}.csv") as csv:
        table.round(2).to_csv(csv)
    report = build_report(session.zoo_name or bench.zoo.name, bench.task_names, table, bench.merges)
    with atomic_path(f"{stem}.json") as written:
        written.write_text(json.dumps(report, indent=2))
    return f"{stem}.csv", f"{stem}.json"


def make_merges(session: Session, methods: Sequence[str], resolved: Mapping[str, Mapping[str, Any]], per_task: int,
                progress: Callable[..., None]) -> tuple[dict[str, Any], dict[str, float]]:
    """``(made, seconds)``: each method's merge (from the cache when made before) and the seconds of one adaptation
    step of each adaptive one (the recent figure of ``Session.step_times``, timed when there is none and no other
    session is timing it), stopping at
    Cancel; the session's merges are not touched (the caller holds its lock)."""
    from wemoe.adaptation.adapt import time_step  # when merging: building the page loads no model code

    bench = session.bench
    seconds: dict[str, float] = {}
    light_first(session)  # a class's clicks first: 30 students merging at once took the cores from their answers
    made = bench.build_many({m: resolved[m] for m in methods}, stop=session.stop.is_set,
                            on_method=lambda i, m: progress(i / len(methods), desc=f"merging {m}"))
    device = adapt_device()
    for method, result in made.items():
        if result.adaptive and not session.stop.is_set():
            progress(0.95, desc=f"timing one adaptation step of {method}")
            key = merge_step_key(bench, result, per_task)
            recent = session.step_times.estimate_or_time(key, lambda result=result: time_step(
                result.model, bench.data(), bench.heads(), per_task=per_task, device=device))
            if recent is not None:  # None: another session is timing it now (its figure serves this one later)
                seconds[method] = recent
    return made, seconds


def step_clock() -> float:
    """The clock that tells a computed step from a replayed one (:meth:`StepTally.add`)."""
    return time.perf_counter()


@dataclass
class StepTally:
    """What an adaptation run has done so far: its steps, seconds and first loss."""

    ran: int = 0
    elapsed: float = 0.0
    start_loss: float | None = None
    first_elapsed: float = 0.0
    previous_elapsed: float = 0.0
    first_seen: float = 0.0
    recorded: bool = False  # a step of this run is in the step times (its first replaced the older figure)

    def add(self, record: Any, step_times: Any, key: tuple, now: float | None = None) -> float:
        """Count step ``record`` and record its seconds in ``step_times`` (``app.shared.StepTimes``) under ``key``
        (not for a run replayed from the cache, whose steps arrive faster than they once took); returns the seconds
        per step of this run (the first step, which also pays one-off warm-up costs, left out; before a second step,
        the recent figure)."""
        now = step_clock() if now is None else now
        self.ran, self.elapsed = self.ran + 1, record.elapsed
        self.start_loss = record.loss if self.start_loss is None else self.start_loss
        if record.step == 1 or self.ran == 1:
            self.first_elapsed = self.previous_elapsed = record.elapsed
            self.first_seen = now
            recent = step_times.estimate(key)
            return recent if recent is not None else record.elapsed / record.step
        if now - self.first_seen >= 0.5 * (record.elapsed - self.first_elapsed):  # computed now, not replayed
            step_times.record(key, record.elapsed - self.previous_elapsed, new_run=not self.recorded)
            self.recorded = True
        self.previous_elapsed = record.elapsed
        return (record.elapsed - self.first_elapsed) / (self.ran - 1)


def evaluation_scores(session: Session, names: Sequence[str]) -> Iterator[Any]:
    """The accuracy cells (``wemoe.evaluation.evaluate.Score``) of models ``names`` on every task, as they are computed.

    Reads the session and changes nothing in it, so on ZeroGPU it can run in the GPU worker;
    ``handlers.evaluate`` builds the table and updates the session from its Scores in the main process.
    """
    yield from session.bench.iter_scores(names)


def routing_maps(session: Session, name: str, method: str, config: AppConfig) -> Iterator[tuple]:
    """(heatmaps, loss curve, entropy curve, feature map, note) of WEMoE merge ``name``: with the PCA map first,
    then (``method`` umap) the UMAP one.

    Reads the session and changes nothing in it, so on ZeroGPU it can run in the GPU worker; the caller
    (``handlers.routing``) holds the session's lock for the first item (the pass through the routers).
    """
    from wemoe.moe.routing import embed_2d  # with the first map: building the page imports no routing code

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
    agree = sum(d == t for d, t in zip(dominant, analysis.labels, strict=True)) / len(dominant)
    note = messages.routing_note(name, len(analysis.labels), len(tasks), result.adapt_steps, agree, from_cache)
    pca = figures.feature_maps(embedding("pca"), analysis.labels, dominant, "pca")
    computing = " UMAP is computing (the first run compiles it: up to a minute)..." if method == "umap" else ""
    yield heat, curve, entropy, pca, note + computing
    if method == "umap":
        yield heat, curve, entropy, figures.feature_maps(embedding("umap"), analysis.labels, dominant, "umap"), note
