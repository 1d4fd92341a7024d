"""Event handlers: the session-facing verbs (load, merge, adapt, cancel, classify, evaluate, map the routing,
export), plain functions over a :class:`~app.session.Session`, callable without a browser.

Each verb checks its input first (``app.inputs``) and changes the session only after its work succeeded; user mistakes
raise ``gr.Error`` with what to do. Long work is a generator run as the session's one long job, its steps under the
session's lock (``app.jobs``), so the page updates as it goes and Cancel stops it between steps. The words come from
``app.messages``, the tables from ``app.views``; the work from ``wemoe``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import gradio as gr
from PIL import Image

from app import figures, messages, views
from app.errors import friendly, refuse
from app.files import atomic_path
from app.inputs import (
    adapt_setting,
    adapt_value,
    adapt_values,
    adaptive_target,
    chosen_task,
    corruption_choice,
    custom_loader,
    flag,
    method_names,
    test_images_per_task,
)
from app.jobs import (
    StepsOutcome,
    StepTally,
    adapt_options,
    busy,
    device_name,
    evaluation_scores,
    guard_memory,
    light_call,
    load_workbench,
    locked_steps,
    make_merges,
    measure_step,
    no_progress,
    one_long_job,
    routing_maps,
    step_estimate,
    step_key,
    write_results,
)
from app.session import CUSTOM, AppConfig, Session
from wemoe.tasks.corruptions import corrupt_as_seen

DEFAULT_PER_TASK = adapt_setting("per_task").default  # merge's images per task unless told (the declared default)
WAITING_UPDATE_S = 2.0  # seconds between two progress lines while a session waits for a run another computes


def loaded_bench(session: Session) -> Any:
    """The session's workbench (a clear error before any zoo is loaded); says once if idle merges were dropped."""
    if session.bench is None:
        raise refuse(messages.NO_ZOO)
    session.touch()
    if session.dropped_note:
        gr.Warning(session.dropped_note)
        session.dropped_note = None
    return session.bench


def _begin(session: Session, kind: str, target: str | None = None, fresh: bool = True) -> tuple[str, str | None]:
    """Start the session's one model job (``Session.begin``), or refuse, naming what runs."""
    job = session.begin(kind, target, fresh)
    if job is None:
        raise refuse(f"This session is {session.running() or 'busy'}: wait for it to finish (or press Cancel), then "
                     "try again. Nothing was changed.", title="One job at a time")
    return job


# 1. Models -------------------------------------------------------------------------------------------------------


def load_zoo(session: Session, config: AppConfig, choice: str, samples: float | None = None, base_model: str = "",
             base_pretrained: str = "", experts_text: str = "", expert_files: Sequence[str] | None = None,
             progress: Any = no_progress, tasks_text: str = "", task_files: Sequence[str] | None = None) -> str:
    """Load a zoo, its tasks' test images and heads into the session; returns the description of what is loaded."""
    samples_per_task = test_images_per_task(samples, config)
    if samples_per_task is None and choice != CUSTOM:  # every image: unless the lesson is sized for this machine
        from app.lesson_size import scored_per_task

        samples_per_task = scored_per_task(config, choice)
    if choice == CUSTOM:
        loader = custom_loader(config, base_model, base_pretrained, experts_text, expert_files, tasks_text, task_files)
    elif choice in config.zoos:
        loader = config.zoos[choice][1]
    else:
        raise gr.Error(f"Unknown zoo {choice!r}. Choose one of: {', '.join([*config.zoos, CUSTOM])}.")
    job = _begin(session, "load", choice)
    try:
        with friendly(f"Loading the {choice} zoo"), busy(session):
            bench, reused = load_workbench(config, choice, loader, samples_per_task, progress)
    finally:
        session.finish(job)
    session.close()
    session.zoo_name, session.bench = choice, bench
    session.reset_results()
    session.image = None
    session.touch()
    session.shared = config.shared
    config.shared.track(session)
    note = "\n\n_This zoo was already loaded on this server: it is shared with every session that uses it._" \
        if reused else ""
    return messages.zoo_summary(bench) + note


