"""What comes in from the page, decoded and checked: numbers and checkboxes, the adaptation settings, uploaded,
drawn and example images, and the custom zoo's experts and tasks (zip, folder, parquet or hub dataset).

Every reader refuses bad input with a ``gr.Error`` that names the field and says what to enter; none changes a
session. The adaptation settings are checked against their declarations (``wemoe.adaptation.adapt.SETTINGS``).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import friendly, refuse
from app.messages import tasks_table
from app.session import AppConfig, Session, format_size, parse_size
from wemoe.adaptation.adapt import SETTINGS
from wemoe.errors import TaskError, WemoeError
from wemoe.params import Param
from wemoe.tasks.corruptions import CORRUPTIONS
from wemoe.tasks.images import to_rgb
from wemoe.tasks.readers import task_from_source
from wemoe.tasks.registry import Task, get_task, list_tasks
from wemoe.zoo.source_policy import SourcePolicy

AUTO_TASK = "auto (the routers' guess)"
DIGITS_TASK = "pocket_digits"  # drawings for this task are redrawn like its images (read_sketch)
ADAPT_LABELS = {"steps": "Adaptation steps", "lr": "Learning rate", "per_task": "Images per task per step",
                "loss": "Adaptation loss", "seed": "Adaptation seed", "split": "Adaptation images"}
"""The page's label of each adaptation setting (``wemoe.adaptation.adapt.SETTINGS``): its control's and its
messages'."""
NO_CORRUPTION = "none"
CORRUPTION_CHOICES = [NO_CORRUPTION, *CORRUPTIONS]  # of "Try images": the robustness view's corruptions
IMAGE_TYPES = "PNG, JPEG, WebP, BMP or TIFF"
TOO_LARGE = "Downscale it (the models see 32-224 px anyway) and upload again."


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


def adapt_setting(name: str) -> Param:
    """The declared adaptation setting ``name`` (``wemoe.adaptation.adapt.SETTINGS``)."""
    return next(p for p in SETTINGS if p.name == name)


def adapt_value(name: str, value: Any, *, minimum: float | None = None, hint: str = "") -> Any:
    """``value`` of adaptation setting ``name``, checked against its declaration (type, range or choices; a
    ``minimum`` above the declared one where a verb needs it), else a ``gr.Error`` naming the control's label."""
    setting, label = adapt_setting(name), ADAPT_LABELS[name]
    if setting.choices is not None:
        if not isinstance(value, str) or value not in setting.choices:
            raise refuse(f"Unknown {label.lower()} {value!r}; choose one of {', '.join(map(str, setting.choices))}.")
        return value
    low = setting.min if minimum is None or setting.min is None else max(minimum, setting.min)
    return number(value, label, whole=setting.type is int, minimum=low, maximum=setting.max, hint=hint)


def adapt_values(steps: Any, lr: Any, per_task: Any, loss: Any, seed: Any, split: Any = None, *,
                 min_steps: int = 1) -> dict[str, Any]:
    """Every adaptation setting from the page, checked (:func:`adapt_value`); ``seed`` or ``split`` None is the
    declared default."""
    seed = adapt_setting("seed").default if seed is None else seed
    split = adapt_setting("split").default if split is None else split
    return {"steps": adapt_value("steps", steps, minimum=min_steps), "lr": adapt_value("lr", lr),
            "per_task": adapt_value("per_task", per_task), "loss": adapt_value("loss", loss),
            "seed": adapt_value("seed", seed), "split": adapt_value("split", split)}


def corruption_choice(corruption: Any, severity: Any) -> tuple[str | None, int]:
    """The 'Corruption' and 'Severity' controls of "Try images" as (a corruption's name or None, severity 1-5), else a
    ``gr.Error`` naming the choices."""
    if corruption is None or corruption == NO_CORRUPTION:
        return None, 3
    if not isinstance(corruption, str) or corruption not in CORRUPTIONS:
        raise refuse(f"Corruption: choose {NO_CORRUPTION} or one of {', '.join(CORRUPTIONS)}, got {corruption!r}.")
    return corruption, number(severity, "Severity", whole=True, minimum=1, maximum=5)


