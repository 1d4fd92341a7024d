"""The twelve further pocket tasks of the twenty-task zoo (``pocket-20``): seeded 32x32 generators like
``wemoe.pocket.generators``' eight, each a different visual skill and look.

dice (counting pips on green felt), arrows (orientation on a yellow marking), weather (icons on a sky-blue card),
fruit (objects by shape and colour on a plate), scenes (landscape layouts, seen from the ground), materials (natural
textures), sketches (jittered black line drawings on white paper, as Quick, Draw!), colours (naming a blob's colour on
grey), faces (emoji expressions on lilac), glyphs (an invented script in chalk on a blackboard, as KMNIST), charts
(kinds of diagram on white) and numerals (Roman numerals carved in stone). Every generator has the signature
``generate(rng, n) -> (images [n, 32, 32, 3] uint8, labels [n] int64)`` and depends on nothing but ``rng``.
"""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from wemoe.pocket.generators import SIZE, _font, _jitter, _labels, _noise

Point = tuple[float, float]


def _canvas(rng: np.random.Generator, colour: tuple[int, int, int],
            amount: int = 15) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGB", (SIZE, SIZE), _jitter(rng, colour, amount))
    return image, ImageDraw.Draw(image)


def _finish(rng: np.random.Generator, image: Image.Image, sigma: float = 6, smooth: bool = False) -> np.ndarray:
    if smooth:
        image = image.filter(ImageFilter.SMOOTH)
    return _noise(rng, np.asarray(image), sigma)


# ---------------------------------------------------------------------------------------------------------------
# dice: one ivory die seen from above on green felt, one to six black pips

DICE = ("one", "two", "three", "four", "five", "six")
_PIPS = {1: [(0, 0)], 2: [(-1, -1), (1, 1)], 3: [(-1, -1), (0, 0), (1, 1)], 4: [(-1, -1), (1, -1), (-1, 1), (1, 1)],
         5: [(-1, -1), (1, -1), (0, 0), (-1, 1), (1, 1)], 6: [(-1, -1), (1, -1), (-1, 0), (1, 0), (-1, 1), (1, 1)]}


