"""Preset zoos: the field's CLIP benchmarks, ViT-B/32, ViT-B/16 and ViT-L/14 with 8, 14 and 20 tasks.

The 8 tasks are the WEMoE paper's (Tang et al., ICML 2024, arXiv 2402.00433) and task arithmetic's; 14 and 20 are
TALL14 and TALL20 (Wang et al., ICML 2024, arXiv 2405.07813), the sets FusionBench ships experts for. The base is
OpenAI's CLIP through open_clip (``openai`` tag, QuickGELU as it was trained); the experts are the Hugging Face
CLIPVisionModel checkpoints fine-tuned by FusionBench's authors, one per task, from the same OpenAI weights
(``tanganke/clip-vit-base-patch32_<task>``...). Task names are FusionBench's; their data, class names and templates are
registered by ``wemoe.tasks.standard_tasks`` (the eight) and ``wemoe.tasks.tall_tasks`` (the twelve more). Download
sizes are estimates (parameter counts x 4 bytes, ``wemoe.zoo.memory_plan``); ``python -m wemoe zoos`` lists them with
the memory each method needs.
"""

from __future__ import annotations

from wemoe.errors import ZooError
from wemoe.zoo.zoo import ZooSpec

PAPER_TASKS = ("sun397", "stanford-cars", "resisc45", "eurosat", "svhn", "gtsrb", "mnist", "dtd")
"""The 8 tasks of the paper, in its order; the names match ``wemoe.tasks.standard_tasks``."""
TALL14_TASKS = (*PAPER_TASKS, "oxford_flowers102", "pcam", "fer2013", "oxford-iiit-pet", "stl10", "cifar100")
"""TALL14: the eight and six more, in FusionBench's order (``wemoe.tasks.tall_tasks``)."""
TALL20_TASKS = (*TALL14_TASKS, "cifar10", "food101", "fashion_mnist", "emnist_letters", "kmnist", "rendered-sst2")
"""TALL20: TALL14 and six more, in FusionBench's order."""
TASK_SETS = {8: PAPER_TASKS, 14: TALL14_TASKS, 20: TALL20_TASKS}

# preset prefix -> (open_clip model, hub name of the OpenAI model, shown name, estimated download GB per task count)
MODELS = {
    "vit-b-32": ("ViT-B-32", "clip-vit-base-patch32", "ViT-B/32", {8: 3.4, 14: 5.5, 20: 7.6}),
    "vit-b-16": ("ViT-B-16", "clip-vit-base-patch16", "ViT-B/16", {8: 3.3, 14: 5.4, 20: 7.5}),
    "vit-l-14": ("ViT-L-14", "clip-vit-large-patch14", "ViT-L/14", {8: 11.4, 14: 18.7, 20: 26.0}),
}


def _title(shown: str, count: int) -> str:
    if count == 8 and shown != "ViT-B/16":  # the WEMoE paper has ViT-B/32 and ViT-L/14
        return f"The paper's {shown} setting"
    return f"{shown}, {count} tasks" + (f" (TALL{count})" if count != 8 else "")


def _preset(prefix: str, count: int) -> ZooSpec:
    model, hub, shown, sizes = MODELS[prefix]
    tasks = TASK_SETS[count]
    sets = {8: "the paper's 8 tasks", 14: "the paper's 8 tasks and 6 more", 20: "the paper's 8 tasks and 12 more"}
    return ZooSpec(
        name=f"{prefix}-{count}tasks",
        model=model,
        pretrained="openai",
        quick_gelu=True,
        experts={task: f"tanganke/{hub}_{task}" for task in tasks},
        description=f"{_title(shown, count)}: OpenAI CLIP {shown} and {count} fine-tuned experts, {sets[count]} "
                    f"(about {sizes[count]:.1f} GB download, estimated).",
    )


PRESETS: dict[str, ZooSpec] = {spec.name: spec for spec in (_preset(p, c) for p in MODELS for c in TASK_SETS)}
"""Every preset by name: ``vit-b-32-8tasks`` ... ``vit-l-14-20tasks``."""


def list_presets() -> list[str]:
    """Names of the preset zoos."""
    return list(PRESETS)


def get_preset(name: str) -> ZooSpec:
    """The spec of a preset zoo; an unknown name raises a ZooError listing the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ZooError(
            f"Unknown zoo {name!r}. Known zoos: pocket, {', '.join(PRESETS)}; or give a custom spec "
            "(a .json file or a mapping with model, pretrained and experts)."
        ) from None
