"""Event handlers: plain functions over a :class:`~app.session.Session`, callable without a browser.

Each handler checks its input first and changes the session only after its work succeeded, so bad input leaves
the loaded models and results as they were. User mistakes raise ``gr.Error`` with what to do (gradio shows the
message, never a traceback). Long work is a generator (adaptation, evaluation, routing maps) so the page updates
as it goes and a Cancel button can stop it between steps. No merge math here: everything calls ``wemoe``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from app import figures
from app.gpu import adapt_device
from app.session import CUSTOM, AppConfig, Session
from wemoe.adapt import DEFAULT_LOSS, LOSSES
from wemoe.errors import WemoeError

log = logging.getLogger(__name__)
AUTO_TASK = "auto (the routers' guess)"
DIGITS_TASK = "pocket_digits"  # drawings for this task are redrawn like its images (read_sketch)
MAX_STEPS = 5000
NO_ZOO = "Load a zoo first (step 1, 'Load zoo')."


def _noop_progress(fraction: float, desc: str = "", **_: Any) -> None:
    pass


@contextlib.contextmanager
def friendly(action: str) -> Iterator[None]:
    """Turn any failure inside into a ``gr.Error`` saying what failed and why (the traceback goes to the log)."""
    try:
        yield
    except gr.Error:
        raise
    except WemoeError as error:
        raise gr.Error(f"{action}: {error}") from None
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        log.exception("%s failed", action)
        raise gr.Error(f"{action} failed: {error}. Nothing was changed; check the input and try again.") from None


@contextlib.contextmanager
def busy(session: Session, timeout: float = 120.0) -> Iterator[None]:
    """Hold the session's lock (one computation on its models at a time); waits for a running step to finish."""
    if not session.lock.acquire(timeout=timeout):
        raise gr.Error("This session is busy with another job. Wait for it to finish, or press Cancel.")
    try:
        yield
    finally:
        session.lock.release()


def _bench(session: Session):
    if session.bench is None:
        raise gr.Error(NO_ZOO)
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
) -> str:
    """Load a zoo, its tasks' test images and heads into the session; returns the description of what is loaded."""
    from wemoe.workbench import Workbench

    samples_per_task = int(samples) if samples else (config.samples or None)
    if samples_per_task is not None and samples_per_task < 1:
        raise gr.Error("Test images per task must be at least 1 (or 0 for every image).")
    if choice == CUSTOM:
        spec = custom_spec(base_model, base_pretrained, experts_text, expert_files)

        def loader(report):
            from wemoe.zoo import load_zoo as library_load_zoo

            return library_load_zoo(spec, progress=report), None
    elif choice in config.zoos:
        loader = config.zoos[choice][1]
    else:
        raise gr.Error(f"Unknown zoo {choice!r}. Choose one of: {', '.join([*config.zoos, CUSTOM])}.")

    def report(fraction: float, message: str) -> None:
        progress(0.6 * fraction, desc=message)

    with friendly(f"Loading the {choice} zoo"), busy(session):
        zoo, tasks = loader(report)
        bench = Workbench(zoo, tasks, samples=samples_per_task, seed=0)
        bench.data(progress=lambda f, m: progress(0.6 + 0.3 * f, desc=m))
        progress(0.95, desc="building zero-shot heads")
        bench.heads()
    session.close()
    session.zoo_name, session.bench = choice, bench
    session.reset_results()
    session.image = None
    return zoo_summary(session)


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


def estimate(session: Session, target: str | None, steps: float, per_task: float) -> str:
    """Markdown: how long ``steps`` adaptation steps of ``target`` should take here (from a measured step)."""
    if session.bench is None or not target or target not in session.bench.merges:
        return "_Merge with WEMoE to see how long adaptation will take on this machine._"
    seconds = session.step_seconds.get((target, int(per_task)))
    if seconds is None:
        return f"_The time per step of {target} with {int(per_task)} images per task is measured at its first step._"
    total = seconds * int(steps)
    return (f"Estimated time: **{total:.0f} s** for {int(steps)} steps of {target} on this {_device_name()} "
            f"({seconds:.3f} s per step measured).")


def merge(
    session: Session, methods: Sequence[str], params: Mapping[str, Mapping[str, Any]], per_task: float = 16, default_steps: int = 100
) -> str:
    """Merge with each chosen method (parameters checked before any work); returns a status line with timings."""
    from wemoe.methods import get_method

    bench = _bench(session)
    methods = list(methods or [])
    if not methods:
        raise gr.Error("Choose at least one merge method.")
    with friendly("Checking the merge parameters"):
        resolved = {m: get_method(m).resolve(params.get(m)) for m in methods}
    parts = []
    with friendly("Merging"), busy(session):
        for method in methods:
            result = bench.merge(method, resolved[method])
            parts.append(f"{method} ({result.merge_seconds:.1f} s)")
        session.reset_results()
        session.last_merged = list(methods)
        for method in methods:
            if bench.merges[method].adaptive:
                measure_step(session, method, int(per_task))
    message = f"Merged: {', '.join(parts)}."
    adaptive = [m for m in methods if bench.merges[m].adaptive]
    if adaptive:
        message += " " + estimate(session, adaptive[-1], default_steps, per_task)
    return message


