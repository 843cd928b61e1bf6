"""Score CLIP-style runs: image<->text recall@k over matched pairs, zero-shot classification accuracy, and
the batched embedding helpers (and one-image label probabilities for `tunelab predict`) that feed them.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F

from tunelab.errors import UserError


def _recall(sims: torch.Tensor, ks: list[int]) -> dict:
    """Row i's match is column i. It is found at k if fewer than k other columns score strictly higher, so ties
    count in the pair's favour (a collapsed model that scores everything equal gets recall 1.0, not a coin toss
    that changes between runs); exact float ties are rare on real embeddings."""
    rank = (sims > sims.diagonal().unsqueeze(1)).sum(1)
    return {f"recall@{k}": (rank < k).float().mean().item() for k in ks}


def recall_at_k(image_embeds: torch.Tensor, text_embeds: torch.Tensor, ks=(1, 5, 10)) -> dict:
    """Retrieval recall over N matched pairs (row i of each is a pair), cosine similarity, both directions.

    recall@1 is always reported and the flat keys come first ("i2t_recall@1" leads), so a reader that takes the
    first key matching /recall.*1/ gets a real recall@1 rather than recall@10. The nested dicts repeat them.
    """
    n = image_embeds.shape[0]
    if text_embeds.shape[0] != n:
        raise UserError(f"recall needs matched pairs: got {n} images but {text_embeds.shape[0]} captions")
    ks = sorted(set(ks) | {1})
    if n < ks[-1]:
        raise UserError(f"eval batch of {n} pairs is too small for recall@{ks[-1]}; "
                        f"use at least {ks[-1]} pairs or lower eval.recall_k")
    sims = F.normalize(image_embeds.float(), dim=-1) @ F.normalize(text_embeds.float(), dim=-1).T
    i2t, t2i = _recall(sims, ks), _recall(sims.T, ks)
    flat = {f"i2t_{k}": v for k, v in i2t.items()} | {f"t2i_{k}": v for k, v in t2i.items()}
    return flat | {"image_to_text": i2t, "text_to_image": t2i}


def class_embeddings(class_text_embeds: torch.Tensor, templates_per_class: int | None = None) -> torch.Tensor:
    """(C, D) unit class vectors. Several prompt templates per class, as (C, T, D) or a flat (C*T, D) with
    `templates_per_class`, are ensembled as in the CLIP paper: normalise each, average, renormalise."""
    embeds = class_text_embeds.float()
    if templates_per_class:
        embeds = embeds.reshape(-1, templates_per_class, embeds.shape[-1])
    if embeds.dim() == 3:
        embeds = F.normalize(embeds, dim=-1).mean(1)
    return F.normalize(embeds, dim=-1)


def zero_shot_accuracy(image_embeds: torch.Tensor, class_text_embeds: torch.Tensor, labels,
                       templates_per_class: int | None = None, class_names: list[str] | None = None) -> dict:
    """Accuracy of predicting each image's class as the most cosine-similar class embedding.

    `per_class` maps each class name (its index when no names are given) that has images to the share of its
    images predicted right; classes with no images are left out rather than reported as 0.
    """
    classes = class_embeddings(class_text_embeds, templates_per_class)
    if classes.shape[0] < 2:
        raise UserError(f"zero-shot classification needs at least 2 classes, got {classes.shape[0]}")
    labels = torch.as_tensor(labels, dtype=torch.long)
    predicted = (F.normalize(image_embeds.float(), dim=-1) @ classes.T).argmax(-1)
    correct = (predicted == labels).float()
    names = class_names or [str(c) for c in range(classes.shape[0])]
    return {"zero_shot_accuracy": correct.mean().item(),
            "per_class": {names[c]: correct[labels == c].mean().item() for c in labels.unique().tolist()}}


@contextmanager
def _inference(model):
    """Eval mode and no grad for the duration, then back to the model's previous mode (it may be mid-training)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield next(model.parameters()).device
    finally:
        model.train(was_training)


def _pooled(out) -> torch.Tensor:
    """transformers 5 returns a ModelOutput whose pooler_output is the projected embedding; older ones a tensor."""
    return (out if isinstance(out, torch.Tensor) else out.pooler_output).float().cpu()


def embed_texts(model, tokenizer, texts: list[str], batch_size: int) -> torch.Tensor:
    """(N, D) projected, unnormalised text embeddings from a CLIPModel-like `get_text_features`."""
    out = []
    with _inference(model) as device:
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, return_tensors="pt")
            out.append(_pooled(model.get_text_features(input_ids=enc["input_ids"].to(device),
                                                       attention_mask=enc["attention_mask"].to(device))))
    return torch.cat(out)


def embed_images(model, image_processor, images: list, batch_size: int) -> torch.Tensor:
    """(N, D) projected, unnormalised image embeddings from a CLIPModel-like `get_image_features`."""
    out = []
    with _inference(model) as device:
        for start in range(0, len(images), batch_size):
            pixels = image_processor(images=images[start:start + batch_size], return_tensors="pt")["pixel_values"]
            out.append(_pooled(model.get_image_features(pixel_values=pixels.to(device, model.dtype))))
    return torch.cat(out)


def probabilities(model, tokenizer, image_processor, image, labels: list[str],
                  template: str = "a photo of a {}.") -> dict[str, float]:
    """{label: probability} for one PIL image: softmax over logit_scale.exp() * cosine, as CLIP's forward does."""
    if len(labels) < 2:
        raise UserError(f"zero-shot prediction needs at least 2 labels (e.g. --labels cat,dog), got {len(labels)}")
    prompts = [template.format(label) for label in labels]
    texts = F.normalize(embed_texts(model, tokenizer, prompts, len(prompts)), dim=-1)
    pixels = F.normalize(embed_images(model, image_processor, [image], 1), dim=-1)
    logits = model.logit_scale.detach().float().exp().cpu() * pixels @ texts.T
    return dict(zip(labels, logits.softmax(-1)[0].tolist()))
