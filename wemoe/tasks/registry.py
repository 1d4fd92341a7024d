"""Tasks: a name, class names, prompt templates and labelled images, in one registry.

A task's data is a ``datasets.Dataset`` with two columns: ``image`` (PIL images) and ``label`` (int class index).
Registered tasks come from ``wemoe.tasks.standard_tasks`` (the 8 tasks of the WEMoE paper, data from the hub) and
``wemoe.pocket.tasks`` (the offline pocket benchmark); any image folder, zip of one, parquet file or Hugging Face
dataset becomes a custom task through the readers of ``wemoe.tasks.readers``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import datasets

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
            raise TaskError(f"Could not load the {split!r} split of task {self.name!r} ({self.source}): "
                            f"{error}") from error
        if samples is not None and samples < len(data):
            data = data.shuffle(seed=seed).select(range(samples))
        return data


_REGISTRY: dict[str, Task] = {}
# Modules whose import registers tasks; imported lazily so `import wemoe.tasks.registry` stays light.
_PROVIDERS = ("wemoe.tasks.standard_tasks", "wemoe.tasks.tall_tasks", "wemoe.pocket.tasks")


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


def normalise_columns(data: datasets.Dataset, image_column: str | None = None,
                      label_column: str | None = None) -> datasets.Dataset:
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