def adapt(
    session: Session,
    target: str | None,
    steps: float,
    lr: float,
    per_task: float,
    loss: str = DEFAULT_LOSS,
    progress: Any = _noop_progress,
    update_every: float = 0.5,
) -> Iterator[tuple[str, Any]]:
    """Adapt merge ``target`` step by step with ``loss`` (``entropy``, the paper's, or ``im``); yields (status,
    loss curve) after the first and last step and at most every ``update_every`` seconds between. Stopping keeps the
    last finished step."""
    bench = _bench(session)
    if not target or target not in bench.merges:
        raise gr.Error("Merge with WEMoE first: adaptation trains the routers of a WEMoE (or AdaMerging) merge.")
    if not bench.merges[target].adaptive:
        raise gr.Error(f"The {target} merge has nothing to adapt: only WEMoE and AdaMerging merges adapt.")
    steps, per_task = int(steps), int(per_task)
    if not 1 <= steps <= MAX_STEPS:
        raise gr.Error(f"Adaptation steps must be between 1 and {MAX_STEPS}, got {steps}.")
    if not (lr and lr > 0 and math.isfinite(lr)):
        raise gr.Error(f"The learning rate must be a positive number, got {lr}.")
    if per_task < 1:
        raise gr.Error("Images per task must be at least 1.")
    if loss not in LOSSES:
        raise gr.Error(f"Unknown adaptation loss {loss!r}; choose one of {', '.join(LOSSES)}.")
    result = bench.merges[target]
    start_step, start_loss = result.adapt_steps, None
    known = session.step_seconds.get((target, per_task))
    if known is not None:  # say how long before starting (the step time was measured when merging)
        note = (f"Adapting {target}: {steps} steps, about {known * steps:.0f} s on this {_device_name()} "
                f"({known:.3f} s per step measured)...")
        yield note, figures.loss_curve({target: result.history})
    records = bench.adapt(target, steps=steps, lr=float(lr), per_task=per_task, device=adapt_device(), loss=loss)
    last_yield, status = 0.0, ""
    with friendly(f"Adapting {target}"), contextlib.closing(records):
        while True:
            with busy(session):
                record = next(records, None)
            if record is None:
                break
            start_loss = record.loss if start_loss is None else start_loss
            if record.step == 1:
                session.step_seconds[(target, per_task)] = record.elapsed
            per_step = record.elapsed / record.step
            remaining = per_step * (steps - record.step)
            status = (f"{target}: step {record.step}/{steps} (total {start_step + record.step}), loss "
                      f"{record.loss:.3f}; about {remaining:.0f} s left on this {_device_name()} "
                      f"(estimated total {per_step * steps:.0f} s).")
            progress(record.step / steps, desc=f"adapting {target}: step {record.step}/{steps}")
            now = time.perf_counter()
            if record.step in (1, steps) or now - last_yield >= update_every:
                last_yield = now
                yield status, figures.loss_curve({target: result.history})
    done = (f"Adapted {target}: {steps} steps in {result.history[-1].elapsed if result.history else 0:.1f} s, "
            f"loss {start_loss if start_loss is not None else float('nan'):.3f} -> "
            f"{result.history[-1].loss if result.history else float('nan'):.3f} ({result.adapt_steps} steps in all).")
    session.reset_results()
    yield done, figures.loss_curve({target: result.history})


def cancelled(session: Session, target: str | None) -> str:
    """Status after Cancel: where the routers were kept."""
    if session.bench is None or not target or target not in session.bench.merges:
        return "Nothing to cancel."
    return f"Stopped. The {target} routers are kept as they were after step {session.bench.merges[target].adapt_steps}."


# ---------------------------------------------------------------------------------------------------------------
# 3. Try images


def read_upload(path: str | None, config: AppConfig) -> Image.Image:
    """An uploaded file as an RGB image: refuses empty, non-image, corrupt and huge files; converts other modes."""
    if not path:
        raise gr.Error("Upload an image first (PNG, JPEG, WebP, BMP or TIFF).")
    file = Path(path)
    if not file.is_file() or file.stat().st_size == 0:
        raise gr.Error("The uploaded file is empty. Upload an image file (PNG, JPEG, WebP, BMP or TIFF).")
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
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as error:
        raise gr.Error(f"{file.name!r} is not an image this app can read ({type(error).__name__}). "
                       "Upload a PNG, JPEG, WebP, BMP or TIFF image.") from None


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
    if task not in session.expert_towers:
        session.expert_towers[task] = session.bench.zoo.expert_visual(task)
    return session.expert_towers[task]


