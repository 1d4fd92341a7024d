"""Drawn digits under the pocket zoo's digits head, as the sketchpad sends them and after `drawing_like_digits`.

A script draws the ten digits as the app's sketchpad would get them (white 16 px round brush on a 224x224 black
canvas): two stroke styles per digit, each at a large centred and a smaller off-centre placement (``--per-digit``
of these four variants, in that order). Each drawing is classified by the pocket zoo's ``pocket_digits`` expert
and by the pretrained model under the ``pocket_digits`` zero-shot head (top-1 of ``wemoe.moe.routing.top_k``, as the app
does), once as drawn (the old path: the 224x224 drawing through the zoo's preprocess) and once through
``wemoe.pocket.sketch.drawing_like_digits``. Prints one line per drawing, the accuracies, then one JSON line.

    python bench/sketch_digits.py [--per-digit 4] [--save-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw

if TYPE_CHECKING:
    from wemoe.workbench.workbench import Workbench

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

Point = tuple[float, float]
Stroke = list[Point]
CANVAS = 224
BRUSH = 16


def arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float, steps: int = 24) -> Stroke:
    """Points of an elliptic arc in the unit box (angles in degrees, 0 = right, 90 = down, as on screen)."""
    return [(cx + rx * math.cos(math.radians(start + (end - start) * k / steps)),
             cy + ry * math.sin(math.radians(start + (end - start) * k / steps))) for k in range(steps + 1)]


# Per digit, two styles; each a list of strokes in a unit box (x right, y down; a drawing spans about 0-1 in y).
STYLES: dict[int, tuple[list[Stroke], list[Stroke]]] = {
    0: ([arc(0.5, 0.5, 0.32, 0.47, -90, 270)],
        [[(x + 0.1 * (0.5 - y), y) for x, y in arc(0.5, 0.5, 0.26, 0.47, -100, 265)]]),
    1: ([[(0.5, 0.03), (0.5, 0.97)]],
        [[(0.3, 0.22), (0.55, 0.03), (0.5, 0.97)], [(0.3, 0.97), (0.72, 0.97)]]),
    2: ([arc(0.5, 0.3, 0.3, 0.27, 190, 360) + arc(0.5, 0.3, 0.3, 0.27, 0, 60)[1:] + [(0.18, 0.97), (0.85, 0.97)]],
        [arc(0.45, 0.3, 0.3, 0.27, 200, 380) + [(0.15, 0.95)] + arc(0.45, 0.95, 0.35, 0.06, 180, 360)[12:]]),
    3: ([arc(0.48, 0.27, 0.3, 0.24, 200, 450) + arc(0.48, 0.73, 0.33, 0.24, -90, 160)[1:]],
        [[(0.2, 0.03), (0.8, 0.03), (0.45, 0.42)] + arc(0.5, 0.7, 0.32, 0.27, -100, 150)]),
    4: ([[(0.68, 0.97), (0.68, 0.03), (0.15, 0.68), (0.88, 0.68)]],
        [[(0.28, 0.03), (0.22, 0.56), (0.85, 0.56)], [(0.68, 0.25), (0.66, 0.97)]]),
    5: ([[(0.8, 0.03), (0.3, 0.03), (0.26, 0.45)] + arc(0.48, 0.68, 0.32, 0.29, -130, 150)],
        [[(0.3, 0.05), (0.25, 0.45)] + arc(0.5, 0.68, 0.3, 0.29, -140, 145), [(0.3, 0.05), (0.82, 0.03)]]),
    6: ([arc(0.62, 0.55, 0.4, 0.52, -80, -180) + arc(0.5, 0.7, 0.3, 0.27, 180, 540)[1:]],
        [[(0.7, 0.03), (0.3, 0.5)] + arc(0.5, 0.7, 0.28, 0.27, 200, 560)[1:]]),
    7: ([[(0.15, 0.03), (0.85, 0.03), (0.38, 0.97)]],
        [[(0.15, 0.1), (0.82, 0.03), (0.45, 0.97)], [(0.32, 0.5), (0.78, 0.5)]]),
    8: ([arc(0.5, 0.26, 0.25, 0.23, 90, 450), arc(0.5, 0.72, 0.3, 0.25, -90, 270)],
        [arc(0.5, 0.25, 0.25, 0.22, 45, 315) + arc(0.5, 0.72, 0.3, 0.25, -45, 225)[::-1] + [(0.68, 0.09)]]),
    9: ([arc(0.5, 0.3, 0.3, 0.27, 0, 360), [(0.8, 0.3), (0.72, 0.97)]],
        [arc(0.5, 0.3, 0.28, 0.27, -20, 340), [(0.78, 0.22), (0.7, 0.75)] + arc(0.45, 0.75, 0.25, 0.22, 0, 110)]),
}
# (height in px, left, top) of a drawing's box on the canvas: large and centred, then smaller and off-centre
PLACEMENTS = ((160, 62, 32), (100, 36, 20))


def draw_digit(digit: int, style: int, placement: int) -> Image.Image:
    """One scripted drawing: a digit's strokes, white 16 px round brush on a 224x224 black RGB canvas."""
    height, left, top = PLACEMENTS[placement]
    width = 0.7 * height
    image = Image.new("RGB", (CANVAS, CANVAS), "black")
    draw = ImageDraw.Draw(image)
    for stroke in STYLES[digit][style]:
        points = [(left + x * width, top + y * height) for x, y in stroke]
        draw.line(points, fill="white", width=BRUSH, joint="curve")
        for x, y in (points[0], points[-1]):  # round caps, as a brush leaves
            draw.ellipse([x - BRUSH / 2, y - BRUSH / 2, x + BRUSH / 2, y + BRUSH / 2], fill="white")
    return image