def chosen_task(bench: Any, choice: str | None) -> str | None:
    """The 'Task (head)' choice as a task name (None: auto, the routers' guess), else a ``gr.Error``."""
    if not choice or choice == AUTO_TASK:
        return None
    if choice not in bench.task_names:
        raise gr.Error(f"Unknown task {choice!r}. Choose one of: {', '.join(bench.task_names)}.")
    return choice


def adaptive_target(bench: Any, target: Any) -> str:
    """``target`` as the name of one of ``bench``'s merges that can adapt, else a ``gr.Error`` saying what to do."""
    if not isinstance(target, str) or target not in bench.merges:
        raise refuse("Merge with WEMoE first: adaptation trains the routers of a WEMoE (or AdaMerging) merge.")
    if not bench.merges[target].adaptive:
        raise refuse(f"The {target} merge has nothing to adapt: only WEMoE and AdaMerging merges adapt.")
    return target


def test_images_per_task(samples: Any, config: AppConfig) -> int | None:
    """The 'Test images per task' field (0 or None: the app's setting, whose 0 is every image), or a ``gr.Error``."""
    if samples is not None:
        samples = number(samples, "Test images per task", whole=True, hint="0 = every image")
    count = int(samples) if samples else (config.samples or None)
    if count is not None and count < 1:
        raise gr.Error("Test images per task must be at least 1 (or 0 for every image).")
    return count


def method_names(methods: Any) -> list[str]:
    """The chosen merge methods as a list of names without repeats (one name is a list of one), or a ``gr.Error``."""
    methods = [methods] if isinstance(methods, str) else methods
    if not isinstance(methods, (list, tuple)) or not all(isinstance(m, str) for m in methods):
        raise refuse(f"Merge methods: give a list of method names, e.g. ['task_arithmetic', 'wemoe'], got {methods!r}.")
    if not methods:
        raise refuse("Choose at least one merge method.")
    return list(dict.fromkeys(methods))


# ---------------------------------------------------------------------------------------------------------------
# A custom zoo: experts and tasks


