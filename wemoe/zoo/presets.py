"""Preset zoos: the WEMoE paper's setting (Tang et al., ICML 2024, arXiv 2402.00433).

The base is OpenAI's CLIP through open_clip (``openai`` tag, QuickGELU as it was trained); the experts are the
Hugging Face CLIPVisionModel checkpoints fine-tuned by the paper's authors (FusionBench), one per task, from the
same OpenAI weights (``openai/clip-vit-base-patch32`` / ``-large-patch14`` on the hub).
"""

from __future__ import annotations

from wemoe.errors import ZooError
from wemoe.zoo.zoo import ZooSpec

PAPER_TASKS = ("sun397", "stanford-cars", "resisc45", "eurosat", "svhn", "gtsrb", "mnist", "dtd")
"""The 8 tasks of the paper, in its order; the names match ``wemoe.tasks.standard_tasks``."""

PRESETS: dict[str, ZooSpec] = {
    "vit-b-32-8tasks": ZooSpec(
        name="vit-b-32-8tasks",
        model="ViT-B-32",
        pretrained="openai",
        quick_gelu=True,
        experts={task: f"tanganke/clip-vit-base-patch32_{task}" for task in PAPER_TASKS},
        description="The paper's ViT-B/32 setting: OpenAI CLIP ViT-B/32 and 8 fine-tuned experts "
                    "(about 3 GB download).",
    ),
    "vit-l-14-8tasks": ZooSpec(
        name="vit-l-14-8tasks",
        model="ViT-L-14",
        pretrained="openai",
        quick_gelu=True,
        experts={task: f"tanganke/clip-vit-large-patch14_{task}" for task in PAPER_TASKS},
        description="The paper's ViT-L/14 setting: OpenAI CLIP ViT-L/14 and 8 fine-tuned experts "
                    "(about 11 GB download).",
    ),
}


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