def choose_experts(session: Session, tasks: Sequence[str] | None) -> None:
    """Merge only the experts of ``tasks`` (None: all of the zoo's) from now on: the session gets a workbench on that
    subset (sharing the loaded zoo and the cache); its merges and results start afresh. Refused while a job runs."""
    bench = loaded_bench(session)
    job = _begin(session, "load", "chosen experts'")
    try:
        with friendly("Choosing the experts"), busy(session):
            chosen = bench.with_tasks(None if tasks is None else list(tasks))
    finally:
        session.finish(job)
    session.bench = chosen
    session.last_merged, session.table, session.predictions = [], None, None
    session.step_losses.clear()


# 2. Merge and adapt ----------------------------------------------------------------------------------------------


def estimate(session: Session, target: str | None, steps: Any, per_task: Any) -> str:
    """Markdown: how long ``steps`` adaptation steps of ``target`` should take here (from a measured step), and
    that merging again would replace an adapted ``target``."""
    if session.bench is None or not isinstance(target, str) or target not in session.bench.merges:
        return "_Merge with WEMoE to see how long adaptation will take on this machine._"
    try:
        steps, per_task = adapt_value("steps", steps), adapt_value("per_task", per_task)
    except gr.Error as error:
        return f"_{error.message}_"
    return messages.estimate(target, steps, per_task, step_estimate(session, target, per_task),
                             session.bench.merges[target].adapt_steps, device_name())


def merge(session: Session, methods: Sequence[str], params: Mapping[str, Mapping[str, Any]],
          per_task: Any = DEFAULT_PER_TASK, default_steps: int = AppConfig.default_steps,
          progress: Any = no_progress) -> str:
    """Merge with each chosen method (parameters checked before any work); returns a status line with timings.

    All new models are made (and a WEMoE step timed) before they replace the session's merges in one swap: Cancel
    before it (:func:`cancelled`) leaves every merge as it was and raises a ``gr.Error`` titled "Cancelled" (so the
    adaptation chained after the merge does not start). Replacing an adapted merge says so.
    """
    from wemoe.methods import get_method

    bench = loaded_bench(session)
    methods = method_names(methods)
    per_task = adapt_value("per_task", per_task)
    with friendly("Checking the merge parameters"):
        resolved = {m: get_method(m).resolve((params or {}).get(m)) for m in methods}
    job = _begin(session, "merge")
    try:
        with friendly("Merging"):
            # the new models are made beside the session's (which they do not touch): its classifications go on
            # meanwhile; its lock is held only to swap them in (the job, begun above, keeps other jobs out)
            made, _ = make_merges(session, methods, resolved, per_task, progress)
        with friendly("Merging"), busy(session):
            replaced = {m: bench.merges[m].adapt_steps
                        for m in made if m in bench.merges and bench.merges[m].adapt_steps}

            def swap() -> None:
                bench.keep(made)
                for method in made:
                    session.step_losses.pop(method, None)
                session.last_merged = list(made)
                session.reset_results()

            swapped = len(made) == len(methods) and session.commit(job, swap)
    finally:
        session.finish(job)
    if not swapped:
        raise refuse("Merge cancelled: the session's merges are as they were (nothing was replaced).",
                     title="Cancelled")
    message = messages.merged(made)
    for method, count in replaced.items():
        note = messages.replaced(method, count)
        message += " " + note
        gr.Warning(note)
    adaptive = [m for m in methods if bench.merges[m].adaptive]
    if adaptive:
        message += " " + estimate(session, adaptive[-1], default_steps, per_task)
    return message


