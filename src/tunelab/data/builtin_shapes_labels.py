"""Built-in image classification data for the ViT recipes: the pictures of `builtin_shapes`, labelled by their shape.

The world is the CLIP pictures' (tunelab.data.builtin_shapes draws them): one of six shapes (circle, square,
triangle, star, cross, diamond) in one of six colours, small or large, at one of five places, on a plain or
noisy light background, with jittered colour and position. Here the label is the shape alone: 6 classes. The
colour, size and place vary freely within each class, so a classifier must tell a star from a cross whatever
its colour, size and place, which is what a few hundred labelled pictures teach a freshly initialised ViT
poorly and what pretraining on unlabelled pictures can help with.

Splits (other seeds than the CLIP splits, so no picture is shared):
- `train` (240, 40 per shape): the small labelled set classification fine-tunes on;
- `eval` (600, 100 per shape): held-out pictures for accuracy, MAE's reconstruction loss and DINO's k-NN;
- `pretrain` (6000, 1000 per shape): the unlabelled pictures MAE and DINO pretrain on. They keep their labels
  so that DINO's k-NN evaluation can use them as its memory bank; pretraining never reads them.
Records are `{"image": PIL.Image (RGB, 48x48), "label": shape, "color", "size", "position"}`; shapes come
round robin, then shuffled, so any first few hundred records cover every class evenly.
"""

from __future__ import annotations

import functools
import random

import numpy as np

from tunelab.data.builtin_shapes import COLORS, POSITIONS, SHAPES, SIZES, _draw

SPLITS = {"train": (81, 240), "eval": (82, 600), "pretrain": (83, 6000)}


def labelled_shapes(split: str) -> list[dict]:
    """The records of a split (see the module docstring); the same pixels on every call."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (have: {', '.join(SPLITS)})")
    return [dict(record) for record in _drawn(split)]  # fresh dicts: a caller may edit its rows


@functools.cache
def _drawn(split: str) -> tuple[dict, ...]:
    """Drawn once per process: the embedded MAE default's fingerprint and its training both read them."""
    seed, count = SPLITS[split]
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    shapes = [SHAPES[i % len(SHAPES)] for i in range(count)]
    rng.shuffle(shapes)
    records = []
    for shape in shapes:
        color, size, position = rng.choice(list(COLORS)), rng.choice(list(SIZES)), rng.choice(list(POSITIONS))
        records.append({"image": _draw(rng, noise, color, shape, size, position), "label": shape, "color": color,
                        "size": size, "position": position})
    return tuple(records)
