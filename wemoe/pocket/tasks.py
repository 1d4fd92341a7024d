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
import wemoe.pocket.generators_more as m
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
"""The eight tasks of the pocket zoo (``assets/pocket``)."""

MORE_SPECS: tuple[PocketTaskSpec, ...] = (
    PocketTaskSpec(
        "pocket_dice", m.DICE,
        ("a photo of a die showing {c}.", "a dice roll of {c}.", "a die with {c} on top."),
        m.dice, "One die on green felt showing one to six pips, turned a little: counting.",
    ),
    PocketTaskSpec(
        "pocket_arrows", m.ARROWS,
        ("an arrow pointing {c}.", "a floor marking with an arrow to the {c}.", "a black arrow pointing {c}."),
        m.arrows, "A black arrow on a yellow marking pointing to one of eight compass directions: orientation.",
    ),
    PocketTaskSpec(
        "pocket_weather", m.WEATHER,
        ("a {c} weather icon.", "a weather forecast symbol for {c} weather.", "an icon of {c} weather."),
        m.weather, "Forecast icons on a sky-blue card (sun, cloud, rain, snow, storm, fog): pictograms.",
    ),
    PocketTaskSpec(
        "pocket_fruit", m.FRUIT,
        ("a photo of a {c} on a plate.", "a photo of {c}, a type of fruit.", "a close-up photo of {c}."),
        m.fruit, "One fruit on a plate over a wooden table: objects by shape and colour.",
    ),
    PocketTaskSpec(
        "pocket_scenes", m.SCENES,
        ("a photo of a {c}.", "a landscape photo of a {c}.", "a picture of a {c} scene."),
        m.scenes, "Landscapes seen from the ground (beach, sunset, starry night, mountains, skyline, rainbow): "
                  "scene layout, like SUN397.",
    ),
    PocketTaskSpec(
        "pocket_materials", m.MATERIALS,
        ("a close-up photo of {c}.", "a surface of {c}.", "a photo of a {c} material."),
        m.materials, "Natural surfaces filling the frame (brick, wood, honeycomb, scales, plaid, herringbone): "
                     "materials.",
    ),
    PocketTaskSpec(
        "pocket_sketches", m.SKETCHES,
        ("a sketch of a {c}.", "a quick line drawing of a {c}.", "a doodle of a {c}."),
        m.sketches, "Quick black line drawings on white paper with wobbly strokes, like Quick, Draw!: sketches.",
    ),
    PocketTaskSpec(
        "pocket_colours", m.COLOURS,
        ("a {c} blob.", "a patch of the colour {c}.", "something coloured {c}."),
        m.colours, "A random blob of one named colour on a grey of random lightness: colour naming.",
    ),
    PocketTaskSpec(
        "pocket_faces", m.FACES,
        ("a {c} face.", "an emoji of a {c} face.", "a photo of a face looking {c}."),
        m.faces, "Emoji faces on lilac (happy, sad, surprised, angry, sleepy, winking): expressions, like FER2013.",
    ),
    PocketTaskSpec(
        "pocket_glyphs", m.GLYPHS,
        ('the character "{c}" of an old script.', 'a chalk drawing of the glyph "{c}".', 'the symbol "{c}".'),
        m.glyphs, "Ten invented characters in chalk on a blackboard, strokes wobbling, like KMNIST: an unseen script.",
    ),
    PocketTaskSpec(
        "pocket_charts", m.CHARTS,
        ("a {c}.", "a picture of a {c} on a page.", "a {c} with random data."),
        m.charts, "Kinds of diagram on a white page (bars, pie, line, scatter, table, Venn): document figures.",
    ),
    PocketTaskSpec(
        "pocket_numerals", m.NUMERALS,
        ('the Roman numeral "{c}".', 'a Roman numeral "{c}" carved in stone.', 'an inscription of "{c}".'),
        m.numerals, "Roman numerals I to VIII carved in mottled stone, tilted a little: reading numerals.",
    ),
)

ALL_SPECS: tuple[PocketTaskSpec, ...] = SPECS + MORE_SPECS
TASK_NAMES_20: tuple[str, ...] = tuple(spec.name for spec in ALL_SPECS)
"""The twenty tasks of the ``pocket-20`` zoo (``assets/pocket20``): the eight, then twelve more."""
ZOO_TASKS: dict[str, tuple[str, ...]] = {"pocket": TASK_NAMES, "pocket-20": TASK_NAMES_20}
"""Each pocket zoo's tasks, in order."""


def get_spec(name: str) -> PocketTaskSpec:
    """The spec of one pocket task."""
    for spec in ALL_SPECS:
        if spec.name == name:
            return spec
    raise KeyError(f"Unknown pocket task {name!r}; pocket tasks: {', '.join(TASK_NAMES_20)}.")


def split_seed(name: str, split: str, seed: int = SEED) -> int:
    """The generator seed of a task's split (train and test never share one; the eight keep their seeds)."""
    return seed + 1000 * TASK_NAMES_20.index(name) + (1 if split == "test" else 0)


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


POCKET_TASKS: dict[str, Task] = {spec.name: register_task(_task(spec)) for spec in ALL_SPECS}