@one_long_job("adapting")
def adapt(session: Session, target: str | None, steps: Any, lr: Any, per_task: Any,
          loss: str = adapt_setting("loss").default, progress: Any = no_progress, update_every: float = 0.5,
          chained: bool = False, seed: Any = None, split: Any = None) -> Iterator[tuple[str, Any]]:
    """Adapt merge ``target`` step by step (settings checked against ``wemoe.adaptation.adapt.SETTINGS``; ``seed``,
    ``split`` None: their defaults); yields (status, loss curve) after the first and last step, at most every
    ``update_every`` s between.

    Cancel (:func:`cancelled`, or closing the generator) stops it between steps, keeping the last finished step;
    ``chained``: it follows a merge (:func:`adapt_after_merge`), so a Cancel during that merge stops it too. On ZeroGPU
    the steps run in GPU calls of :func:`app.gpu.chunk_steps` steps; Cancel stops at a chunk's end, and a call out of
    GPU time leaves the routers of the last finished chunk, with a message saying how many steps were done.
    """
    bench = loaded_bench(session)
    target = adaptive_target(bench, target)
    settings = adapt_values(steps, lr, per_task, loss, seed, split)
    steps, per_task, loss = settings["steps"], settings["per_task"], settings["loss"]
    if settings["split"] == "heldout" and bench.loaded.without_heldout():
        raise refuse(messages.no_heldout(bench.loaded.without_heldout()))
    guard_memory(session.shared)
    result, losses = bench.merges[target], session.step_losses
    start_step, tally, outcome = result.adapt_steps, StepTally(), StepsOutcome()

    def curve():
        return figures.loss_curve({target: result.history}, losses)

    def note_losses() -> None:  # under the lock, after each step: the loss each step of the history used
        kept = losses.setdefault(target, [])
        kept.extend([loss] * (len(result.history) - len(kept)))

    job = _begin(session, "adapt", target, fresh=not chained)
    try:
        known = step_estimate(session, target, per_task)
        if known is not None:  # say how long before starting (the step time was measured when merging)
            yield messages.adapt_starting(target, steps, known, device_name()), curve()
        chunk, options = adapt_options(lambda: known if known is not None else measure_step(session, target, per_task))
        # report_waiting: while another session computes this very run, wait for it item by item, outside this
        # session's lock (its classifications go on meanwhile); the run then comes from the cache
        records = bench.adapt(target, **settings, stop=session.stop.is_set, report_waiting=True, **options)
        last_yield = 0.0
        with friendly(f"Adapting {target}"), contextlib.closing(records):
            steps_taken = locked_steps(session, records, outcome, cancellable=True, chunk=chunk, after_step=note_losses,
                                       compute_slot=True)
            for record in steps_taken:
                if not getattr(record, "counts_as_step", True):  # a Workbench.adapt ``Waiting``: no step of ours
                    # the curve is unchanged (sent once) and the run's progress moves slowly: a class waiting for
                    # one run sends its page a line every WAITING_UPDATE_S, not 60 a second beside its clicks
                    if time.perf_counter() - last_yield >= max(update_every, WAITING_UPDATE_S):
                        plot = curve() if not last_yield else gr.skip()
                        last_yield = time.perf_counter()
                        yield messages.adapt_waiting(target, steps, record.progress), plot
                    continue
                per_step = tally.add(record, session.step_times, step_key(session, target, per_task))
                progress(record.step / steps, desc=f"adapting {target}: step {record.step}/{steps}")
                now = time.perf_counter()
                if record.step in (1, steps) or now - last_yield >= update_every:
                    last_yield = now
                    yield messages.adapt_progress(target, record, steps, start_step, per_step, device_name()), curve()
    finally:
        session.finish(job)
    session.reset_results()
    yield messages.adapt_outcome(target, tally.ran, steps, tally.start_loss, result, tally.elapsed, outcome.stopped,
                                 outcome.failed, settings["split"]), curve()


