"""The models of the vit recipes, from `model.scratch`, a checkpoint, a ViT run or the embedded MAE default.

MAE (He et al., 2021, https://arxiv.org/abs/2111.06377) trains ViTMAEForPreTraining: ViTMAEModel, the encoder,
sees the patches left after random masking (25% of them at mask_ratio 0.75); a small decoder reconstructs the
pixels of the others. The encoder's modules carry ViTModel's names (transformers' modeling_vit_mae.py and
modeling_vit.py: embeddings.{cls_token, position_embeddings, patch_embeddings.projection}, layers.N.{attention.
{q,k,v,o}_proj, layernorm_before, layernorm_after, mlp.fc1, mlp.fc2}, layernorm), so its state dict loads strictly
into a ViTModel of the same sizes. Two things differ and both are handled by that copy: MAE's position embeddings
are fixed 2-D sin-cos (copied as they are, then trainable in the ViT, as in MAE's fine-tuning), and MAE masks
inside its embeddings at config.mask_ratio, which a ViTModel never does (fine-tuning sees every patch).
ViTForImageClassification cannot load a vit_mae checkpoint itself: its config is another model_type.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import transformers
from transformers import (AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification, ViTConfig,
                          ViTForImageClassification, ViTMAEForPreTraining, ViTMAEModel, ViTModel)
from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil
from transformers.models.vit_mae.modeling_vit_mae import build_2d_sinusoidal_position_embedding
from transformers.utils import logging as hf_logging

from tunelab import checkpoints
from tunelab.config import Recipe, check_keys
from tunelab.errors import UserError

# What model.scratch builds for each stage.
SCRATCH_TYPES = {"mae": "vit_mae", "classify": "vit", "dino": "vit"}
# The ViTConfig fields an MAE encoder shares (the rest of ViTMAEConfig describes its decoder and masking).
ENCODER_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
                  "hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range", "layer_norm_eps",
                  "image_size", "patch_size", "num_channels", "qkv_bias")


def scratch(recipe: Recipe, stage: str, names: list[str] | None = None):
    """(fresh model, image processor) from `model.scratch`, a transformers config: {model_type: vit_mae for mae,
    vit for classify and dino, image_size, patch_size, hidden_size, ...}. Pictures are resized to image_size and
    scaled to [-1, 1] (mean and std 0.5)."""
    spec = dict(recipe.model.scratch)
    wanted = SCRATCH_TYPES[stage]
    if spec.get("model_type") != wanted:
        raise UserError(f"{recipe.origin('model.scratch')}: model.scratch.model_type = {spec.get('model_type')!r}; "
                        f"vit.{stage} builds model_type {wanted}")
    config_cls = type(AutoConfig.for_model(spec.pop("model_type")))
    check_keys(spec, [f.name for f in dataclasses.fields(config_cls)], "model.scratch", recipe)
    if names is not None:
        spec |= {"num_labels": len(names), "id2label": dict(enumerate(names)),
                 "label2id": {n: i for i, n in enumerate(names)}}
    try:
        config = config_cls(**spec)
    except (ValueError, TypeError) as e:
        raise UserError(f"{recipe.origin('model.scratch')}: model.scratch: {e}") from None
    model = {"mae": ViTMAEForPreTraining, "classify": ViTForImageClassification}.get(stage)
    built = model(config) if model else ViTModel(config, add_pooling_layer=False)
    if stage == "mae":
        fill_sincos_positions(built)
    return built, scratch_processor(config.image_size)


@torch.no_grad()
def fill_sincos_positions(mae: ViTMAEForPreTraining) -> None:
    """Write MAE's fixed 2-D sin-cos position tables into a model built from a config. transformers 5.23 leaves
    both at zero (its _init_weights zeroes the decoder's after __init__ filled it, and skips the encoder's once
    the patch projection is marked initialised), and they never train (requires_grad=False): an MAE from scratch
    would learn without knowing where any patch is, and its encoder would hand vit.classify no positions. The
    layout is the one transformers' own initialize_weights writes (and the hub checkpoints hold): the h and w
    halves swapped."""
    grid = int(mae.vit.embeddings.patch_embeddings.num_patches ** 0.5)
    for table in (mae.vit.embeddings.position_embeddings, mae.decoder.decoder_pos_embed):
        sincos = build_2d_sinusoidal_position_embedding(height=grid, width=grid, embed_dim=table.shape[-1],
                                                        cls_token=True)
        half = sincos.shape[-1] // 2
        table.copy_(torch.cat([sincos[..., half:], sincos[..., :half]], dim=-1).unsqueeze(0))


def scratch_processor(image_size: int) -> ViTImageProcessorPil:
    # The Pillow back end: transformers' default ViT image processor needs torchvision, which we do not install.
    return ViTImageProcessorPil(size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3,
                                image_std=[0.5] * 3)


def checkpoint_dir(name: str) -> str:
    """What from_pretrained reads for `model.name_or_path`: a ViT run's model/ (an adapter run must be merged
    first), an embedded default's build, a local folder or a hub name."""
    if checkpoints.is_family_run(name, "vit", "a ViT run"):
        if not (Path(name) / "model").is_dir():
            raise UserError(f"model.name_or_path = {name!r}: an adapter run; run `tunelab merge {name} OUT` and "
                            f"start from OUT")
        return str(Path(name) / "model")
    return checkpoints.resolve(name)


