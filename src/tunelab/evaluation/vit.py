"""Score ViT runs: classification accuracy and macro-F1, MAE's reconstruction loss on held-out pictures and a
picture of what it reconstructs, and the k-NN accuracy of class-token features (DINO's evaluation protocol)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

from tunelab.vision.backbones import features

RECONSTRUCTION_PNG = "mae_reconstruction.png"
GAP = 1  # pixels between the pictures of the reconstruction grid, before it is enlarged


def pixel_batches(processor, images: list[Image.Image], batch_size: int, device: torch.device):
    for start in range(0, len(images), batch_size):
        yield processor(images=images[start:start + batch_size], return_tensors="pt")["pixel_values"].to(device)


@torch.no_grad()
def class_probabilities(model, processor, images: list[Image.Image], batch_size: int) -> torch.Tensor:
    """(N, classes) softmax probabilities."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(pixel_values=pixels).logits.float().softmax(-1)
                      for pixels in pixel_batches(processor, images, batch_size, device)])


def classification(model, processor, images: list[Image.Image], labels: list[str], names: list[str],
                   batch_size: int) -> dict:
    """accuracy, macro-F1, the mean cross-entropy of the true classes (eval_loss), per-class scores and the
    confusion matrix (rows true, columns predicted)."""
    probs = class_probabilities(model, processor, images, batch_size)
    index = {n: i for i, n in enumerate(names)}
    truth, predicted = [index[label] for label in labels], probs.argmax(-1).tolist()
    ids = list(range(len(names)))
    report = classification_report(truth, predicted, labels=ids, target_names=names, output_dict=True, zero_division=0)
    true_probs = probs[torch.arange(len(truth)), torch.tensor(truth)]
    return {"accuracy": accuracy_score(truth, predicted),
            "macro_f1": f1_score(truth, predicted, labels=ids, average="macro", zero_division=0),
            "eval_loss": -true_probs.clamp(min=1e-12).log().mean().item(),
            "per_class": {n: {k.replace("-score", ""): v for k, v in report[n].items()} for n in names},
            "confusion_matrix": {"labels": names,
                                 "rows_true_cols_predicted": confusion_matrix(truth, predicted, labels=ids).tolist()}}


def _noise(batch: int, patches: int, generator: torch.Generator, device) -> torch.Tensor:
    """MAE masks the patches with the largest noise: fixed noise, the same masks on every evaluation."""
    return torch.rand(batch, patches, generator=generator).to(device)


@torch.no_grad()
def reconstruction_loss(model, processor, images: list[Image.Image], batch_size: int, seed: int = 0) -> float:
    """MAE's own loss, the mean squared error of the masked patches' (normalised) pixels, over `images`,
    with masks drawn from `seed`."""
    model.eval()
    device = next(model.parameters()).device
    generator, total = torch.Generator().manual_seed(seed), 0.0
    patches = model.vit.embeddings.patch_embeddings.num_patches
    for pixels in pixel_batches(processor, images, batch_size, device):
        loss = model(pixel_values=pixels, noise=_noise(len(pixels), patches, generator, device)).loss
        total += loss.item() * len(pixels)  # every picture has the same number of masked patches
    return total / len(images)


@torch.no_grad()
def reconstruction_grid(model, processor, images: list[Image.Image], path: Path, seed: int = 0) -> tuple[int, int]:
    """A PNG of len(images) columns and three rows: the masked input (masked patches grey), the reconstruction
    (the model's pixels on the masked patches, the visible ones kept, as in the MAE paper's figures) and the
    original; one white pixel between pictures, the whole enlarged so a picture is about 144 pixels wide.
    Returns its (width, height)."""
    model.eval()
    device = next(model.parameters()).device
    pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(device)  # (B, 3, H, W)
    out = model(pixel_values=pixels, noise=_noise(len(images), model.vit.embeddings.patch_embeddings.num_patches,
                                                  torch.Generator().manual_seed(seed), device))
    patch_pixels = model.config.patch_size ** 2 * model.config.num_channels
    size = tuple(pixels.shape[-2:])
    predicted = model.unpatchify(out.logits, size)  # (B, 3, H, W)
    mask = model.unpatchify(out.mask.unsqueeze(-1).repeat(1, 1, patch_pixels), size)  # 1 where masked
    mean = torch.tensor(processor.image_mean if processor.do_normalize else [0.0] * 3).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_std if processor.do_normalize else [1.0] * 3).view(1, 3, 1, 1)

    def to_unit(x):  # normalised pixels -> [0, 1]
        return (x.cpu() * std + mean).clamp(0, 1)

    original = to_unit(pixels)
    rows = [original * (1 - mask.cpu()) + 0.5 * mask.cpu(), to_unit(pixels * (1 - mask) + predicted * mask), original]
    height, width = size
    grid = torch.ones(3, 3 * height + 2 * GAP, len(images) * width + (len(images) - 1) * GAP)  # white between
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            top, left = r * (height + GAP), c * (width + GAP)
            grid[:, top:top + height, left:left + width] = cell
    picture = Image.fromarray((grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), "RGB")
    scale = max(1, 144 // size[0])
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    picture.save(path)
    return picture.size


@torch.no_grad()
def class_token_features(backbone, processor, images: list[Image.Image], batch_size: int) -> torch.Tensor:
    """(N, hidden) L2-normalised class-token features."""
    backbone.eval()
    device = next(backbone.parameters()).device
    found = [features(backbone, pixels).float() for pixels in pixel_batches(processor, images, batch_size, device)]
    return torch.nn.functional.normalize(torch.cat(found), dim=-1)


def knn_accuracy(bank: torch.Tensor, bank_labels: list[str], queries: torch.Tensor, query_labels: list[str],
                 k: int = 20, temperature: float = 0.07) -> float:
    """DINO's weighted k-NN classifier (eval_knn.py): each query's k most cosine-similar bank features vote for
    their labels with weight exp(similarity / temperature); the most voted label is the prediction.
    By hand, k = 2, temperature 0.1: neighbours at similarity 0.9 (label a) and 0.8 (label b) vote
    exp(9) = 8103 for a and exp(8) = 2981 for b, so a."""
    names = sorted(set(bank_labels))
    bank_ids = torch.tensor([names.index(label) for label in bank_labels])
    similarity = queries @ bank.T  # (Q, N): cosine, the features are unit vectors
    top, where = similarity.topk(min(k, len(bank_labels)), dim=-1)  # (Q, k)
    votes = torch.zeros(len(queries), len(names)).scatter_add_(1, bank_ids[where], (top / temperature).exp())
    predicted = [names[i] for i in votes.argmax(-1).tolist()]
    return sum(p == t for p, t in zip(predicted, query_labels)) / len(query_labels)
