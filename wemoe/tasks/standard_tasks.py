"""The 8 standard tasks of the WEMoE paper, registered at import, with their data on the Hugging Face hub.

Class names and prompt templates are the usual CLIP ones (task_vectors, FusionBench), in the label order of the
hub datasets the paper's experts were fine-tuned and evaluated on. Long class-name lists live in
``wemoe/tasks/data/classnames/<task>.txt`` (one name a line). Data is fetched by ``datasets.load_dataset`` on first use
and cached by it; offline, a task whose data is not in the cache raises a TaskError saying how to pre-download it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import datasets
from datasets.exceptions import DatasetNotFoundError

from wemoe.errors import TaskError
from wemoe.tasks.registry import Task, normalise_columns, register_task

CLASSNAMES_DIR = Path(__file__).parent / "data" / "classnames"

_A_THE = ("a photo of a {c}.", "a photo of the {c}.")
_DIGIT = ('a photo of the number: "{c}".',)

# name -> (hub dataset id, dataset config or None, templates, description)
STANDARD_TASKS: dict[str, tuple[str, str | None, tuple[str, ...], str]] = {
    "sun397": ("tanganke/sun397", None, _A_THE, "SUN397: 397 scene categories"),
    "stanford-cars": (
        "tanganke/stanford_cars",
        None,
        (
            "a photo of a {c}.",
            "a photo of the {c}.",
            "a photo of my {c}.",
            "i love my {c}!",
            "a photo of my dirty {c}.",
            "a photo of my clean {c}.",
            "a photo of my new {c}.",
            "a photo of my old {c}.",
        ),
        "Stanford Cars: 196 car models (make, model, year)",
    ),
    "resisc45": (
        "tanganke/resisc45",
        None,
        tuple(
            f"{kind} {view} of {article}{{c}}."
            for article in ("", "a ", "the ")
            for view, kind in [(v, k) for v in ("imagery", "photo", "view") for k in ("satellite", "aerial")]
        ),
        "RESISC45: 45 remote-sensing scene classes",
    ),
    "eurosat": (
        "tanganke/eurosat",
        None,
        (
            "a centered satellite photo of {c}.",
            "a centered satellite photo of a {c}.",
            "a centered satellite photo of the {c}.",
        ),
        "EuroSAT: 10 land-use classes from Sentinel-2 satellite images",
    ),
    "svhn": ("ufldl-stanford/svhn", "cropped_digits", _DIGIT, "SVHN: house-number digits 0-9 from Street View"),
    "gtsrb": (
        "tanganke/gtsrb",
        None,
        (
            'a zoomed in photo of a "{c}" traffic sign.',
            'a centered photo of a "{c}" traffic sign.',
            'a close up photo of a "{c}" traffic sign.',
        ),
        "GTSRB: 43 German traffic signs",
    ),
    "mnist": ("ylecun/mnist", None, _DIGIT, "MNIST: handwritten digits 0-9"),
    "dtd": (
        "tanganke/dtd",
        None,
        tuple(
            f"a photo of {article} {{c}} {thing}."
            for article in ("a", "the")
            for thing in ("texture", "pattern", "thing", "object")
        ),
        "DTD: 47 describable textures",
    ),
}


def read_classnames(task: str) -> tuple[str, ...]:
    """The class names of a standard task, in label order, from its data file."""
    path = CLASSNAMES_DIR / f"{task}.txt"
    return tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def hub_loader(name: str, repo: str, config: str | None, split_names: Mapping[str, str] | None = None,
               label_column: str | None = None):
    """A ``load_split`` function reading ``repo`` (``config``) from the hub, its columns normalised.

    ``split_names`` maps our split names to the dataset's where they differ (food101 has no ``test``: its
    ``validation`` is the test set); ``label_column`` names the label column when it is not found by itself (fer2013's
    ``cls``)."""
    aliases = dict(split_names or {})

    def load_split(split: str) -> datasets.Dataset:
        split = aliases.get(split, split)
        try:
            data = datasets.load_dataset(repo, config, split=split)
        except DatasetNotFoundError as error:
            raise TaskError(
                f"Task {name!r}: the hub dataset {repo!r} does not exist or is private ({error})."
            ) from error
        except (ConnectionError, FileNotFoundError, OSError) as error:
            call = f"datasets.load_dataset({repo!r}{f', {config!r}' if config else ''}, split={split!r})"
            raise TaskError(
                f"Could not load the {split!r} split of task {name!r} from the hub dataset {repo!r} "
                f"(no network, or offline and not cached: {error}). Pre-download it where there is network "
                f'with `python -c "import datasets; {call}"` (it lands in the Hugging Face cache, '
                "~/.cache/huggingface; copy it here if needed), then set HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1."
            ) from error
        except ValueError as error:  # an unknown split name
            raise TaskError(f"Task {name!r} ({repo}) has no split {split!r}: {error}") from error
        return normalise_columns(data, label_column=label_column if label_column in data.features else None)

    return load_split


def _register_all() -> None:
    for name, (repo, config, templates, description) in STANDARD_TASKS.items():
        register_task(
            Task(
                name=name,
                classnames=read_classnames(name),
                templates=templates,
                load_split=hub_loader(name, repo, config),
                description=description,
                source=f"hf:{repo}" + (f" ({config})" if config else ""),
            )
        )


_register_all()
