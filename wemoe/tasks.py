"""Tasks: a name, class names, prompt templates and labelled images, in one registry.

A task's data is a ``datasets.Dataset`` with two columns: ``image`` (PIL images) and ``label`` (int class index).
Registered tasks come from ``wemoe.standard_tasks`` (the 8 tasks of the WEMoE paper, data from the hub) and
``wemoe.pocket.tasks`` (the offline pocket benchmark); any image folder, zip of one, parquet file or Hugging Face
dataset becomes a custom task through :func:`task_from_folder`, :func:`task_from_zip`, :func:`task_from_parquet`
and :func:`task_from_hub`, or from one text line through :func:`task_from_source`.
"""

from __future__ import annotations

import importlib
import shlex
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from datasets.exceptions import DatasetNotFoundError

from wemoe.errors import TaskError

SplitLoader = Callable[[str], datasets.Dataset]


@dataclass(frozen=True)
class Task:
    """A classification task as CLIP sees it.

    ``templates`` are prompt strings with a ``{c}`` placeholder for the class name; ``load_split(split)`` returns
    the split (``"train"`` or ``"test"``) as a Dataset with ``image`` and ``label`` columns.
    """

    name: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    load_split: SplitLoader = field(repr=False, compare=False)
    description: str = ""
    source: str = ""

    def prompts(self, classname: str) -> list[str]:
        """All prompts for one class name, one per template."""
        return [template.format(c=classname) for template in self.templates]

    def dataset(self, split: str = "test", samples: int | None = None, seed: int = 0) -> datasets.Dataset:
        """The split, optionally a seeded random subset of ``samples`` images."""
        try:
            data = self.load_split(split)
        except TaskError:
            raise
        except Exception as error:  # the hub, a file system or a generator: report which task and why
            raise TaskError(f"Could not load the {split!r} split of task {self.name!r} ({self.source}): {error}") from error
        if samples is not None and samples < len(data):
            data = data.shuffle(seed=seed).select(range(samples))
        return data


_REGISTRY: dict[str, Task] = {}
# Modules whose import registers tasks; imported lazily so `import wemoe.tasks` stays light.
_PROVIDERS = ("wemoe.standard_tasks", "wemoe.pocket.tasks")


def register_task(task: Task) -> Task:
    """Add a task to the registry (replacing one of the same name) and return it."""
    _REGISTRY[task.name] = task
    return task


def _load_providers() -> None:
    for module in _PROVIDERS:
        importlib.import_module(module)


def list_tasks() -> list[str]:
    """Names of every registered task."""
    _load_providers()
    return sorted(_REGISTRY)


def get_task(name: str) -> Task:
    """The registered task of this name; an unknown name raises an error listing the known ones."""
    _load_providers()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise TaskError(f"Unknown task {name!r}. Known tasks: {', '.join(sorted(_REGISTRY))}.") from None


def normalise_columns(data: datasets.Dataset, image_column: str | None = None, label_column: str | None = None) -> datasets.Dataset:
    """Rename a dataset's image and label columns to ``image`` and ``label`` and drop the rest.

    Hub datasets name them differently (``img``, ``labels``...); without explicit names the first column whose
    feature is an Image, and the first ClassLabel or integer column, are taken.
    """
    features = data.features
    if image_column is None:
        image_column = next((n for n, f in features.items() if isinstance(f, datasets.Image)), None)
    if label_column is None:
        label_column = next((n for n, f in features.items() if isinstance(f, datasets.ClassLabel)), None)
        if label_column is None:
            label_column = next((n for n in ("label", "labels", "target") if n in features), None)
    if image_column is None or label_column is None:
        raise TaskError(f"The dataset has no image column or no label column (columns: {list(features)}).")
    data = data.select_columns([image_column, label_column])
    if image_column != "image":
        data = data.rename_column(image_column, "image")
    if label_column != "label":
        data = data.rename_column(label_column, "label")
    return data