def adapt_after_merge(session: Session, target: str | None, steps: Any, lr: Any, per_task: Any,
                      loss: str = adapt_setting("loss").default, progress: Any = no_progress, update_every: float = 0.5,
                      seed: Any = None, split: Any = None) -> Iterator[tuple[Any, Any]]:
    """The adaptation chained after "Merge (and adapt)": adapts ``target`` only when that merge has just made it
    and was not cancelled; otherwise (also for 0 steps) yields one pair of ``gr.skip()``."""
    steps = adapt_value("steps", steps, minimum=0, hint="0 merges without adapting")
    if not steps or session.stop.is_set() or session.bench is None or not isinstance(target, str) \
            or target not in session.last_merged:
        yield gr.skip(), gr.skip()
        return
    yield from adapt(session, target, steps, lr, per_task, loss, progress, update_every, chained=True, seed=seed,
                     split=split)


def cancelled(session: Session, target: str | None = None, wait: float = 120.0) -> str:
    """Cancel: stop the session's running merge or adaptation at its next check, and say what is kept: a merge
    replaces nothing; an adaptation finishes (and keeps) the step running now, so this waits for it and names it."""
    job = session.request_stop()
    if job is not None and job[0] == "merge":
        return "Cancelled the merge: it stops at its next step and the session's merges stay as they were."
    if job is not None and job[0] == "load":
        return f"The {job[1]} zoo is loading: a load cannot be stopped halfway. It ends by itself."
    bench = session.bench
    if job is not None and job[0] == "adapt":
        target = job[1]
        if not session.lock.acquire(timeout=wait):
            return f"Stopping {target} after the step running now."
        session.lock.release()  # the running step has finished: the routers stay as after it
        if bench is not None and target in bench.merges:
            return f"Stopped. The {target} routers are kept as they were after step {bench.merges[target].adapt_steps}."
    if session.long_running is not None and job is None:
        return f"This session is {session.long_running}: Cancel stops merges and adaptations; this ends by itself."
    if bench is None or not isinstance(target, str) or target not in bench.merges:
        return "Nothing to cancel."
    return f"Nothing is running. The {target} routers are as they were after step {bench.merges[target].adapt_steps}."


# 3. Try images ---------------------------------------------------------------------------------------------------


def predict(session: Session, image: Image.Image, task_choice: str | None, config: AppConfig,
            corruption: Any = None, severity: Any = 3) -> tuple:
    """(the image enlarged, the top-5 table, the routers' guess, the image's routing heatmap) of ``Workbench.classify``.

    The head is the chosen task's; with "auto" the routers' guess, or without one all tasks' classes together. The
    table is the compact one (the merged model and the expert of the task) unless the session shows every model
    (:func:`prediction_view`); the full one is kept in ``session.predictions``. ``corruption`` (None or "none": the
    image as it is) at ``severity`` 1-5 corrupts the image as the robustness view's test images are; the session
    keeps the image uncorrupted, so another corruption or task reclassifies the original.
    """
    bench = loaded_bench(session)
    task, (corruption, severity) = chosen_task(bench, task_choice), corruption_choice(corruption, severity)
    # marked light for its own session before its lock (the session's long job lets it in between steps), for every
    # session only once it holds the lock: one waiting for its session's step must not hold every long job
    with friendly("Classifying the image"), session.light_first.light(), busy(session), light_call(session):
        seen = image if corruption is None else corrupt_as_seen(image, bench.zoo.preprocess, corruption, severity)
        # only what the page shows; the 'every model' checkbox computes the rest (prediction_view)
        every = session.show_all_predictions
        (result,) = bench.classify([seen], task, k=5, centroid_per_task=config.centroid_per_task,
                                   models=None if every else "shown")
    session.prediction_columns = views.compact_columns(result, bench)
    session.predictions = views.prediction_table(result, bench.task_names)
    session.image = image
    # what prediction_view needs to fill in every model later (session.py keeps no such field: set here)
    session.prediction_inputs = None if every else (bench, seen, task, config.centroid_per_task)
    return (views.enlarged(seen), prediction_view(session), messages.guess_text(result),
            views.image_heatmap(result, bench.task_names))


