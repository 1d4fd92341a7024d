"""The twelve tasks that make the 14- and 20-task benchmarks (TALL14, TALL20: Wang et al., "Localizing Task
Information for Improved Model Merging and Compression", ICML 2024, arXiv 2405.07813), registered at import.

TALL14 is the paper's eight (``wemoe.tasks.standard_tasks``) and the first six here; TALL20 adds the last six. Names,
hub datasets, splits, class names (in label order) and prompt templates are the ones FusionBench evaluates its
``tanganke/clip-vit-*_<task>`` experts with; class names live in ``wemoe/tasks/data/classnames/<task>.txt``. Data is
fetched by ``datasets.load_dataset`` on first use; offline and not cached, a TaskError says how to pre-download it.
"""

from __future__ import annotations

from typing import NamedTuple

from wemoe.tasks.registry import Task, register_task
from wemoe.tasks.standard_tasks import hub_loader, read_classnames


class HubTask(NamedTuple):
    """Where a task's data lives on the hub and how CLIP is prompted for it."""

    repo: str
    templates: tuple[str, ...]
    description: str
    test_split: str = "test"  # the dataset's split that serves as our "test"
    label_column: str | None = None  # when the label column is not found by itself


_CIFAR = tuple(
    f"a {quality}photo of {article} {size}{{c}}."
    for article in ("a", "the")
    for quality, size in [("", ""), ("blurry ", ""), ("black and white ", ""), ("low contrast ", ""),
                          ("high contrast ", ""), ("bad ", ""), ("good ", ""), ("", "small "), ("", "big ")]
)
_A_THE = ("a photo of a {c}.", "a photo of the {c}.")

TALL14_EXTRA = ("oxford_flowers102", "pcam", "fer2013", "oxford-iiit-pet", "stl10", "cifar100")
"""The six tasks TALL14 adds to the paper's eight, in FusionBench's order."""
TALL20_EXTRA = ("cifar10", "food101", "fashion_mnist", "emnist_letters", "kmnist", "rendered-sst2")
"""The six more tasks of TALL20, in FusionBench's order."""

TALL_TASKS: dict[str, HubTask] = {
    "oxford_flowers102": HubTask("dpdl-benchmark/oxford_flowers102", ("a photo of a {c}, a type of flower.",),
                                 "Oxford Flowers 102: 102 flower species"),
    "pcam": HubTask("1aurent/PatchCamelyon", ("this is a photo of {c}",),
                    "PatchCamelyon: lymph-node histology patches, with or without metastatic tissue"),
    "fer2013": HubTask(
        "clip-benchmark/wds_fer2013",
        ("a photo of a {c} looking face.", "a photo of a face showing the emotion: {c}.",
         "a photo of a face looking {c}.", "a face that looks {c}.", "they look {c}.", "look at how {c} they are."),
        "FER2013: 7 facial expressions (48 px grayscale faces)",
        label_column="cls",
    ),
    "oxford-iiit-pet": HubTask("timm/oxford-iiit-pet", ("a photo of a {c}, a type of pet.",),
                               "Oxford-IIIT Pet: 37 cat and dog breeds"),
    "stl10": HubTask("tanganke/stl10", _A_THE, "STL-10: 10 object classes (96 px)"),
    "cifar100": HubTask("tanganke/cifar100", _CIFAR, "CIFAR-100: 100 object classes (32 px)",
                        label_column="fine_label"),
    "cifar10": HubTask("tanganke/cifar10", _CIFAR, "CIFAR-10: 10 object classes (32 px)"),
    "food101": HubTask("ethz/food101", ("a photo of {c}, a type of food.",), "Food-101: 101 dishes",
                       test_split="validation"),
    "fashion_mnist": HubTask("zalando-datasets/fashion_mnist", _A_THE, "Fashion-MNIST: 10 kinds of clothing"),
    "emnist_letters": HubTask("tanganke/emnist_letters", ('a photo of the digit character: "{c}".',),
                              "EMNIST Letters: handwritten letters A-Z"),
    "kmnist": HubTask("tanganke/kmnist", ("a photo of the character {c}.",),
                      "Kuzushiji-MNIST: 10 cursive Japanese characters"),
    "rendered-sst2": HubTask("nateraw/rendered-sst2", ("a {c} review of a movie.",),
                             "Rendered SST-2: movie-review sentences rendered as images, negative or positive"),
}


def _register_all() -> None:
    for name, hub in TALL_TASKS.items():
        aliases = {"test": hub.test_split} if hub.test_split != "test" else None
        source = f"hf:{hub.repo}" + (f" (split {hub.test_split} as test)" if aliases else "")
        register_task(Task(name=name, classnames=read_classnames(name), templates=hub.templates,
                           load_split=hub_loader(name, hub.repo, None, aliases, hub.label_column),
                           description=hub.description, source=source))


_register_all()