def task_from_folder(
    root: str | Path,
    name: str | None = None,
    templates: Sequence[str] = ("a photo of a {c}.",),
) -> Task:
    """A custom task from a local image folder (``root/<class name>/<image>``, or with ``train``/``test`` subfolders).

    Class names come from the folder names (underscores read as spaces). Without split subfolders every image is
    in the ``test`` split.
    """
    root = Path(root)
    if not root.is_dir():
        raise TaskError(f"Image folder {str(root)!r} does not exist. Give a folder with one subfolder per class.")
    has_splits = (root / "test").is_dir()
    test_root = root / "test" if has_splits else root
    classes = sorted(p.name for p in test_root.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))
    if not classes:
        raise TaskError(f"Image folder {str(root)!r} has no class subfolders (expected root/<class>/<image>).")

    def load_split(split: str) -> datasets.Dataset:
        folder = root / split if has_splits else root
        if has_splits and not folder.is_dir():
            raise TaskError(f"Task {name or root.name!r} has no {split!r} folder under {str(root)!r}.")
        if not has_splits and split != "test":
            raise TaskError(f"Task {name or root.name!r} has only a test split (no train/test subfolders).")
        data = datasets.load_dataset("imagefolder", data_dir=str(folder), split="train")
        return normalise_columns(data)

    return Task(
        name=name or root.name,
        classnames=tuple(c.replace("_", " ") for c in classes),
        templates=tuple(templates),
        load_split=load_split,
        description=f"Custom image-folder task from {root}",
        source=str(root),
    )


def task_from_parquet(
    path: str | Path,
    classnames: Sequence[str] | None = None,
    name: str | None = None,
    templates: Sequence[str] = ("a photo of a {c}.",),
) -> Task:
    """A custom task from a parquet file with an image column and a label column (all rows form the test split).

    Class names come from the label column's ClassLabel feature when there is one, else from ``classnames``.
    """
    path = Path(path)
    if not path.is_file():
        raise TaskError(f"Parquet file {str(path)!r} does not exist.")

    def load_split(split: str) -> datasets.Dataset:
        if split != "test":
            raise TaskError(f"Task {name or path.stem!r} from a parquet file has only a test split.")
        return normalise_columns(datasets.load_dataset("parquet", data_files=str(path), split="train"))

    data = load_split("test")
    label_feature = data.features["label"]
    if isinstance(label_feature, datasets.ClassLabel):
        names = tuple(label_feature.names)
    elif classnames is not None:
        names = tuple(classnames)
    else:
        raise TaskError(f"{str(path)!r} has plain integer labels: pass the class names (one per label).")
    return Task(
        name=name or path.stem,
        classnames=names,
        templates=tuple(templates),
        load_split=load_split,
        description=f"Custom parquet task from {path}",
        source=str(path),
    )


DEFAULT_TEMPLATES = ("a photo of a {c}.",)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
ZIP_MAX_BYTES = 4 * 2**30  # uncompressed: refuse zip bombs
ZIP_MAX_FILES = 200_000


def _class_root(folder: Path) -> Path:
    """Where the class (or train/test) folders are: a zip of ``pets/`` holds ``pets/cat/...``, so descend through
    single wrapping folders that hold no images themselves."""
    while True:
        entries = [p for p in folder.iterdir() if not p.name.startswith((".", "__"))]
        dirs = [p for p in entries if p.is_dir()]
        if len(dirs) != 1 or any(p.is_file() for p in entries) or (folder / "test").is_dir():
            return folder
        inner = dirs[0]
        if not any(p.is_dir() for p in inner.iterdir()):  # root/<one class>/<images>: not a wrapper
            return folder
        folder = inner