def prediction_view(session: Session, show_all: bool | None = None) -> Any:
    """The last predictions: compact (the merged model, the expert of the task used) or every model with their rank.

    ``show_all`` None keeps the session's choice; True or False sets it (the 'every model' checkbox). The first
    time every model is shown for an image, the models :func:`predict` left out are computed (the same numbers as a
    full classification).
    """
    if show_all is not None:
        session.show_all_predictions = bool(show_all)
    inputs = getattr(session, "prediction_inputs", None)
    if session.show_all_predictions and inputs is not None:
        bench, seen, task, centroid_per_task = inputs
        with friendly("Classifying the image"), session.light_first.light(), busy(session), light_call(session):
            (result,) = bench.classify([seen], task, k=5, centroid_per_task=centroid_per_task)
        session.predictions = views.prediction_table(result, bench.task_names)
        session.prediction_inputs = None
    return views.shown_predictions(session.predictions, session.prediction_columns, session.show_all_predictions)


# 4. Accuracy -----------------------------------------------------------------------------------------------------


@one_long_job("evaluating")
def evaluate(session: Session, include_oracle: bool = False, progress: Any = no_progress,
             scores_of: Callable[[Session, Sequence[str]], Iterator[Any]] = evaluation_scores,
             update_every: float = 0.5) -> Iterator[tuple]:
    """Evaluate every model on every task, yielding (table, bar chart, note, CSV path, JSON path) as cells arrive:
    at most every ``update_every`` seconds while cells are computed (none for cells from the cache), then the whole.

    ``scores_of``: what computes the cells (``app.jobs.evaluation_scores``, on ZeroGPU inside ``spaces.GPU``); the
    table, the files and ``session.table`` are made here from what it yields.
    """
    from wemoe.evaluation.evaluate import table_from_scores
    from wemoe.workbench.workbench import EXPERTS, ORACLE, PRETRAINED

    bench = loaded_bench(session)
    include_oracle = flag(include_oracle, "Also the WEMoE oracle")
    names = [PRETRAINED, EXPERTS, *bench.merges, *([ORACLE] if include_oracle and bench.routed_merge() else [])]
    total = len(names) * len(bench.task_names)
    scores, last_update = [], 0.0
    guard_memory(session.shared)
    with friendly("Evaluating"):
        for score in locked_steps(session, scores_of(session, names)):
            scores.append(score)
            progress(len(scores) / total, desc=f"{score.model} on {score.task}: {score.accuracy:.1f}%")
            # every update is a table and a figure sent to the browser: a class asking for the cached table at once
            # must not pay one per cell
            if not score.cached and time.perf_counter() - last_update >= update_every:
                last_update = time.perf_counter()
                table = table_from_scores(scores, bench.task_names)
                yield (views.style_table(table), figures.accuracy_bars(table),
                       f"Evaluating: {len(scores)}/{total} done.", None, None)
        table = table_from_scores(scores, bench.task_names)
        csv_path, json_path = write_results(session, table)
    session.table = table
    note = messages.evaluation_note(table.attrs["samples_per_task"], sorted({s.model for s in scores if s.cached}))
    yield views.style_table(table), figures.accuracy_bars(table), note, csv_path, json_path


# 5. Routing ------------------------------------------------------------------------------------------------------


@one_long_job("mapping the routing")
def routing(session: Session, method: str = "umap", config: AppConfig | None = None, progress: Any = no_progress,
            maps_of: Callable[[Session, str, str, AppConfig], Iterator[tuple]] | None = None) -> Iterator[tuple]:
    """Per-task routing heatmaps, adaptation curves and the 2-D feature map (PCA first, then UMAP if asked).

    ``maps_of``: what computes them (``app.jobs.routing_maps``, on ZeroGPU inside ``spaces.GPU``); the checks, the
    session's lock and its one long job stay here in the main process.
    """
    config = config or AppConfig()
    name = loaded_bench(session).routed_merge()
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


# 6. Export -------------------------------------------------------------------------------------------------------