def _lines(text: str | None) -> Iterator[tuple[int, str]]:
    for number_, line in enumerate((text or "").splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            yield number_, line


@contextlib.contextmanager
def naming_uploads(files: Sequence[str] | None) -> Iterator[None]:
    """Messages raised inside name uploaded files by their names, not by the server folder they were stored in."""
    try:
        yield
    except (gr.Error, WemoeError) as error:
        text = error.message if isinstance(error, gr.Error) else str(error)
        scrubbed = text
        for file in files or []:
            scrubbed = scrubbed.replace(str(file), Path(file).name).replace(str(Path(file).parent), "(upload)")
        if scrubbed == text:
            raise
        if isinstance(error, gr.Error):
            raise refuse(scrubbed, title=error.title) from None
        raise type(error)(scrubbed) from None


def custom_spec(base_model: str, base_pretrained: str, experts_text: str, expert_files: Sequence[str] | None,
                policy: SourcePolicy | None = None) -> dict:
    """A zoo spec mapping from the custom-zoo fields, every source checked by ``policy`` (served: no server paths).

    ``experts_text`` has one ``task: source`` line per expert (source: hub id, local file or folder, or the name of
    an uploaded file); uploaded files not named in it become experts of the task named by the file's stem.
    """
    policy = policy or SourcePolicy()
    base_model = (base_model or "").strip()
    if not base_model:
        raise gr.Error("Custom zoo: give the base model's open_clip name, e.g. ViT-B-32.")
    with friendly("Custom zoo"):
        base_model, base_pretrained = policy.base_model(base_model), policy.base_weights(base_pretrained or "")
    uploads = {Path(f).name: str(f) for f in (expert_files or [])}
    experts: dict[str, str] = {}
    for number_, line in _lines(experts_text):
        task, sep, source = line.partition(":") if ":" in line else line.partition("=")
        if not sep or not task.strip() or not source.strip():
            raise gr.Error(f"Custom zoo, experts line {number_} ({line!r}) must look like 'task: source', "
                           "e.g. 'mnist: tanganke/clip-vit-base-patch32_mnist'.")
        source = source.strip()
        with friendly("Custom zoo"):
            experts[task.strip()] = policy.source(source, f"Expert {task.strip()!r}", uploads)
        uploads.pop(source, None)
    for name, path in uploads.items():
        experts.setdefault(Path(name).stem, path)
    if not experts:
        raise gr.Error("Custom zoo: name at least one expert ('task: hub id or file' lines) or upload checkpoint "
                       "files.")
    return {"name": "custom", "model": base_model, "pretrained": base_pretrained or None, "experts": experts}


def read_tasks(tasks_text: str, task_files: Sequence[str] | None = None,
               policy: SourcePolicy | None = None) -> tuple[dict[str, Task], str]:
    """The custom zoo's own tasks, and a Markdown table of what was read (classes, test images, where from).

    ``tasks_text`` has one ``task: source`` line per task (``wemoe.tasks.readers.task_from_source``): an image folder
    (``class/xxx.png``), a ``.zip`` of one or a ``.parquet`` file (local, or the name of an uploaded file), or
    ``hf:owner/dataset`` with ``split=``, ``image=``, ``label=`` options. Uploaded files not named in it become
    the task named by the file's stem. Class names are read from the data. Each source is checked by ``policy``
    (served: uploads and ``hf:`` ids only, or paths under the operator's allowed folders) before anything is read.
    """
    policy = policy or SourcePolicy()
    uploads = {Path(f).name: str(f) for f in (task_files or [])}
    lines: dict[str, str] = {}
    for number_, line in _lines(tasks_text):
        name, sep, source = line.partition(":")
        if not sep or not name.strip() or not source.strip() or " " in name.strip():
            raise gr.Error(f"Custom zoo, tasks line {number_} ({line!r}) must look like 'task: source', e.g. "
                           "'pets: pets.zip' or 'digits: hf:ylecun/mnist split=test image=image label=label'.")
        if name.strip() in lines:
            raise gr.Error(f"Custom zoo: task {name.strip()!r} is given twice in the tasks.")
        lines[name.strip()] = source.strip()
    named = {s.split()[0] for s in lines.values() if s.split()}
    for file_name in uploads:
        if file_name not in named:
            lines.setdefault(Path(file_name).stem, file_name)
    with friendly("Reading the custom tasks"):
        checked = {name: policy.task_source(source, f"Task {name!r}", uploads) for name, source in lines.items()}
    with friendly("Reading the custom tasks"), naming_uploads(task_files):
        tasks = {name: task_from_source(source, name) for name, source in checked.items()}
        shown = tasks_table(tasks.values())
    return tasks, shown


def custom_loader(config: AppConfig, base_model: str, base_pretrained: str, experts_text: str,
                  expert_files: Sequence[str] | None, tasks_text: str, task_files: Sequence[str] | None) -> Callable:
    """The custom zoo's loader (``report -> (zoo, tasks)``), every field checked first: the expert lines and uploads
    (size limit), the tasks (each needs an expert); an expert without a task is refused once the zoo is read."""
    spec = custom_spec(base_model, base_pretrained, experts_text, expert_files, config.sources)
    limit = parse_size(config.max_checkpoint_size)
    for file in map(Path, expert_files or []):
        if limit is not None and file.is_file() and file.stat().st_size > limit:
            raise gr.Error(f"Custom zoo: {file.name!r} is {format_size(file.stat().st_size)}, more than the "
                           f"{format_size(limit)} this app accepts for a checkpoint upload. Give a hub id or a local "
                           "path instead (or raise --max-checkpoint-size).")
    custom, _ = read_tasks(tasks_text, task_files, config.sources)
    registered = set(list_tasks())
    orphans = [t for t in custom if t not in spec["experts"]]
    if orphans:
        raise gr.Error(f"Custom zoo: task(s) {orphans} have no expert. Experts: {', '.join(spec['experts'])}.")

    def loader(report: Callable[[float, str], None]) -> tuple[Any, list[Task]]:
        from wemoe.loading import load_zoo as library_load_zoo  # here: building the page reads no checkpoint code

        with naming_uploads(expert_files):
            zoo = library_load_zoo(spec, progress=report)  # first: a checkpoint that does not fit says so first
        untasked = [e for e in zoo.task_names if e not in custom and e not in registered]
        if untasked:
            raise TaskError(f"expert(s) {untasked} have no task. Give each a line 'name: image folder, .zip or "
                            f"hf:dataset' under Tasks, or name it after a registered task "
                            f"({', '.join(sorted(registered))}).")
        return zoo, [custom[name] if name in custom else get_task(name) for name in zoo.task_names]

    return loader


# ---------------------------------------------------------------------------------------------------------------
# Images: uploads, drawings, examples


def read_upload(path: str | None, config: AppConfig) -> Image.Image:
    """An uploaded file as an RGB image: refuses empty, non-image, corrupt and huge files; converts other modes."""
    if not path:
        raise gr.Error(f"Upload an image first ({IMAGE_TYPES}).")
    file = Path(path)
    if not file.is_file() or file.stat().st_size == 0:
        raise gr.Error(f"The uploaded file is empty. Upload an image file ({IMAGE_TYPES}).")
    check_image_size(file, config)
    try:
        with Image.open(file) as image:
            width, height = image.size
            if width * height > config.max_pixels:
                raise gr.Error(f"The image is {width} x {height} pixels, more than the {config.max_pixels / 1e6:.0f} "
                               f"megapixels this app accepts. {TOO_LARGE}")
            image.load()
            return normalise_image(ImageOps.exif_transpose(image), config)
    except gr.Error:
        raise
    except Image.DecompressionBombError as error:  # PIL refuses images this large as soon as it reads their header
        pixels = re.search(r"\((\d+) pixels\)", str(error))
        size = f" ({int(pixels.group(1)) / 1e6:.0f} megapixels)" if pixels else ""
        raise gr.Error(f"{file.name!r} is too large{size}: this app accepts at most {config.max_pixels / 1e6:.0f} "
                       f"megapixels. {TOO_LARGE}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise gr.Error(f"{file.name!r} is not an image this app can read ({type(error).__name__}). "
                       f"Upload a {IMAGE_TYPES} image.") from None


def check_image_size(file: Path, config: AppConfig) -> None:
    """Refuse an image file over ``config.max_image_size`` (Gradio's own limit is the larger checkpoint limit)."""
    limit, size = parse_size(config.max_image_size), file.stat().st_size
    if limit is not None and size > limit:
        raise gr.Error(f"{file.name!r} is {format_size(size)}, more than the {format_size(limit)} this app accepts for "
                       "an image (checkpoints have their own, larger limit). Downscale or compress it (the models see "
                       "32-224 px anyway) and upload again.")


def normalise_image(image: Image.Image, config: AppConfig) -> Image.Image:
    """Any PIL image as 8-bit RGB (grayscale, RGBA, 16-bit converted), no side longer than ``config.display_side``."""
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
        from wemoe.pocket.sketch import drawing_like_digits  # only for the pocket zoo: building the page imports none

        image = drawing_like_digits(image)
    return image


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


def gallery_examples(config: AppConfig, tasks: Sequence[str] | None) -> list[tuple[str, str]]:
    """The examples a gallery offers for a zoo of ``tasks``: its tasks' own, or every shipped example when it has none
    (the paper's zoos: their datasets are not shipped; the pocket images still show routing and a guess); every
    gallery and its clicks use this one list, so a click's index names the image shown."""
    return list_examples(config, tasks) or list_examples(config)


def read_example(name: str | None, config: AppConfig) -> Image.Image:
    """A shipped example image by its ``task/file`` name."""
    if not name:
        raise gr.Error("Pick an example image first.")
    root = Path(config.examples_dir).resolve()
    path = (root / name).resolve()
    if root not in path.parents or not path.is_file():
        raise gr.Error(f"No example image {name!r}. Pick one from the gallery.")
    return read_upload(str(path), config)