def load_processor(path: str):
    return AutoImageProcessor.from_pretrained(path, backend="pil")


def _model_type(recipe: Recipe, path: str) -> str:
    m = recipe.model
    return AutoConfig.from_pretrained(path, trust_remote_code=m.trust_remote_code).model_type


def _quiet_load(cls, path: str, recipe: Recipe, **kwargs):
    """from_pretrained without its load report, which lists what is meant to be new (a fresh head) or left out
    (an MAE checkpoint's decoder when only its encoder is wanted)."""
    m = recipe.model
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return cls.from_pretrained(path, dtype=checkpoints.DTYPES[m.dtype], attn_implementation=m.attn_implementation,
                                   trust_remote_code=m.trust_remote_code, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)


def vit_from_mae(encoder: ViTMAEModel, names: list[str] | None = None):
    """A ViTModel (names None) or a ViTForImageClassification with a fresh head, holding the MAE encoder's
    weights. Strict: a key the two do not share would be a bug here, not a user's mistake."""
    config = ViTConfig(**{k: getattr(encoder.config, k) for k in ENCODER_FIELDS})
    if names is None:
        vit = model = ViTModel(config, add_pooling_layer=False)
    else:
        config.num_labels, config.id2label = len(names), dict(enumerate(names))
        config.label2id = {n: i for i, n in enumerate(names)}
        model = ViTForImageClassification(config)
        vit = model.vit
    vit.load_state_dict(encoder.state_dict(), strict=True)
    return model.to(encoder.dtype)


def load_mae(recipe: Recipe):
    """(ViTMAEForPreTraining, processor) to pretrain further: a vit_mae checkpoint or MAE run."""
    path = checkpoint_dir(recipe.model.name_or_path)
    if _model_type(recipe, path) != "vit_mae":
        raise UserError(f"{recipe.origin('model.name_or_path')}: model.name_or_path = {recipe.model.name_or_path!r} "
                        f"is a {_model_type(recipe, path)} model; vit.mae continues a vit_mae checkpoint (or builds "
                        f"one with model.scratch)")
    return _quiet_load(ViTMAEForPreTraining, path, recipe), load_processor(path)


def load_backbone(recipe: Recipe):
    """(image encoder without a head, processor) for DINO: an MAE encoder as a ViTModel, a ViT (a DINO run, a
    hub ViT) or another vision transformer transformers' AutoModel knows (DINOv2)."""
    return backbone_at(checkpoint_dir(recipe.model.name_or_path), recipe)


def backbone_at(path: str, recipe: Recipe):
    """load_backbone for a model folder (a DINO run's model/, read back with the run's recipe)."""
    kind = _model_type(recipe, path)
    if kind == "vit_mae":
        return vit_from_mae(_quiet_load(ViTMAEModel, path, recipe)), load_processor(path)
    if kind == "vit":
        return _quiet_load(ViTModel, path, recipe, add_pooling_layer=False), load_processor(path)
    return _quiet_load(AutoModel, path, recipe), load_processor(path)


def load_classifier(recipe: Recipe, names: list[str]):
    """(image classifier with a fresh head for `names`, processor): from an MAE encoder, or any checkpoint
    AutoModelForImageClassification knows (a ViT, a DINO run's ViTModel, DINOv2); a head it has already is
    replaced when the classes differ."""
    path = checkpoint_dir(recipe.model.name_or_path)
    if _model_type(recipe, path) == "vit_mae":
        return vit_from_mae(_quiet_load(ViTMAEModel, path, recipe), names), load_processor(path)
    model = _quiet_load(AutoModelForImageClassification, path, recipe, num_labels=len(names),
                        id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
                        ignore_mismatched_sizes=True)
    return model, load_processor(path)


def features(backbone, pixel_values):
    """(B, hidden) class-token features: the last layer's CLS after the final norm (DINO's k-NN features).
    ViT takes other picture sizes than its own (DINO's local crops) by interpolating its positions; DINOv2
    always does."""
    interpolate = {"interpolate_pos_encoding": True} if isinstance(backbone, transformers.ViTModel) else {}
    return backbone(pixel_values=pixel_values, **interpolate).last_hidden_state[:, 0]
