"""The pocket benchmark's tasks, registered in ``wemoe.tasks.registry`` as ``pocket_digits``, ``pocket_shapes`` ...

Each task: class names (no two tasks share a class name, so their zero-shot heads stay apart), prompt templates
in the style of the CLIP papers' templates, a seeded generator, and split sizes. ``arrays(name, split)`` gives the
raw uint8 images and labels (what training uses); the registered Task's ``load_split`` wraps them as a
``datasets.Dataset`` (columns image=PIL, label=int), built once per process.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import datasets
import numpy as np
from PIL import Image

import wemoe.pocket.generators as g
from wemoe.tasks.registry import Task, register_task

SEED = 20240211
SPLIT_SIZES = {"train": 2400, "test": 480}


@dataclass(frozen=True)
class PocketTaskSpec:
    """What defines one pocket task."""

    name: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    generator: object
    description: str


SPECS: tuple[PocketTaskSpec, ...] = (
    PocketTaskSpec(
        "pocket_digits",
        ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9"),
        ('a photo of the number: "{c}".', 'a handwritten digit "{c}".', 'a black and white photo of the number "{c}".'),
        g.digits,
        "Real handwritten digits (scikit-learn's 8x8 set), upscaled and placed at random: grey on black, like MNIST.",
    ),
    PocketTaskSpec(
        "pocket_shapes",
        g.SHAPES,
        ("a drawing of a {c}.", "a bright {c} on a dark background.", "a {c} shape."),
        g.shapes,
        "One bright filled shape (circle, square, triangle, star, cross, crescent) on a navy background.",
    ),
    PocketTaskSpec(
        "pocket_textures",
        g.TEXTURES,
        ("a photo of a {c} texture.", "a photo of a {c} pattern.", "a {c} surface."),
        g.textures,
        "Full-frame pastel patterns: stripes, checks, dots, zigzags, grids, marbling, like DTD.",
    ),
    PocketTaskSpec(
        "pocket_terrain",
        g.TERRAIN,
        ("a satellite photo of {c}.", "an aerial view of {c}.", "a centered satellite photo of {c}."),
        g.terrain,
        "Land cover seen from above (forest, sea, desert, farmland, river, highway), like EuroSAT.",
    ),
    PocketTaskSpec(
        "pocket_signs",
        g.SIGNS,
        ('a zoomed in photo of a "{c}" traffic sign.', 'a photo of a "{c}" road sign.',
         'a centered photo of a "{c}" sign.'),
        g.signs,
        "Road signs against sky and road (stop, yield, no entry, turn left, priority road, roundabout), like GTSRB.",
    ),
    PocketTaskSpec(
        "pocket_flags",
        tuple(name.title() if name != "netherlands" else "the Netherlands" for name in g.FLAGS),
        ("the flag of {c}.", "a photo of the national flag of {c}.", "a waving flag of {c}."),
        g.flags,
        "Three-band national flags (France, Italy, Germany, Ireland, the Netherlands, Belgium), waved and shaded.",
    ),
    PocketTaskSpec(
        "pocket_letters",
        g.LETTERS,
        ('a photo of the letter "{c}".', 'a printed capital letter "{c}".', 'the letter "{c}" printed on paper.'),
        g.letters,
        "One printed capital letter (A, E, H, K, M, R, S, Z) in dark ink on pale paper, tilted a little.",
    ),
    PocketTaskSpec(
        "pocket_clothing",
        g.CLOTHING,
        ("a photo of a {c}.", "a product photo of a {c}.", "a {c} on a light background."),
        g.clothing,
        "A garment silhouette (t-shirt, trousers, dress, sneaker, handbag, hat) on a light background, like "
        "Fashion-MNIST.",
    ),
)

TASK_NAMES: tuple[str, ...] = tuple(spec.name for spec in SPECS)


def get_spec(name: str) -> PocketTaskSpec:
    """The spec of one pocket task."""
    for spec in SPECS:
        if spec.name == name:
            return spec
    raise KeyError(f"Unknown pocket task {name!r}; pocket tasks: {', '.join(TASK_NAMES)}.")


def split_seed(name: str, split: str, seed: int = SEED) -> int:
    """The generator seed of a task's split (train and test never share one)."""
    return seed + 1000 * TASK_NAMES.index(name) + (1 if split == "test" else 0)


@lru_cache(maxsize=64)
def arrays(name: str, split: str, size: int | None = None, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[n, 32, 32, 3]`` uint8 and labels ``[n]`` of a split (cached in-process; treat as read-only)."""
    if split not in SPLIT_SIZES:
        raise ValueError(f"Pocket tasks have the splits {list(SPLIT_SIZES)}, not {split!r}.")
    spec = get_spec(name)
    n = size if size is not None else SPLIT_SIZES[split]
    rng = np.random.default_rng(split_seed(name, split, seed))
    if spec.generator is g.digits:
        images, labels = g.digits(rng, n, split)
    else:
        images, labels = spec.generator(rng, n)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


@lru_cache(maxsize=32)
def dataset(name: str, split: str) -> datasets.Dataset:
    """A split as a ``datasets.Dataset`` with ``image`` (PIL) and ``label`` (ClassLabel) columns."""
    images, labels = arrays(name, split)
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=list(get_spec(name).classnames))})
    return datasets.Dataset.from_dict({"image": [Image.fromarray(a) for a in images], "label": labels.tolist()},
                                      features=features)


def _task(spec: PocketTaskSpec) -> Task:
    return Task(
        name=spec.name,
        classnames=spec.classnames,
        templates=spec.templates,
        load_split=lambda split, name=spec.name: dataset(name, split),
        description=spec.description,
        source="wemoe.pocket (generated offline)",
    )


POCKET_TASKS: dict[str, Task] = {spec.name: register_task(_task(spec)) for spec in SPECS}