def _wemoe_merge(session: Session) -> str | None:
    return next((n for n, r in session.bench.merges.items() if r.routes), None)


def _centroids(session: Session, name: str, config: AppConfig):
    from wemoe.routing import analyse_routing

    result = session.bench.merges[name]
    key = (name, result.adapt_steps, id(result.model))
    if key not in session._centroids:
        analysis = analyse_routing(result.model, session.bench.data(), per_task=config.centroid_per_task)
        session._centroids = {key: analysis.centroids()}
    return session._centroids[key]


def predict(session: Session, image: Image.Image, task_choice: str | None, config: AppConfig) -> tuple[Image.Image, pd.DataFrame, str, Any]:
    """Top-5 of every model under one task's head, the routers' task guess and this image's routing heatmap."""
    from wemoe.routing import features_and_routing, guess_task_argmax, top_k, top_k_from_features
    from wemoe.task_images import encode_images

    bench = _bench(session)
    task_choice = task_choice or AUTO_TASK
    if task_choice != AUTO_TASK and task_choice not in bench.task_names:
        raise gr.Error(f"Unknown task {task_choice!r}. Choose one of: {', '.join(bench.task_names)}.")
    with friendly("Classifying the image"), busy(session):
        batch = encode_images([image], bench.zoo.preprocess)
        wemoe_name = _wemoe_merge(session)
        guess_text, heatmap, guess = "", None, None
        known_features = {}  # one pass through the WEMoE tower gives its routing and its predictions
        if wemoe_name is not None:
            tower = bench.merges[wemoe_name].model
            known_features[wemoe_name], routing = features_and_routing(tower, batch)
            centroids = _centroids(session, wemoe_name, config)
            order = centroids.distances(routing)[0].argsort().tolist()
            guess = centroids.task_names[order[0]]
            runner_up = f"; next closest: {centroids.task_names[order[1]]}" if len(order) > 1 else ""
            dominant = guess_task_argmax(routing, bench.task_names)[0]
            guess_text = (f"The **{wemoe_name}** routers think this image is from **{guess}**: its routing (all layers) is "
                          f"closest to the average routing of {guess} test images{runner_up}. The expert they weigh most, "
                          f"averaged over layers: {dominant}.")
            layers = sorted(routing_layers(tower))
            heatmap = figures.routing_heatmap(routing[0].numpy(), layers, bench.task_names,
                                              f"Routing of this image ({wemoe_name})")
        else:
            guess_text = "_Merge with WEMoE to see which task the routers think this image is from._"
            heatmap = figures.empty_figure("Merge with WEMoE to see this image's routing per layer.")
        task = guess if task_choice == AUTO_TASK and guess is not None else (
            task_choice if task_choice != AUTO_TASK else bench.task_names[0])
        how = "chosen by you" if task_choice != AUTO_TASK else ("the routers' guess" if guess else "the first task: no WEMoE yet")
        guess_text += f"\n\nPredictions use the head of **{task}** ({how})."
        head = bench.heads()[task]
        classnames = next(t.classnames for t in bench.tasks if t.name == task)
        towers = [("pretrained", bench.zoo.visual)]
        towers += [(name, result.model) for name, result in bench.merges.items()]
        towers += [(f"expert {short}", _expert_tower(session, t)) for t, short in zip(bench.task_names, figures.short_names(bench.task_names))]
        columns = {}
        for name, tower in towers:
            if name in known_features:
                ranked = top_k_from_features(known_features[name], head, classnames, k=5)[0]
            else:
                ranked = top_k(tower, batch, head, classnames, k=5)[0]
            columns[name] = [f"{c} ({100 * p:.1f}%)" for c, p in ranked]
        depth = max(len(v) for v in columns.values())
        table = pd.DataFrame({"rank": list(range(1, depth + 1)), **{k: v + [""] * (depth - len(v)) for k, v in columns.items()}})
    session.image = image
    return enlarged(image), table, guess_text, heatmap


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


def style_table(table: pd.DataFrame):
    """The accuracy table for display: one decimal, each column's best in bold."""
    shown = table.round(1).reset_index()
    numeric = [c for c in shown.columns if c != "model"]
    return shown.style.format({c: "{:.1f}" for c in numeric}, na_rep="").highlight_max(
        subset=numeric, axis=0, props="font-weight: bold; background-color: #d9f2d9")


def evaluation_names(session: Session, include_oracle: bool = False) -> list[str]:
    """Rows of the accuracy table: pretrained, experts, every merge (and the oracle if asked and possible)."""
    from wemoe.workbench import EXPERTS, ORACLE, PRETRAINED

    names = [PRETRAINED, EXPERTS, *_bench(session).merges]
    if include_oracle and _wemoe_merge(session) is not None:
        names.append(ORACLE)
    return names