def drawings(per_digit: int = 4) -> list[tuple[Image.Image, int, str]]:
    """``per_digit`` drawings of each digit (variants: style 0 large, style 1 large, style 0 small, style 1 small)."""
    variants = [(style, placement) for placement in range(len(PLACEMENTS)) for style in range(2)][:per_digit]
    return [(draw_digit(digit, style, placement), digit, f"{digit}-s{style}{'LS'[placement]}")
            for digit in range(10) for style, placement in variants]


def classify(bench: Workbench, images: Sequence[Image.Image]) -> dict[str, list[int]]:
    """Top-1 digit of each image for the pocket_digits expert and the pretrained model, under the digits head."""
    from wemoe.moe.routing import top_k
    from wemoe.tasks.images import encode_images

    task = "pocket_digits"
    head = bench.heads()[task]
    classnames = next(t.classnames for t in bench.tasks if t.name == task)
    batch = encode_images(list(images), bench.zoo.preprocess)
    towers = {"expert": bench.zoo.expert_visual(task), "pretrained": bench.zoo.visual}
    return {name: [int(ranked[0][0]) for ranked in top_k(tower, batch, head, classnames, k=1)]
            for name, tower in towers.items()}


def measure(bench: Workbench, per_digit: int = 4, save_dir: str | None = None) -> dict:
    """Accuracy (%) of the expert and the pretrained model on the scripted drawings, before and after preprocessing."""
    from wemoe.pocket.sketch import drawing_like_digits

    drawn = drawings(per_digit)
    labels = [label for _, label, _ in drawn]
    raw = [image for image, _, _ in drawn]
    processed = [drawing_like_digits(image) for image in raw]
    if save_dir:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        for (image, _, name), after in zip(drawn, processed, strict=True):
            image.save(Path(save_dir) / f"{name}.png")
            after.resize((128, 128), Image.NEAREST).save(Path(save_dir) / f"{name}-after.png")
    before, after = classify(bench, raw), classify(bench, processed)
    result: dict = {"drawings": len(drawn)}
    for name in before:
        for when, predictions in (("before", before[name]), ("after", after[name])):
            correct = sum(p == y for p, y in zip(predictions, labels, strict=True))
            result[f"{name}_{when}"] = 100.0 * correct / len(labels)
    result["predictions"] = {name: {"before": before[name], "after": after[name]} for name in before}
    result["labels"] = labels
    result["names"] = [name for _, _, name in drawn]
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-digit", type=int, default=4, choices=range(1, 5), help="drawings per digit (1-4)")
    parser.add_argument("--save-dir", default=None, help="also save each drawing and its preprocessed image here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark on the shipped pocket zoo; print per-drawing predictions, accuracies and a JSON line."""
    from wemoe.loading import load_zoo
    from wemoe.workbench.workbench import Workbench

    args = parse_args(argv)
    result = measure(Workbench(load_zoo("pocket")), args.per_digit, args.save_dir)
    print(f"{'drawing':<10} {'expert before':>14} {'expert after':>13} {'pretr. before':>14} {'pretr. after':>13}")
    expert, pretrained = result["predictions"]["expert"], result["predictions"]["pretrained"]
    for i, name in enumerate(result["names"]):
        print(f"{name:<10} {expert['before'][i]:>14} {expert['after'][i]:>13} "
              f"{pretrained['before'][i]:>14} {pretrained['after'][i]:>13}")
    for name in ("expert", "pretrained"):
        print(f"{name}: {result[f'{name}_before']:.1f}% before, {result[f'{name}_after']:.1f}% after "
              f"({result['drawings']} drawings)")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