def task_from_zip(
    path: str | Path,
    name: str | None = None,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    extract_to: str | Path | None = None,
    max_bytes: int = ZIP_MAX_BYTES,
    max_files: int = ZIP_MAX_FILES,
) -> Task:
    """A custom task from a zip of an image folder (``class/xxx.png``, optionally inside one top folder or with
    ``train``/``test`` folders), as :func:`task_from_folder`.

    Only image files are extracted, into ``extract_to`` or a temporary folder removed with the task. Entries that
    would land outside it, and archives over ``max_bytes`` uncompressed or ``max_files`` images, are refused.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise TaskError(f"Zip file {str(path)!r} does not exist.")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise TaskError(f"{path.name!r} is not a zip file this app can read ({error}).") from error
    with archive:
        for member in archive.infolist():
            parts = Path(member.filename.replace("\\", "/")).parts
            if member.filename.startswith(("/", "\\")) or ".." in parts or ":" in member.filename:
                raise TaskError(f"{path.name!r} holds an entry outside its folder ({member.filename!r}): refused.")
        members = [
            m for m in archive.infolist()
            if not m.is_dir() and m.filename.lower().endswith(IMAGE_SUFFIXES)
            and not any(part.startswith((".", "__")) for part in Path(m.filename).parts)
        ]
        if not members:
            raise TaskError(f"{path.name!r} holds no images: zip a folder with one subfolder of images per class.")
        total = sum(m.file_size for m in members)
        if total > max_bytes or len(members) > max_files:
            raise TaskError(
                f"{path.name!r} unpacks to {len(members)} images, {total / 2**20:.0f} MiB: more than this accepts "
                f"({max_files} images, {max_bytes / 2**20:.0f} MiB). Use fewer or smaller test images."
            )
        owner = None
        if extract_to is None:
            owner = tempfile.TemporaryDirectory(prefix=f"wemoe-task-{path.stem}-")
            root = Path(owner.name)
        else:
            root = Path(extract_to).expanduser()
            root.mkdir(parents=True, exist_ok=True)
        for member in members:
            target = root.joinpath(*Path(member.filename.replace("\\", "/")).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)
    folder = _class_root(root)
    task = task_from_folder(folder, name=name or path.stem, templates=templates)
    read_folder = task.load_split

    def load_split(split: str, _images: tempfile.TemporaryDirectory | None = owner) -> datasets.Dataset:
        return read_folder(split)  # `_images` keeps the extracted folder as long as the task lives

    return Task(
        name=task.name,
        classnames=task.classnames,
        templates=task.templates,
        load_split=load_split,
        description=f"Custom task from the zip {path.name}",
        source=str(path),
    )


def task_from_hub(
    dataset: str,
    split: str = "test",
    image_column: str | None = None,
    label_column: str | None = None,
    config: str | None = None,
    name: str | None = None,
    classnames: Sequence[str] | None = None,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
) -> Task:
    """A custom task from a Hugging Face dataset (a hub id, or a local folder ``datasets.load_dataset`` reads).

    ``split`` is the split evaluated and adapted on (the task's ``test`` split); the image and label columns are
    found by their features unless named. Class names come from the label column's ClassLabel feature, else from
    ``classnames``. The split is read once here, so a wrong id, split or column is reported at once.
    """
    label = name or dataset.rstrip("/").split("/")[-1]

    def load(which: str) -> datasets.Dataset:
        which = split if which == "test" else which
        call = f"datasets.load_dataset({dataset!r}{f', {config!r}' if config else ''}, split={which!r})"
        try:
            data = datasets.load_dataset(dataset, config, split=which)
        except DatasetNotFoundError as error:
            raise TaskError(
                f"Task {label!r}: the dataset {dataset!r} does not exist or is private ({error})."
            ) from error
        except ValueError as error:  # an unknown split or config
            raise TaskError(f"Task {label!r}: {dataset!r} has no split {which!r} ({error}).") from error
        except (ConnectionError, FileNotFoundError, OSError) as error:
            raise TaskError(
                f"Could not load the {which!r} split of task {label!r} from the dataset {dataset!r} (no network, or "
                f"offline and not cached: {error}). Pre-download it where there is network with "
                f'`python -c "import datasets; {call}"`, then set HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1.'
            ) from error
        if not isinstance(data, datasets.Dataset):
            raise TaskError(f"Task {label!r}: {call} is not one split (give split=...).")
        for column in (image_column, label_column):
            if column is not None and column not in data.column_names:
                raise TaskError(f"Task {label!r}: {dataset!r} has no column {column!r} (columns: {data.column_names}).")
        try:
            return normalise_columns(data, image_column, label_column)
        except TaskError as error:
            raise TaskError(f"Task {label!r} ({dataset}): {error} Name them with image=... label=...") from error

    first = load("test")
    feature = first.features["label"]
    if isinstance(feature, datasets.ClassLabel):
        names = tuple(feature.names)
    elif classnames is not None:
        names = tuple(classnames)
    else:
        raise TaskError(
            f"Task {label!r}: the label column of {dataset!r} holds plain integers, not class names (no ClassLabel "
            "feature): give the class names in label order (classes=name1,name2,...)."
        )
    if not isinstance(first.features["image"], datasets.Image):
        raise TaskError(
            f"Task {label!r}: the image column of {dataset!r} does not hold images (choose it with image=...)."
        )
    return Task(
        name=label,
        classnames=names,
        templates=tuple(templates),
        load_split=lambda which: first if which == "test" else load(which),
        description=f"Custom task from the dataset {dataset}" + (f" ({config})" if config else "") + f", split {split}",
        source=f"hf:{dataset}" + (f" ({config})" if config else ""),
    )


_SOURCE_OPTIONS = ("split", "image", "label", "config", "classes", "template")


def task_from_source(
    text: str, name: str, uploads: dict[str, str] | None = None, extract_to: str | Path | None = None
) -> Task:
    """A custom task named ``name`` from one line of text: a local image folder (``class/xxx.png``), a ``.zip`` of
    one, a ``.parquet`` file, or ``hf:owner/dataset`` (a Hugging Face dataset), then ``key=value`` options:
    ``split=`` (default test), ``image=`` and ``label=`` (column names), ``config=``, ``classes=a,b,c`` (for plain
    integer labels) and ``template="a photo of a {c}."``. ``uploads`` maps uploaded files' names to their paths.

        pets: ./data/pets
        pets: pets.zip
        digits: hf:ylecun/mnist split=test image=image label=label
    """
    try:
        words = shlex.split(text)
    except ValueError as error:
        raise TaskError(f"Task {name!r}: cannot read {text!r} ({error}).") from error
    if not words:
        raise TaskError(f"Task {name!r} has no source: give a folder, a .zip, a .parquet file or hf:owner/dataset.")
    source, options = words[0], {}
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if not sep or key not in _SOURCE_OPTIONS:
            known = ", ".join(k + "=" for k in _SOURCE_OPTIONS)
            raise TaskError(f"Task {name!r}: unknown option {word!r}; options are {known}.")
        options[key] = value
    template = options.pop("template", None)
    if template is not None and template.count("{c}") != 1:
        raise TaskError(f"Task {name!r}: the template {template!r} must hold {{c}} once (where the class name goes).")
    templates = (template,) if template else DEFAULT_TEMPLATES
    classes = options.pop("classes", None)
    classnames = tuple(c.strip() for c in classes.split(",") if c.strip()) if classes else None
    if source.startswith("hf:"):
        return task_from_hub(source.removeprefix("hf:"), options.pop("split", "test"), options.pop("image", None),
                             options.pop("label", None), options.pop("config", None), name, classnames, templates)
    if options:
        raise TaskError(f"Task {name!r}: {', '.join(k + '=' for k in options)} only apply to hf: datasets.")
    path = Path((uploads or {}).get(source, source)).expanduser()
    if path.is_dir():
        return task_from_folder(path, name=name, templates=templates)
    if path.suffix.lower() == ".zip":
        return task_from_zip(path, name=name, templates=templates, extract_to=extract_to)
    if path.suffix.lower() == ".parquet":
        return task_from_parquet(path, classnames=classnames, name=name, templates=templates)
    if path.exists():
        raise TaskError(f"Task {name!r}: {source!r} is not a folder, .zip or .parquet file.")
    raise TaskError(
        f"Task {name!r}: {source!r} does not exist. Give an image folder (class/xxx.png), a .zip or .parquet file, "
        "or a Hugging Face dataset as hf:owner/name."
    )