def evaluate(session: Session, include_oracle: bool = False, progress: Any = _noop_progress) -> Iterator[tuple]:
    """Evaluate every model on every task, yielding (table, bar chart, note, CSV path, JSON path) as cells arrive."""
    from wemoe.evaluate import table_from_scores
    from wemoe.report import build_report

    bench = _bench(session)
    names = evaluation_names(session, include_oracle)
    total = len(names) * len(bench.task_names)
    scores = []
    with friendly("Evaluating"):
        cells = bench.iter_scores(names)
        while True:
            with busy(session):
                score = next(cells, None)
            if score is None:
                break
            scores.append(score)
            progress(len(scores) / total, desc=f"{score.model} on {score.task}: {score.accuracy:.1f}%")
            table = table_from_scores(scores, bench.task_names)
            yield style_table(table), figures.accuracy_bars(table), f"Evaluating: {len(scores)}/{total} done.", None, None
        table = table_from_scores(scores, bench.task_names)
        counts = table.attrs["samples_per_task"]
        stem = session.workdir / f"results-{session.zoo_name}"
        table.round(2).to_csv(f"{stem}.csv")
        report = build_report(session.zoo_name or bench.zoo.name, bench.task_names, table, bench.merges)
        Path(f"{stem}.json").write_text(json.dumps(report, indent=2))
    session.table = table
    note = "Test images per task: " + ", ".join(f"{t} {n}" for t, n in counts.items()) + "."
    yield style_table(table), figures.accuracy_bars(table), note, f"{stem}.csv", f"{stem}.json"


# ---------------------------------------------------------------------------------------------------------------
# 5. Routing


def routing(session: Session, method: str = "umap", config: AppConfig | None = None, progress: Any = _noop_progress) -> Iterator[tuple]:
    """Per-task routing heatmaps, adaptation curves and the 2-D feature map (PCA first, then UMAP if asked)."""
    from wemoe.routing import analyse_routing, embed_2d

    config = config or AppConfig()
    bench = _bench(session)
    name = _wemoe_merge(session)
    if name is None:
        raise gr.Error("Merge with WEMoE first (step 2): routing belongs to the WEMoE routers.")
    if method not in {"umap", "pca"}:
        raise gr.Error(f"Unknown map {method!r}: choose umap or pca.")
    result = bench.merges[name]
    histories = {n: r.history for n, r in bench.merges.items() if r.history}
    with friendly("Analysing the routing"):
        progress(0.1, desc="routing the test images")
        with busy(session):
            analysis = analyse_routing(result.model, bench.data(), per_task=config.routing_per_task)
        tasks = list(dict.fromkeys(analysis.labels))
        heat = figures.task_routing_heatmaps(analysis.task_average().numpy(), tasks, analysis.layers, analysis.task_names)
        curve = figures.loss_curve(histories)
        entropy = figures.task_entropy_curve(result.history, name)
        dominant = analysis.dominant_expert()
        agree = sum(d == t for d, t in zip(dominant, analysis.labels)) / len(dominant)
        note = (f"{len(analysis.labels)} test images of {len(tasks)} tasks through {name} after {result.adapt_steps} "
                f"adaptation steps. For {100 * agree:.0f}% of them the most-weighted expert (layer average) is their own "
                "task's expert. Left map: images of one task should form a group; right map: do the routers' "
                "favourite experts follow those groups?")
        progress(0.5, desc="PCA map")
        pca = figures.feature_maps(embed_2d(analysis.features, "pca"), analysis.labels, dominant, "pca")
        yield heat, curve, entropy, pca, note + (" UMAP is computing (the first run compiles it: up to a minute)..." if method == "umap" else "")
        if method == "umap":
            progress(0.7, desc="UMAP map (the first run compiles numba code)")
            points = embed_2d(analysis.features, "umap", seed=0)
            yield heat, curve, entropy, figures.feature_maps(points, analysis.labels, dominant, "umap"), note


# ---------------------------------------------------------------------------------------------------------------
# 6. Export


def export(session: Session, name: str | None) -> str:
    """Save merge ``name`` (static: open_clip CLIP safetensors; WEMoE: the WEMoE format) and return the file path."""
    from wemoe.export import save_model

    bench = _bench(session)
    if not name or name not in bench.merges:
        known = ", ".join(bench.merges) or "none yet: merge first (step 2)"
        raise gr.Error(f"Choose a merge to export. Merges: {known}.")
    model = bench.merges[name].model
    path = session.workdir / f"{session.zoo_name}-{name}.safetensors"
    with friendly(f"Exporting {name}"), busy(session):
        save_model(bench.zoo.clip, model, path)
    return str(path)