def dice(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A die showing one to six pips, slightly turned, on green felt."""
    labels = _labels(rng, n, len(DICE))
    out = np.zeros((n, SIZE, SIZE, 3), np.uint8)
    for i, label in enumerate(labels):
        big = Image.new("RGB", (48, 48), _jitter(rng, (30, 110, 50), 15))
        draw = ImageDraw.Draw(big)
        half = rng.uniform(12, 15)
        cx, cy = 24 + rng.uniform(-3, 3, 2)
        draw.rounded_rectangle([cx - half, cy - half, cx + half, cy + half], radius=4,
                               fill=_jitter(rng, (240, 235, 215), 12))
        step, r = half * 0.55, half * 0.17
        ink = _jitter(rng, (25, 25, 30), 15)
        for dx, dy in _PIPS[int(label) + 1]:
            px, py = cx + dx * step, cy + dy * step
            draw.ellipse([px - r, py - r, px + r, py + r], fill=ink)
        big = big.rotate(rng.uniform(-25, 25), resample=Image.BILINEAR, fillcolor=_jitter(rng, (30, 110, 50), 5))
        out[i] = _finish(rng, big.crop((8, 8, 40, 40)), 5)
    return out, labels


# ---------------------------------------------------------------------------------------------------------------
# arrows: a thick black arrow on a yellow floor marking, pointing to one of eight compass directions

ARROWS = ("north", "north-east", "east", "south-east", "south", "south-west", "west", "north-west")


def arrows(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A black arrow on yellow, pointing north, north-east ... north-west (up is north), turned up to 10 degrees."""
    labels = _labels(rng, n, len(ARROWS))
    out = np.zeros((n, SIZE, SIZE, 3), np.uint8)
    shape = [(0, -12), (8, -3), (3, -3), (3, 11), (-3, 11), (-3, -3), (-8, -3)]  # pointing up
    for i, label in enumerate(labels):
        image, draw = _canvas(rng, (235, 195, 40), 20)
        angle = np.deg2rad(45 * int(label) + rng.uniform(-10, 10))
        s = rng.uniform(0.85, 1.15)
        cx, cy = 16 + rng.uniform(-2, 2, 2)
        c, sn = np.cos(angle), np.sin(angle)
        points = [(cx + s * (x * c - y * sn), cy + s * (x * sn + y * c)) for x, y in shape]
        draw.polygon(points, fill=_jitter(rng, (20, 20, 20), 15))
        out[i] = _finish(rng, image, 7, smooth=True)
    return out, labels


# ---------------------------------------------------------------------------------------------------------------
# weather: a forecast icon on a sky-blue card

WEATHER = ("sunny", "cloudy", "rainy", "snowy", "stormy", "foggy")


def _cloud(draw: ImageDraw.ImageDraw, cx: float, cy: float, s: float, colour) -> None:
    for dx, dy, r in ((-6, 2, 5), (0, -2, 7), (6, 2, 5)):
        draw.ellipse([cx + s * (dx - r), cy + s * (dy - r), cx + s * (dx + r), cy + s * (dy + r)], fill=colour)
    draw.rectangle([cx - 11 * s, cy + 1 * s, cx + 11 * s, cy + 7 * s], fill=colour)


def weather(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sun, cloud, cloud with rain, cloud with snowflakes, dark cloud with a lightning bolt, or bands of fog."""
    labels = _labels(rng, n, len(WEATHER))
    out = np.zeros((n, SIZE, SIZE, 3), np.uint8)
    for i, label in enumerate(labels):
        image, draw = _canvas(rng, (120, 175, 225), 15)
        s = rng.uniform(0.85, 1.1)
        cx, cy = 16 + rng.uniform(-2, 2), 13 + rng.uniform(-2, 2)
        name = WEATHER[label]
        if name == "sunny":
            cy += 3
            for k in range(8):
                a = 2 * np.pi * k / 8 + rng.uniform(0, 0.3)
                draw.line([(cx + 8 * s * np.cos(a), cy + 8 * s * np.sin(a)),
                           (cx + 13 * s * np.cos(a), cy + 13 * s * np.sin(a))], fill=(250, 200, 30), width=2)
            draw.ellipse([cx - 6 * s, cy - 6 * s, cx + 6 * s, cy + 6 * s], fill=_jitter(rng, (250, 215, 40), 10))
        elif name == "foggy":
            for k in range(4):
                y = 8 + 5 * k + rng.uniform(-1, 1)
                draw.line([(5 + rng.uniform(0, 4), y), (27 - rng.uniform(0, 4), y)], fill=(235, 235, 240), width=2)
        else:
            grey = (90, 90, 100) if name == "stormy" else (240, 240, 245)
            _cloud(draw, cx, cy, s, _jitter(rng, grey, 10))
            if name == "rainy":
                for k in range(4):
                    x = cx - 8 + 5 * k
                    draw.line([(x, cy + 10), (x - 2, cy + 15)], fill=(30, 60, 200), width=2)
            elif name == "snowy":
                for k in range(4):
                    x, y = cx - 8 + 5 * k, cy + 11 + 3 * (k % 2)
                    draw.line([(x - 2, y), (x + 2, y)], fill=(255, 255, 255))
                    draw.line([(x, y - 2), (x, y + 2)], fill=(255, 255, 255))
            elif name == "stormy":
                draw.polygon([(cx + 1, cy + 7), (cx - 4, cy + 13), (cx, cy + 13), (cx - 3, cy + 19), (cx + 5, cy + 11),
                              (cx + 1, cy + 11), (cx + 4, cy + 7)], fill=(255, 220, 0))
        out[i] = _finish(rng, image, 6)
    return out, labels


# ---------------------------------------------------------------------------------------------------------------
# fruit: one fruit on a pale plate over a dark wooden table

FRUIT = ("apple", "banana", "grapes", "lemon", "cherries", "watermelon", "pear")


def fruit(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """An apple, banana, bunch of grapes, lemon, pair of cherries, watermelon slice or pear on a plate."""
    labels = _labels(rng, n, len(FRUIT))
    out = np.zeros((n, SIZE, SIZE, 3), np.uint8)
    for i, label in enumerate(labels):
        image, draw = _canvas(rng, (90, 60, 35), 15)
        draw.ellipse([1, 1, 31, 31], fill=_jitter(rng, (230, 230, 225), 10))
        cx, cy = 16 + rng.uniform(-2, 2, 2)
        s = rng.uniform(0.85, 1.1)
        name = FRUIT[label]
        stem = (90, 60, 20)
        if name == "apple":
            draw.ellipse([cx - 8 * s, cy - 7 * s, cx + 8 * s, cy + 8 * s], fill=_jitter(rng, (200, 30, 30), 20))
            draw.line([(cx, cy - 7 * s), (cx + 1, cy - 11 * s)], fill=stem, width=2)
            draw.ellipse([cx + 1, cy - 11 * s, cx + 6 * s, cy - 8 * s], fill=(60, 150, 40))
        elif name == "banana":
            draw.chord([cx - 11 * s, cy - 14 * s, cx + 11 * s, cy + 8 * s], 20, 160,
                       fill=_jitter(rng, (240, 210, 50), 15))
            draw.chord([cx - 11 * s, cy - 20 * s, cx + 11 * s, cy + 2 * s], 20, 160, fill=(230, 230, 225))
        elif name == "grapes":
            colour = _jitter(rng, (110, 40, 130), 20)
            for row, count in enumerate((4, 3, 2, 1)):
                for k in range(count):
                    x, y = cx + (k - (count - 1) / 2) * 5 * s, cy - 7 * s + row * 5 * s
                    draw.ellipse([x - 3 * s, y - 3 * s, x + 3 * s, y + 3 * s], fill=colour, outline=(70, 20, 80))
        elif name == "lemon":
            draw.ellipse([cx - 10 * s, cy - 6 * s, cx + 10 * s, cy + 6 * s], fill=_jitter(rng, (245, 230, 60), 12))
            draw.polygon([(cx - 12 * s, cy), (cx - 8 * s, cy - 2 * s), (cx - 8 * s, cy + 2 * s)], fill=(245, 230, 60))
            draw.polygon([(cx + 12 * s, cy), (cx + 8 * s, cy - 2 * s), (cx + 8 * s, cy + 2 * s)], fill=(245, 230, 60))
        elif name == "cherries":
            colour = _jitter(rng, (150, 0, 30), 20)
            for dx in (-5, 5):
                x, y = cx + dx * s, cy + 4 * s
                draw.line([(x, y), (cx + rng.uniform(-1, 1), cy - 10 * s)], fill=(60, 120, 30), width=1)
                draw.ellipse([x - 4 * s, y - 4 * s, x + 4 * s, y + 4 * s], fill=colour)
        elif name == "watermelon":
            draw.pieslice([cx - 13 * s, cy - 12 * s, cx + 13 * s, cy + 14 * s], 0, 180, fill=(40, 130, 40))
            draw.pieslice([cx - 11 * s, cy - 10 * s, cx + 11 * s, cy + 12 * s], 0, 180,
                          fill=_jitter(rng, (235, 60, 70), 15))
            for k in range(4):
                x = cx + (k - 1.5) * 5 * s
                draw.ellipse([x - 1, cy + 5 * s - 1, x + 1, cy + 5 * s + 1], fill=(20, 20, 20))
        else:
            colour = _jitter(rng, (170, 200, 60), 15)
            draw.ellipse([cx - 8 * s, cy - 2 * s, cx + 8 * s, cy + 12 * s], fill=colour)
            draw.ellipse([cx - 5 * s, cy - 10 * s, cx + 5 * s, cy + 2 * s], fill=colour)
            draw.line([(cx, cy - 10 * s), (cx + 1, cy - 13 * s)], fill=stem, width=2)
        out[i] = _finish(rng, image, 6)
    return out, labels


# ---------------------------------------------------------------------------------------------------------------
# scenes: a landscape seen from the ground

SCENES = ("beach", "sunset", "starry night", "mountain range", "city skyline", "rainbow")


def _vertical(top, bottom, height: int) -> np.ndarray:
    t = np.linspace(0, 1, height)[:, None]
    return np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t


def scenes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A beach, sunset, starry night, mountain range, city skyline or rainbow, horizon at a random height."""
    labels = _labels(rng, n, len(SCENES))
    out = np.zeros((n, SIZE, SIZE, 3), np.uint8)
    for i, label in enumerate(labels):
        name = SCENES[label]
        horizon = int(rng.integers(16, 23))
        sky = {"sunset": ((250, 120, 40), (120, 40, 110)), "starry night": ((10, 10, 40), (30, 30, 80))}.get(
            name, ((90, 150, 230), (170, 210, 245)))
        grid = np.repeat(_vertical(_jitter(rng, sky[0], 15), _jitter(rng, sky[1], 15), SIZE)[:, None, :], SIZE, 1)
        image = Image.fromarray(grid.astype(np.uint8))
        draw = ImageDraw.Draw(image)
        if name == "beach":
            draw.rectangle([0, horizon - 6, SIZE, horizon], fill=_jitter(rng, (30, 100, 190), 15))
            draw.rectangle([0, horizon, SIZE, SIZE], fill=_jitter(rng, (235, 215, 160), 15))
        elif name == "sunset":
            x = rng.uniform(8, 24)
            draw.ellipse([x - 6, horizon - 6, x + 6, horizon + 6], fill=(255, 220, 90))
            draw.rectangle([0, horizon, SIZE, SIZE], fill=_jitter(rng, (40, 20, 40), 10))
        elif name == "starry night":
            for _ in range(int(rng.integers(12, 20))):
                x, y = rng.integers(0, SIZE, 2)
                draw.point((int(x), int(y) * horizon // SIZE), fill=(255, 255, 230))
            x = rng.uniform(6, 26)
            draw.ellipse([x - 3, 4, x + 3, 10], fill=(245, 245, 210))
            draw.rectangle([0, horizon, SIZE, SIZE], fill=_jitter(rng, (15, 25, 20), 8))
        elif name == "mountain range":
            draw.rectangle([0, horizon, SIZE, SIZE], fill=_jitter(rng, (60, 130, 50), 15))
            for _ in range(3):
                x, h = rng.uniform(0, SIZE), rng.uniform(9, 15)
                draw.polygon([(x - h, horizon), (x, horizon - h), (x + h, horizon)],
                             fill=_jitter(rng, (110, 105, 115), 10))
                draw.polygon([(x - h / 4, horizon - h * 0.75), (x, horizon - h), (x + h / 4, horizon - h * 0.75)],
                             fill=(250, 250, 250))
        elif name == "city skyline":
            draw.rectangle([0, horizon, SIZE, SIZE], fill=(50, 50, 55))
            x = 0
            while x < SIZE:
                w, h = int(rng.integers(3, 7)), int(rng.integers(6, 16))
                draw.rectangle([x, horizon - h, x + w - 1, horizon], fill=_jitter(rng, (40, 40, 50), 10))
                for wy in range(horizon - h + 2, horizon - 1, 3):
                    if rng.random() < 0.6:
                        draw.point((x + 1, wy), fill=(250, 230, 120))
                x += w + int(rng.integers(0, 2))
        else:
            draw.rectangle([0, horizon, SIZE, SIZE], fill=_jitter(rng, (70, 160, 60), 15))
            cx, r = rng.uniform(10, 22), rng.uniform(14, 18)
            for k, colour in enumerate(((230, 40, 40), (245, 150, 30), (245, 230, 50), (60, 180, 60), (50, 90, 220))):
                rr = r - 2 * k
                draw.arc([cx - rr, horizon - rr, cx + rr, horizon + rr], 180, 360, fill=colour, width=2)
        out[i] = _finish(rng, image, 5)
    return out, labels


# ---------------------------------------------------------------------------------------------------------------
# materials: natural surfaces filling the frame

MATERIALS = ("brick wall", "wood grain", "honeycomb", "fish scales", "plaid", "herringbone")


def materials(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Brick, wood grain, honeycomb, fish scales, plaid or herringbone, at a random scale and offset."""
    labels = _labels(rng, n, len(MATERIALS))
    out = np.zeros((n, SIZE, SIZE, 3), np.uint8)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    for i, label in enumerate(labels):
        name = MATERIALS[label]
        ox, oy = rng.uniform(0, 16, 2)
        x, y = xx + ox, yy + oy
        if name == "brick wall":
            h = rng.uniform(5, 7)
            w = 2 * h
            row = np.floor(y / h)
            mortar = ((y % h) < 1.2) | (((x + (row % 2) * w / 2) % w) < 1.2)
            image = np.where(mortar[..., None], _jitter(rng, (200, 195, 185), 10), _jitter(rng, (160, 60, 40), 20))
        elif name == "wood grain":
            period = rng.uniform(3, 5)
            rings = np.sin((y + 3 * np.sin(x / rng.uniform(6, 10))) / period * 2 * np.pi)
            light, dark = np.array(_jitter(rng, (200, 150, 90), 15)), np.array(_jitter(rng, (130, 80, 40), 15))
            image = dark + (light - dark) * (0.5 + 0.5 * rings)[..., None]
        elif name == "honeycomb":
            r = rng.uniform(3.5, 5)
            qx, qy = x / (1.5 * r), y / (np.sqrt(3) * r)
            col = np.round(qx)
            cy = np.round(qy - (col % 2) / 2) + (col % 2) / 2
            d = np.hypot((qx - col) * 1.5, (qy - cy) * np.sqrt(3))
            image = np.where((d > 0.8)[..., None], _jitter(rng, (150, 90, 10), 15), _jitter(rng, (250, 190, 50), 15))
        elif name == "fish scales":
            r = rng.uniform(3, 5)
            row = np.floor(y / r)
            cx = (x + (row % 2) * r) % (2 * r) - r
            d = np.hypot(cx, y % r - r)
            edge = np.abs(d - r) < 0.8
            image = np.where(edge[..., None], _jitter(rng, (20, 70, 80), 10), _jitter(rng, (90, 180, 170), 20))
        elif name == "plaid":
            a, b = rng.uniform(6, 10), rng.uniform(1.5, 3)
            band_x, band_y = (x % a) < b, (y % a) < b
            base = np.array(_jitter(rng, (40, 90, 60), 20), np.float32)
            stripe = np.array(_jitter(rng, (180, 40, 40), 20), np.float32)
            weight = (band_x.astype(np.float32) + band_y) / 2
            image = base + (stripe - base) * weight[..., None]
        else:
            w = rng.uniform(4, 6)
            column = np.floor(x / w)
            slope = np.where(column % 2 == 0, 1.0, -1.0)
            stripes = ((y + slope * (x % w)) % 4) < 2
            image = np.where(stripes[..., None], _jitter(rng, (120, 120, 130), 15), _jitter(rng, (60, 60, 70), 15))
        out[i] = _noise(rng, np.clip(np.asarray(image, np.float32), 0, 255), 7)
    return out, labels


# ---------------------------------------------------------------------------------------------------------------
# sketches: a quick black line drawing on white paper, every point jittered

SKETCHES = ("house", "tree", "car", "fish", "umbrella", "cup", "key", "ladder")
_STROKES: dict[str, list[list[Point]]] = {
    "house": [[(-9, 0), (-9, 11), (9, 11), (9, 0)], [(-11, 1), (0, -10), (11, 1)],
              [(-2, 11), (-2, 4), (3, 4), (3, 11)]],
    "tree": [[(-2, 11), (-2, 2)], [(2, 11), (2, 2)], [(-9, 3), (-8, -6), (0, -11), (8, -6), (9, 3), (-9, 3)]],
    "car": [[(-12, 4), (-12, -1), (-6, -2), (-3, -7), (5, -7), (8, -2), (12, -1), (12, 4), (-12, 4)],
            [(-9, 4), (-7, 8), (-5, 4)], [(5, 4), (7, 8), (9, 4)]],
    "fish": [[(-10, 0), (-4, -5), (4, -4), (8, 0), (4, 4), (-4, 5), (-10, 0)], [(8, 0), (12, -5), (12, 5), (8, 0)],
             [(-5, -1), (-5, -1.5)]],
    "umbrella": [[(-11, 0), (-7, -7), (0, -10), (7, -7), (11, 0), (-11, 0)], [(0, 0), (0, 10), (-3, 10), (-3, 8)]],
    "cup": [[(-7, -7), (-6, 9), (6, 9), (7, -7)], [(7, -4), (11, -3), (11, 3), (6, 4)], [(-7, -7), (7, -7)]],
    "key": [[(-11, -3), (-5, -3), (-5, 3), (-11, 3), (-11, -3)], [(-5, 0), (11, 0)], [(7, 0), (7, 5)],
            [(10, 0), (10, 4)]],
    "ladder": [[(-5, -12), (-5, 12)], [(5, -12), (5, 12)], [(-5, -7), (5, -7)], [(-5, -1), (5, -1)], [(-5, 5), (5, 5)],
               [(-5, 10), (5, 10)]],
}


def sketches(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A house, tree, car, fish, umbrella, cup, key or ladder drawn in black strokes on white, points jittered."""
    labels = _labels(rng, n, len(SKETCHES))
    out = np.zeros((n, SIZE, SIZE, 3), np.uint8)
    for i, label in enumerate(labels):
        image, draw = _canvas(rng, (250, 250, 248), 4)
        s = rng.uniform(0.85, 1.15)
        angle = rng.uniform(-0.25, 0.25)
        c, sn = np.cos(angle), np.sin(angle)
        cx, cy = 16 + rng.uniform(-2, 2, 2)
        width = int(rng.integers(1, 3))
        for stroke in _STROKES[SKETCHES[label]]:
            points = [(px + rng.uniform(-0.8, 0.8), py + rng.uniform(-0.8, 0.8)) for px, py in stroke]
            points = [(cx + s * (px * c - py * sn), cy + s * (px * sn + py * c)) for px, py in points]
            if len(points) == 2 and points[0] == points[1]:
                continue
            draw.line(points, fill=_jitter(rng, (20, 20, 20), 15), width=width)
        out[i] = _finish(rng, image, 4)
    return out, labels


# ---------------------------------------------------------------------------------------------------------------
# colours: a blob of one named colour on grey

COLOURS = ("scarlet", "amber", "lime", "teal", "indigo", "magenta", "brown", "pink")
_HSV = {"scarlet": (0.0, 0.9, 0.85), "amber": (0.11, 0.95, 0.95), "lime": (0.25, 0.85, 0.85),
        "teal": (0.5, 0.9, 0.55), "indigo": (0.7, 0.85, 0.55), "magenta": (0.85, 0.85, 0.9),
        "brown": (0.07, 0.75, 0.45), "pink": (0.95, 0.35, 0.98)}


def colours(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A random polygon blob in scarlet, amber, lime, teal, indigo, magenta, brown or pink on a grey of random
    lightness."""
    labels = _labels(rng, n, len(COLOURS))
    out = np.zeros((n, SIZE, SIZE, 3), np.uint8)
    for i, label in enumerate(labels):
        grey = int(rng.integers(70, 200))
        image, draw = _canvas(rng, (grey, grey, grey), 6)
        h, s, v = _HSV[COLOURS[label]]
        rgb = colorsys.hsv_to_rgb((h + rng.uniform(-0.02, 0.02)) % 1, np.clip(s + rng.uniform(-0.08, 0.08), 0, 1),
                                  np.clip(v + rng.uniform(-0.08, 0.08), 0, 1))
        sides = int(rng.integers(5, 9))
        cx, cy = 16 + rng.uniform(-3, 3, 2)
        points = [(cx + r * np.cos(a), cy + r * np.sin(a))
                  for a, r in zip(np.sort(rng.uniform(0, 2 * np.pi, sides)), rng.uniform(7, 13, sides), strict=True)]
        draw.polygon(points, fill=tuple(int(255 * v) for v in rgb))
        out[i] = _finish(rng, image, 5, smooth=True)
    return out, labels


# ---------------------------------------------------------------------------------------------------------------
# faces: an emoji face on lilac, one expression each

FACES = ("happy", "sad", "surprised", "angry", "sleepy", "winking")


def faces(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A yellow emoji face: happy, sad, surprised, angry, sleepy or winking."""
    labels = _labels(rng, n, len(FACES))
    out = np.zeros((n, SIZE, SIZE, 3), np.uint8)
    for i, label in enumerate(labels):
        image, draw = _canvas(rng, (200, 180, 230), 15)
        name = FACES[label]
        r = rng.uniform(11, 14)
        cx, cy = 16 + rng.uniform(-1.5, 1.5, 2)
        face = (230, 110, 60) if name == "angry" else (250, 210, 50)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_jitter(rng, face, 12))
        ink = (60, 30, 20)
        ex, ey = r * 0.38, cy - r * 0.25
        for side in (-1, 1):
            x = cx + side * ex
            closed = name == "sleepy" or (name == "winking" and side == 1)
            if closed:
                draw.line([(x - 2.5, ey + 1), (x + 2.5, ey + 1)], fill=ink, width=1)
            elif name == "surprised":
                draw.ellipse([x - 2, ey - 2.5, x + 2, ey + 2.5], fill=(255, 255, 255), outline=ink)
            else:
                draw.ellipse([x - 1.5, ey - 1.5, x + 1.5, ey + 1.5], fill=ink)
            if name == "angry":
                draw.line([(x - side * 3, ey - 5), (x + side * 2, ey - 2.5)], fill=ink, width=1)
        my, mw = cy + r * 0.4, r * 0.5
        if name in ("happy", "winking"):
            draw.arc([cx - mw, my - mw, cx + mw, my + mw * 0.4], 20, 160, fill=ink, width=2)
        elif name == "sad":
            draw.arc([cx - mw, my - 1, cx + mw, my + mw * 1.2], 200, 340, fill=ink, width=2)
        elif name == "surprised":
            draw.ellipse([cx - 2.5, my - 3.5, cx + 2.5, my + 2.5], fill=ink)
        elif name == "angry":
            draw.line([(cx - mw * 0.8, my + 1), (cx + mw * 0.8, my + 1)], fill=ink, width=2)
        else:
            draw.ellipse([cx - 1.5, my - 1, cx + 1.5, my + 1.5], fill=ink)
        out[i] = _finish(rng, image, 5)
    return out, labels


# ---------------------------------------------------------------------------------------------------------------
# glyphs: an invented script in chalk on a blackboard (each class a fixed set of strokes), as KMNIST

GLYPHS = ("ka", "ki", "ku", "ke", "ko", "sa", "shi", "su", "se", "so")


def _glyph_strokes(label: int) -> list[np.ndarray]:
    shape_rng = np.random.default_rng(7000 + label)  # the script itself: fixed, whatever the data seed
    return [shape_rng.uniform(-9, 9, (int(shape_rng.integers(2, 4)), 2)) for _ in range(3)]


def glyphs(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """One of ten invented characters (three strokes each), chalk on a dark green board, strokes wobbling."""
    labels = _labels(rng, n, len(GLYPHS))
    out = np.zeros((n, SIZE, SIZE, 3), np.uint8)
    strokes = [_glyph_strokes(k) for k in range(len(GLYPHS))]
    for i, label in enumerate(labels):
        image, draw = _canvas(rng, (35, 60, 45), 10)
        s = rng.uniform(0.9, 1.1)
        angle = rng.uniform(-0.2, 0.2)
        c, sn = np.cos(angle), np.sin(angle)
        cx, cy = 16 + rng.uniform(-1.5, 1.5, 2)
        chalk = _jitter(rng, (235, 235, 225), 15)
        for stroke in strokes[label]:
            wobble = stroke + rng.uniform(-0.8, 0.8, stroke.shape)
            draw.line([(cx + s * (x * c - y * sn), cy + s * (x * sn + y * c)) for x, y in wobble], fill=chalk, width=2)
        out[i] = _finish(rng, image, 8)
    return out, labels


# ---------------------------------------------------------------------------------------------------------------
# charts: one kind of diagram on a white page

CHARTS = ("bar chart", "pie chart", "line graph", "scatter plot", "data table", "venn diagram")


def charts(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A bar chart, pie chart, line graph, scatter plot, table or Venn diagram with random data and colours."""
    labels = _labels(rng, n, len(CHARTS))
    out = np.zeros((n, SIZE, SIZE, 3), np.uint8)
    for i, label in enumerate(labels):
        image, draw = _canvas(rng, (250, 250, 250), 4)
        name = CHARTS[label]
        colour = tuple(int(c) for c in rng.integers(20, 200, 3))
        axis = (60, 60, 60)
        if name in ("bar chart", "line graph", "scatter plot"):
            draw.line([(4, 3), (4, 28), (29, 28)], fill=axis, width=1)
        if name == "bar chart":
            for k in range(int(rng.integers(4, 7))):
                h = rng.uniform(5, 23)
                draw.rectangle([6 + 4 * k, 27 - h, 8 + 4 * k, 27], fill=colour)
        elif name == "line graph":
            xs = np.linspace(6, 28, 7)
            ys = np.clip(16 + np.cumsum(rng.uniform(-5, 5, 7)), 5, 26)
            draw.line(list(zip(xs, ys, strict=True)), fill=colour, width=2)
        elif name == "scatter plot":
            for x, y in rng.uniform(7, 26, (int(rng.integers(10, 16)), 2)):
                draw.ellipse([x - 1, y - 1, x + 1, y + 1], fill=colour)
        elif name == "pie chart":
            start = rng.uniform(0, 360)
            cuts = np.sort(rng.uniform(0, 360, 3))
            bounds = np.concatenate([[0], cuts, [360]]) + start
            for k in range(4):
                fill = tuple(int(c) for c in rng.integers(30, 230, 3))
                draw.pieslice([4, 4, 28, 28], bounds[k], bounds[k + 1], fill=fill)
        elif name == "data table":
            rows, cols = int(rng.integers(4, 7)), int(rng.integers(3, 5))
            draw.rectangle([3, 3, 29, 8], fill=colour)
            for r in range(rows + 1):
                y = 3 + r * 26 / rows
                draw.line([(3, y), (29, y)], fill=axis)
            for k in range(cols + 1):
                x = 3 + k * 26 / cols
                draw.line([(x, 3), (x, 29)], fill=axis)
        else:
            other = tuple(int(c) for c in rng.integers(20, 200, 3))
            d = rng.uniform(4, 7)
            draw.ellipse([16 - d - 9, 7, 16 - d + 9, 25], outline=colour, width=2)
            draw.ellipse([16 + d - 9, 7, 16 + d + 9, 25], outline=other, width=2)
        out[i] = _finish(rng, image, 4)
    return out, labels


# ---------------------------------------------------------------------------------------------------------------
# numerals: a Roman numeral carved in grey stone

NUMERALS = ("I", "II", "III", "IV", "V", "VI", "VII", "VIII")


def numerals(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """I to VIII in dark grooves with a light lower edge, on mottled stone, tilted a little."""
    labels = _labels(rng, n, len(NUMERALS))
    out = np.zeros((n, SIZE, SIZE, 3), np.uint8)
    for i, label in enumerate(labels):
        stone = _jitter(rng, (150, 145, 135), 20)
        canvas = Image.new("RGB", (48, 48), stone)
        draw = ImageDraw.Draw(canvas)
        font = _font(int(rng.integers(17, 21)))
        x, y = 24 + rng.uniform(-2, 2), 24 + rng.uniform(-2, 2)
        text = NUMERALS[label]
        draw.text((x + 1, y + 1), text, fill=(215, 210, 200), font=font, anchor="mm")  # the groove's lit edge
        draw.text((x, y), text, fill=_jitter(rng, (35, 30, 25), 10), font=font, anchor="mm")
        canvas = canvas.rotate(rng.uniform(-8, 8), resample=Image.BILINEAR, fillcolor=stone)
        mottled = np.asarray(canvas.crop((8, 8, 40, 40)), np.float32)
        mottled *= (1 + 0.05 * rng.standard_normal((4, 4)).repeat(8, 0).repeat(8, 1))[..., None]
        out[i] = _noise(rng, np.clip(mottled, 0, 255), 6)
    return out, labels
