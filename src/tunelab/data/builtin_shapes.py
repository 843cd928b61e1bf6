"""Built-in image-caption data for CLIP recipes: small pictures of coloured shapes, generated deterministically.

The world: a 48x48 RGB picture holds one shape (circle, square, triangle, star, cross, diamond) in one
of six colors (red, green, blue, yellow, purple, orange), small or large, on the left, right, top,
bottom or in the center, on a light background that is plain or lightly noisy. Each color and
position is jittered a little, so no two pictures are the same. The caption says what is there, in a
few phrasings: "a small red circle on the left", "there is a large blue star at the top".

Labels, for zero-shot classification, are the color + shape combination ("red circle"): 36 classes in
all. Classifying by combination needs both what the shape is and what color it has, which is what
the shifted splits test.

Splits. Twelve of the 36 combinations are held out (`HELD_OUT`): every color is held out with two
shapes and every shape with two colors, so train still shows each color and each shape, only never
together in those pairs.
- `train` (3000) and `eval` (300): the 24 other combinations, with different pictures (other seeds).
- `shifted_train` (1000) and `shifted_eval` (200): only the 12 held-out combinations. A model
  pretrained on train meets them there for the first time (zero-shot it must compose "purple" and
  "star" from what it learned apart); fine-tuning on shifted_train gives it something to learn,
  measured on shifted_eval.
Classes are spread evenly over each split (round robin, then shuffled). Records are
`{"image": PIL.Image (RGB, 48x48), "caption", "label", "color", "shape", "size", "position"}`; the last
four say what was drawn, for checks.
"""

from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 48
SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
COLORS = {"red": (215, 40, 40), "green": (40, 165, 60), "blue": (40, 80, 220), "yellow": (235, 205, 30),
          "purple": (135, 55, 175), "orange": (245, 135, 25)}
SIZES = {"small": 7, "large": 12}  # the shape's radius in pixels
POSITIONS = {"left": (15, 24), "right": (33, 24), "top": (24, 15), "bottom": (24, 33), "center": (24, 24)}
SPLITS = {"train": (71, 3000), "eval": (72, 300), "shifted_train": (73, 1000), "shifted_eval": (74, 200)}

# Color i is held out with shapes i and i + 3: a Latin-square pattern, two per color and two per shape.
HELD_OUT = frozenset((color, SHAPES[(i + k) % len(SHAPES)]) for i, color in enumerate(COLORS) for k in (0, 3))

_WHERE = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
          "center": "in the center"}
_TEMPLATES = ("a {size} {color} {shape} {where}", "a {color} {shape}, {size}, {where}",
              "there is a {size} {color} {shape} {where}", "a picture of a {size} {color} {shape} {where}",
              "{where_cap}, a {size} {color} {shape}", "{size} {color} {shape} {where}")
_JITTER = 2  # pixels the center moves, each way
_COLOR_JITTER = 12


def _combinations(split: str) -> list[tuple[str, str]]:
    held_out = split.startswith("shifted")
    return [(c, s) for c in COLORS for s in SHAPES if ((c, s) in HELD_OUT) == held_out]


def zero_shot_labels(split: str) -> list[str]:
    """The class names present in a split, color order then shape order ("red square", "red triangle", ...)."""
    _check_split(split)
    return [f"{c} {s}" for c, s in _combinations(split)]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (have: {', '.join(SPLITS)})")


def _outline(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    def ring(points: int, radii: tuple[float, ...], start: float) -> list[tuple[float, float]]:
        out = []
        for j in range(points):
            angle = start + 2 * math.pi * j / points
            radius = radii[j % len(radii)]
            out.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        return out

    if shape == "triangle":  # moved down a quarter radius, so that it looks centered
        return [(px, py + r / 4) for px, py in ring(3, (r,), -math.pi / 2)]
    if shape == "star":
        return ring(10, (r, r * 0.42), -math.pi / 2)
    if shape == "diamond":
        return ring(4, (r,), -math.pi / 2)
    if shape == "cross":
        w = r * 0.36
        return [(cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w), (cx + r, cy + w),
                (cx + w, cy + w), (cx + w, cy + r), (cx - w, cy + r), (cx - w, cy + w), (cx - r, cy + w),
                (cx - r, cy - w), (cx - w, cy - w)]
    raise AssertionError(shape)


def _draw(rng: random.Random, noise: np.random.Generator, color: str, shape: str, size: str,
          position: str) -> Image.Image:
    shade = rng.randint(225, 250)
    background = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), shade, dtype=np.int16)
    background += np.array([rng.randint(-5, 5) for _ in range(3)], dtype=np.int16)  # a tint
    if rng.random() < 0.5:  # lightly noisy
        background += noise.integers(-10, 11, size=background.shape, dtype=np.int16)
    image = Image.fromarray(background.clip(0, 255).astype(np.uint8), "RGB")
    fill = tuple(max(0, min(255, v + rng.randint(-_COLOR_JITTER, _COLOR_JITTER))) for v in COLORS[color])
    r = SIZES[size] + rng.uniform(-1, 1)
    x, y = POSITIONS[position]
    cx, cy = x + rng.uniform(-_JITTER, _JITTER), y + rng.uniform(-_JITTER, _JITTER)
    draw_shape(ImageDraw.Draw(image), shape, cx, cy, r, fill)
    return image


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill: tuple) -> None:
    """One shape of `radius` r centered at (cx, cy)."""
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        h = r * 0.85  # a square of the same "radius" looks bigger than a circle
        draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
    else:
        draw.polygon(_outline(shape, cx, cy, r), fill=fill)


def _caption(rng: random.Random, color: str, shape: str, size: str, position: str) -> str:
    where = _WHERE[position]
    text = rng.choice(_TEMPLATES).format(size=size, color=color, shape=shape, where=where,
                                         where_cap=where[0].upper() + where[1:])
    return text.replace("a orange", "an orange")


def shape_captions(split: str) -> list[dict]:
    """`{"image", "caption", "label", "color", "shape", "size", "position"}` records: 3000 for train,
    300 for eval, 1000 for shifted_train, 200 for shifted_eval. The same pixels on every call."""
    _check_split(split)
    seed, count = SPLITS[split]
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    combinations = _combinations(split)
    order = [combinations[i % len(combinations)] for i in range(count)]
    rng.shuffle(order)
    records = []
    for color, shape in order:
        size, position = rng.choice(list(SIZES)), rng.choice(list(POSITIONS))
        records.append({"image": _draw(rng, noise, color, shape, size, position),
                        "caption": _caption(rng, color, shape, size, position), "label": f"{color} {shape}",
                        "color": color, "shape": shape, "size": size, "position": position})
    return records
