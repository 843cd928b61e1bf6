"""Built-in vision-language data: chats about the pictures of the shapes world (tunelab.data.builtin_shapes).

Two kinds of record, both in the `image_chat` format ({"messages", "image"}):
- caption chats, for aligning a vision tower with a language model (vlm.pretrain): "Describe the picture." and
  the picture's caption as the reply;
- questions, for instruction tuning (vlm.sft): one question per picture about its colour, shape, size or
  position, answered in a word or a short phrase ("red", "star", "large", "on the left") so that exact match
  can score a reply; and pictures of one to three copies of a shape, asked "How many shapes are there?"
  ("two").

Splits follow builtin_shapes: `train` and `eval` show the 24 colour-shape pairs of its train split (eval on
other pictures), `shifted_eval` only the 12 held-out pairs, which no train picture shows together. The
messages carry no `<image>` marker: the vlm family puts the picture before the first user message's text.
"""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

from tunelab.data.builtin_shapes import COLORS, HELD_OUT, IMAGE_SIZE, SHAPES, draw_shape, shape_captions

QUESTIONS = {
    "colour": ("What colour is the shape?", "What color is it?", "Which colour does the shape have?"),
    "shape": ("What shape is it?", "What shape is in the picture?", "Which shape do you see?"),
    "size": ("Is the shape small or large?", "How big is the shape?"),
    "position": ("Where is the shape?", "Where in the picture is the shape?"),
    "count": ("How many shapes are there?", "How many shapes do you see?"),
}
WHERE = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
         "center": "in the center"}
NUMBERS = ("one", "two", "three")
DESCRIBE = "Describe the picture."
# split -> (the builtin_shapes split its single-shape pictures come from, seed and count of the count pictures)
SPLITS = {"train": ("train", 171, 600), "eval": ("eval", 172, 60), "shifted_eval": ("shifted_eval", 174, 40)}
_GRID = [(12 + 12 * col, 12 + 12 * row) for row in range(3) for col in range(3)]  # where the counted shapes go


def _chat(question: str, answer: str) -> list[dict]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def caption_chats(split: str) -> list[dict]:
    """One record per picture of builtin_shapes' split: the caption as the reply to "Describe the picture."."""
    return [{"messages": _chat(DESCRIBE, row["caption"]), "image": row["image"], "kind": "caption"}
            for row in shape_captions(SPLITS[split][0])]


def _answers(row: dict) -> dict[str, str]:
    return {"colour": row["color"], "shape": row["shape"], "size": row["size"], "position": WHERE[row["position"]]}


def _count_picture(rng: random.Random, color: str, shape: str, count: int) -> Image.Image:
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), tuple(rng.randint(225, 250) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for cx, cy in rng.sample(_GRID, count):
        draw_shape(draw, shape, cx + rng.uniform(-1, 1), cy + rng.uniform(-1, 1), 4.5, COLORS[color])
    return image


def _count_records(split: str) -> list[dict]:
    _, seed, total = SPLITS[split]
    rng = random.Random(seed)
    pairs = [(c, s) for c in COLORS for s in SHAPES if ((c, s) in HELD_OUT) == split.startswith("shifted")]
    records = []
    for i in range(total):
        color, shape = pairs[i % len(pairs)]
        count = 1 + i % len(NUMBERS)
        records.append({"messages": _chat(rng.choice(QUESTIONS["count"]), NUMBERS[count - 1]),
                        "image": _count_picture(rng, color, shape, count), "kind": "count"})
    rng.shuffle(records)
    return records


def questions(split: str) -> list[dict]:
    """A question about each picture of builtin_shapes' split (the four kinds in turn), then the count pictures
    mixed in: 3600 records for train, 360 for eval, 240 for shifted_eval. The same pixels on every call."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (have: {', '.join(SPLITS)})")
    rng = random.Random(SPLITS[split][1] + 1000)
    kinds = ("colour", "shape", "size", "position")
    records = []
    for i, row in enumerate(shape_captions(SPLITS[split][0])):
        kind = kinds[i % len(kinds)]
        records.append({"messages": _chat(rng.choice(QUESTIONS[kind]), _answers(row)[kind]), "image": row["image"],
                        "kind": kind})
    counted = _count_records(split)
    step = len(records) // len(counted)  # every step-th record is a count picture, so any prefix has some
    for j, record in enumerate(counted):
        records.insert(j * (step + 1), record)
    return records