def exported_merge(session: Session, name: Any) -> Any:
    """The session's workbench, once ``name`` is checked to be one of its merges (a clear error otherwise)."""
    bench = loaded_bench(session)
    if not isinstance(name, str) or name not in bench.merges:
        known = ", ".join(bench.merges) or "none yet: merge first (step 2)"
        raise gr.Error(f"Choose a merge to export. Merges: {known}.")
    return bench


def export_with_card(session: Session, name: str | None) -> str:
    """Save merge ``name`` as a zip of the folder ``python -m wemoe merge --out FOLDER`` writes (the weights, its
    config, the results JSON and a model card with the accuracy table and the command that makes it again); returns
    the zip's path. The table (pretrained, each expert, this merge) comes from the shared cache when a class made it."""
    import shutil
    import tempfile

    exported_merge(session, name)  # before any path is made of the name
    path = session.workdir / f"{session.zoo_name}-{name}.zip"
    with tempfile.TemporaryDirectory(dir=session.workdir) as folder, atomic_path(path) as written:
        write_card_folder(session, name, folder)
        shutil.make_archive(str(written.with_suffix("")), "zip", folder)  # writes ``written`` itself
    return str(path)


def write_card_folder(session: Session, name: str | None, folder: Any) -> None:
    """Write merge ``name`` into ``folder`` as ``python -m wemoe merge --out FOLDER`` does (see
    :func:`export_with_card`)."""
    from wemoe.evaluation.card import export_folder
    from wemoe.evaluation.report import build_report
    from wemoe.workbench.workbench import EXPERTS, PRETRAINED

    bench = exported_merge(session, name)
    result = bench.merges[name]
    with friendly(f"Exporting {name} with its model card"), busy(session):
        table = bench.evaluate([PRETRAINED, EXPERTS, name])
        report = build_report(session.zoo_name or "custom", bench.task_names, table, {name: result})
        adaptation = last_run_settings(result)
        export_folder(folder, bench, name, table, report, adaptation,
                      reproduce_command(session.zoo_name, bench, name, adaptation))


def last_run_settings(result: Any) -> dict[str, Any] | None:
    """The settings of the merge's latest adaptation run (its cache key ends with them), or None when not adapted."""
    from wemoe.workbench.cached_runs import ADAPT_RUN

    if not result.adapt_steps or not isinstance(result.key, tuple) or not isinstance(result.key[-1], tuple):
        return None
    last = result.key[-1]
    return dict(zip(ADAPT_RUN, last, strict=True)) if len(last) == len(ADAPT_RUN) else None


def reproduce_command(zoo: str | None, bench: Any, name: str, adaptation: Mapping[str, Any] | None) -> str:
    """The ``python -m wemoe merge`` command that makes merge ``name`` again (a custom zoo: named by its sources)."""
    import shlex

    from wemoe.__main__ import ADAPT_FLAGS

    result = bench.merges[name]
    words = ["python", "-m", "wemoe", "merge", "--zoo", zoo or "custom", "--tasks", ",".join(bench.task_names),
             "--method", result.method]
    words += [f"--param={result.method}.{key}={value}" for key, value in result.params.items()]
    if adaptation:
        for setting, value in adaptation.items():
            words += [ADAPT_FLAGS[setting][0], str(result.adapt_steps if setting == "steps" else value)]
    else:
        words += [ADAPT_FLAGS["steps"][0], "0"]
    return shlex.join([*words, "--out", f"{name}-merge"])


def export(session: Session, name: str | None) -> str:
    """Save merge ``name`` (static: open_clip CLIP safetensors; WEMoE: the WEMoE format) and return the file path."""
    from wemoe.evaluation.export import save_model

    bench = exported_merge(session, name)
    path = session.workdir / f"{session.zoo_name}-{name}.safetensors"
    with friendly(f"Exporting {name}"), busy(session), atomic_path(path) as written:
        save_model(bench.zoo.clip, bench.merges[name].model, written)
    return str(path)
