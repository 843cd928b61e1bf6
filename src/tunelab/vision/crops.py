"""DINO's multi-crop augmentation with Pillow alone (torchvision is not installed).

Each picture gives 2 global crops (a large part of it, at the model's own size) and N local crops (small parts,
at a smaller size), each randomly resized-cropped, flipped, colour-jittered and sometimes turned grey (Caron et
al., 2021, https://arxiv.org/abs/2104.14294, section 3.1 and appendix; the reference is DataAugmentationDINO in
github.com/facebookresearch/dino/blob/main/main_dino.py). The student sees every crop, the teacher the global
ones only, so the student learns to say of a small part what the teacher says of the whole: "local-to-global".
"""

from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image, ImageEnhance, ImageOps


def random_resized_crop(rng: random.Random, image: Image.Image, size: int, scale: tuple[float, float],
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Image.Image:
    """A box of `scale` times the picture's area (uniform) and width/height `ratio` (log-uniform), resized to
    size x size; torchvision's RandomResizedCrop, which falls back to the whole picture after 10 misses.
    A 48x48 picture at scale 0.25, ratio 1: a 24x24 box somewhere inside, then resized."""
    width, height = image.size
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            return image.resize((size, size), Image.BICUBIC, box=(left, top, left + w, top + h))
    return image.resize((size, size), Image.BICUBIC)


def shift_hue(image: Image.Image, amount: float) -> Image.Image:
    """Turn every colour `amount` of the way round the hue circle (0.5: red becomes cyan)."""
    hsv = np.array(image.convert("HSV"))
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + round(amount * 256)) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def colour_jitter(rng: random.Random, image: Image.Image, strength: float = 0.4, hue: float = 0.1) -> Image.Image:
    """DINO's ColorJitter(0.4, 0.4, 0.2, 0.1) with probability 0.8, then grey with probability 0.2. The four
    changes come in a random order, as torchvision applies them."""
    if rng.random() < 0.8:
        changes = [lambda im: ImageEnhance.Brightness(im).enhance(rng.uniform(1 - strength, 1 + strength)),
                   lambda im: ImageEnhance.Contrast(im).enhance(rng.uniform(1 - strength, 1 + strength)),
                   lambda im: ImageEnhance.Color(im).enhance(rng.uniform(1 - strength / 2, 1 + strength / 2)),
                   lambda im: shift_hue(im, rng.uniform(-hue, hue))]
        rng.shuffle(changes)
        for change in changes:
            image = change(image)
    if rng.random() < 0.2:
        image = ImageOps.grayscale(image).convert("RGB")
    return image


class MultiCrop:
    """picture -> (2 global crops, n_local local crops), each a PIL picture of its size."""

    def __init__(self, global_size: int, local_size: int, n_local: int, global_scale: tuple[float, float],
                 local_scale: tuple[float, float], hue: float, seed: int):
        self.global_size, self.local_size, self.n_local = global_size, local_size, n_local
        self.global_scale, self.local_scale, self.hue = tuple(global_scale), tuple(local_scale), hue
        self.rng = random.Random(seed)

    def view(self, image: Image.Image, size: int, scale: tuple[float, float]) -> Image.Image:
        crop = random_resized_crop(self.rng, image, size, scale)
        if self.rng.random() < 0.5:
            crop = ImageOps.mirror(crop)
        return colour_jitter(self.rng, crop, hue=self.hue)

    def __call__(self, image: Image.Image) -> tuple[list[Image.Image], list[Image.Image]]:
        globals_ = [self.view(image, self.global_size, self.global_scale) for _ in range(2)]
        locals_ = [self.view(image, self.local_size, self.local_scale) for _ in range(self.n_local)]
        return globals_, locals_
