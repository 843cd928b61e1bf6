"""The data of the vit recipes: labelled pictures read and checked up front (paths only), decoded batch by batch.

Format image_label (tunelab.data.images.read_image_labels): builtin:NAME, an image folder with one subfolder per
class, or a .jsonl/.csv file with `image` and `label`. MAE and DINO train on the pictures alone; classification
and DINO's k-NN evaluation need every picture's label.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from tunelab.config import Recipe
from tunelab.data.images import decode_images, load_image, read_image_labels
from tunelab.data.readers import Records
from tunelab.errors import UserError
from tunelab.vision.crops import MultiCrop


@dataclass
class Pictures:
    train: Records
    eval: Records
    names: list[str]  # the classes, in id order ([] for MAE, which reads no labels)
    report: dict


def read(recipe: Recipe, stage: str, names: list[str] | None = None) -> Pictures:
    """The train and eval pictures of a recipe; `names` fixes the classes (a finished run's labels.json)."""
    d = recipe.data
    if d.format != "image_label":
        raise UserError(f"{recipe.origin('data.format')}: data.format = {d.format!r} does not fit {recipe.recipe} "
                        f"(use image_label)")
    labelled = stage != "mae"
    train = read_image_labels(d.train, labelled)
    evals = read_image_labels(d.eval, labelled) if d.eval else None
    if evals is None:
        train, evals = _hold_out(train, recipe)
    _cut(train, d.max_train_samples)
    _cut(evals, min(n for n in (d.max_eval_samples, recipe.eval.max_samples, len(evals.rows)) if n is not None))
    names = names or (d.labels or sorted({row["label"] for row in train.rows}) if labelled else [])
    if stage == "classify" and len(names) < 2:
        raise UserError(f"{recipe.origin('data.train')}: {d.train} has {len(names)} class; classification needs at "
                        f"least two")
    if labelled:
        for records in (train, evals):
            for i, row in enumerate(records.rows):
                if row["label"] not in names:
                    raise UserError(f"{records.where(i)}: label {row['label']!r} is not one of the classes "
                                    f"({', '.join(names)}){' of data.labels' if d.labels else ' the train data has'}")
    return Pictures(train, evals, names, {"train_records": len(train.rows), "eval_records": len(evals.rows)})


def _hold_out(records: Records, recipe: Recipe) -> tuple[Records, Records]:
    """(train, held out): data.eval_fraction of the records, drawn by data.seed."""
    d = recipe.data
    if not 0 < d.eval_fraction < 1:
        raise UserError(f"{recipe.origin('data.eval_fraction')}: with no data.eval, data.eval_fraction must be "
                        f"between 0 and 1 (got {d.eval_fraction})")
    order = list(range(len(records.rows)))
    random.Random(d.seed).shuffle(order)
    n_eval = max(1, round(len(order) * d.eval_fraction))
    if n_eval >= len(order):
        raise UserError(f"{d.train}: {len(order)} record(s), too few to hold out an eval split; give data.eval")

    def part(indices):
        indices = sorted(indices)
        return Records([records.rows[i] for i in indices], records.source, [records.lines[i] for i in indices],
                       records.implied_format)

    return part(order[n_eval:]), part(order[:n_eval])


def _cut(records: Records, limit: int | None) -> None:
    if limit is not None:
        records.rows, records.lines = records.rows[:limit], records.lines[:limit]


def as_items(records: Records) -> list[tuple[dict, str]]:
    """(row, file:line) pairs: a plain list is a map-style dataset the Trainer can index."""
    return [(row, records.where(i)) for i, row in enumerate(records.rows)]


def decoded(records: Records, on_error: str) -> tuple[list, list[str], int]:
    """(pictures, their labels, how many could not be decoded and were skipped)."""
    images, kept, skipped = decode_images(records, on_error)
    return images, [row.get("label") for row in kept], skipped


class PictureCollator:
    """Decodes a batch's pictures only when the batch is built: {"pixel_values"} for MAE, plus {"labels"} (class
    ids) for classification. A file that cannot be decoded stops the run (data.on_image_error fail) or is left
    out of its batch and remembered (skip), so metrics.json counts each bad file once however many epochs ran."""

    def __init__(self, processor, on_error: str, names: list[str] | None = None):
        self.processor, self.on_error = processor, on_error
        self.index = {n: i for i, n in enumerate(names)} if names else None
        self.skipped: set[str] = set()

    def pictures(self, items: list[tuple[dict, str]]) -> tuple[list, list[dict]]:
        images, rows = [], []
        for row, where in items:
            image = row["image"] if not isinstance(row["image"], str) else load_image(row["image"], self.on_error, where)
            if image is None:
                self.skipped.add(row["image"])
                continue
            images.append(image.convert("RGB"))
            rows.append(row)
        if not images:
            raise UserError(f"{items[0][1]}: no image of this batch could be decoded (on_error: skip); check the files")
        return images, rows

    def __call__(self, items: list[tuple[dict, str]]) -> dict:
        images, rows = self.pictures(items)
        batch = {"pixel_values": self.processor(images=images, return_tensors="pt")["pixel_values"]}
        if self.index is not None:
            batch["labels"] = torch.tensor([self.index[row["label"]] for row in rows])
        return batch


class MultiCropCollator(PictureCollator):
    """DINO's batches: {"global_crops": (2B, 3, H, W), "local_crops": (nB, 3, h, w)}, crop-major (the first B
    rows are every picture's first global crop), normalised as the model's image processor does."""

    def __init__(self, processor, crops: MultiCrop, on_error: str):
        super().__init__(processor, on_error)
        self.crops = crops

    def _tensor(self, crops: list) -> torch.Tensor:
        return self.processor(images=crops, return_tensors="pt", do_resize=False, do_center_crop=False)["pixel_values"]

    def __call__(self, items: list[tuple[dict, str]]) -> dict:
        images, _ = self.pictures(items)
        views = [self.crops(image) for image in images]
        globals_ = [g[i] for i in range(2) for g, _ in views]
        locals_ = [loc[i] for i in range(self.crops.n_local) for _, loc in views]
        batch = {"global_crops": self._tensor(globals_), "return_loss": True}  # return_loss: eval computes the loss
        if locals_:
            batch["local_crops"] = self._tensor(locals_)
        return batch


def processor_size(processor) -> int:
    """The side of the square pictures the processor makes (its crop when it crops)."""
    if getattr(processor, "do_center_crop", False) and processor.crop_size:
        return processor.crop_size["height"]
    size = processor.size
    return size.get("height") or size.get("shortest_edge")
