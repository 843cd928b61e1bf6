"""ViT recipes: vision transformers for image classification, and two ways to pretrain them on unlabelled pictures.

- mae: masked autoencoding (ViTMAEForPreTraining; He et al., 2021, https://arxiv.org/abs/2111.06377): the encoder
  sees a quarter of the patches, a small decoder paints the rest, the loss is the squared error of the painted
  pixels. From `model.scratch` (this is how `embedded:tiny-vit-mae` is made) or a vit_mae checkpoint. Scored by
  the reconstruction loss on held-out pictures, with a picture of them (mae_reconstruction.png in the run).
- classify: ViTForImageClassification from the MAE encoder (embedded:tiny-vit-mae, an MAE run), a DINO run, a hub
  ViT or DINOv2, or from `model.scratch` (the same ViT, randomly initialised: what pretraining is measured
  against); LoRA on the attention projections with the fresh head trained whole, full fine-tuning, and the other
  methods that fit a ViT. Scored by accuracy and macro-F1 on held-out pictures.
- dino: self-distillation with no labels (tunelab.vision.dino) of a ViT backbone; scored by the k-NN accuracy of its
  class-token features before and after training. Its model/ is the trained ViTModel, which classify can start from.
The Trainer does the training; pictures are decoded batch by batch in the collators (tunelab.vision.pictures).
"""

from __future__ import annotations

import json
from pathlib import Path

import transformers
from transformers import AutoModelForImageClassification, TrainingArguments, ViTMAEForPreTraining

from tunelab import adapters, checkpoints, rundir
from tunelab.config import GenerateConfig, Recipe, single_train_source, trainer_args
from tunelab.data.images import load_image
from tunelab.data.readers import Records
from tunelab.errors import UserError
from tunelab.evaluation import vit as scores
from tunelab.families import Job, PredictRequest, stage_of
from tunelab.vision import backbones, dino, pictures
from tunelab.vision.crops import MultiCrop

FORMATS = {"mae": ("image_label",), "classify": ("image_label",), "dino": ("image_label",)}
GENERATES = False
CHAT = False
# The collators read the raw records; a ViT's inputs are pixels, which the Trainer would count as "tokens".
TRAIN_DEFAULTS = {"logging_steps": 10, "save_steps": 500, "remove_unused_columns": False,
                  "include_num_input_tokens_seen": "no"}
LABELS_FILE = "labels.json"
GRID_PICTURES = 8
# Methods that do not fit a vision transformer, and why.
REFUSED = {"prefix": "PEFT puts its virtual tokens in front of token ids, and a ViT reads pixels",
           "prompt": "PEFT puts its virtual tokens in front of token ids, and a ViT reads pixels",
           "ptuning": "PEFT puts its virtual tokens in front of token ids, and a ViT reads pixels",
           "embedding": "a ViT has no token embeddings to train, it projects patches",
           "gradual_unfreeze": "its last group is the token embeddings, which a ViT does not have",
           "ia3": "PEFT does not know where IA3 goes in a ViT"}


def check(recipe: Recipe, stage: str) -> None:
    single_train_source(recipe)
    a, where = recipe.adapter, recipe.origin("adapter.method")
    if recipe.model.scratch is None:
        adapters.check_method(recipe)
    elif a.method != "full" or recipe.model.quantization:
        raise UserError(f"{where}: a ViT built from scratch (model.scratch) has no pretrained weights to adapt; "
                        f"use adapter.method=full and no model.quantization")
    if stage != "classify" and a.method != "full":
        raise UserError(f"{where}: adapter.method={a.method}: vit.{stage} pretrains every weight; use full")
    if a.method in REFUSED:
        raise UserError(f"{where}: adapter.method={a.method} does not fit a ViT: {REFUSED[a.method]}; use lora, "
                        f"dora, adalora, ln_tuning, bitfit, last_layers, bottleneck or full")
    if a.freeze:
        raise UserError(f"{recipe.origin('adapter.freeze')}: adapter.freeze is for CLIP's two towers; a ViT has one")
    if recipe.data.validation_fraction is not None:
        raise UserError(f"{recipe.origin('data.validation_fraction')}: a ViT recipe scores on data.eval only (no "
                        f"validation split); drop data.validation_fraction")


def build_args(recipe: Recipe, stage: str, output_dir: Path) -> TrainingArguments:
    args_cls = dino.DinoArguments if stage == "dino" else TrainingArguments
    args = trainer_args(args_cls, recipe, rundir.trainer_defaults(**TRAIN_DEFAULTS), output_dir=str(output_dir))
    if stage == "dino":
        dino.check_settings(args, recipe)
    return args


def data_report(recipe: Recipe, stage: str) -> dict:
    """Every image path checked, no pixels decoded."""
    return pictures.read(recipe, stage).report


# ---------------------------------------------------------------- training

def prepare(recipe: Recipe, stage: str, args) -> Job:
    data = pictures.read(recipe, stage)
    transformers.set_seed(args.seed)  # a fresh model, head or adapter draws its weights next
    return {"mae": _prepare_mae, "classify": _prepare_classify, "dino": _prepare_dino}[stage](recipe, args, data)


def _prepare_mae(recipe: Recipe, args, data: pictures.Pictures) -> Job:
    model, processor = backbones.scratch(recipe, "mae") if recipe.model.scratch else backbones.load_mae(recipe)
    collator = pictures.PictureCollator(processor, recipe.data.on_image_error)

    def score(trained, run_dir: Path) -> dict:
        data.report["train_images_skipped"] = len(collator.skipped)
        return {**_mae_scores(trained, processor, recipe, data),
                **_grid(trained, processor, recipe, data, run_dir)}

    return Job(model=model, train_dataset=pictures.as_items(data.train), eval_dataset=pictures.as_items(data.eval),
               evaluate=score, auto_class="ViTMAEForPreTraining", trainer_kwargs={"data_collator": collator},
               processors=(processor,), report=data.report)


def _mae_scores(model, processor, recipe: Recipe, data: pictures.Pictures) -> dict:
    images, _, skipped = pictures.decoded(data.eval, recipe.data.on_image_error)
    return {"reconstruction_loss": scores.reconstruction_loss(model, processor, images, recipe.eval.batch_size),
            "mask_ratio": model.config.mask_ratio, "eval_pictures": len(images), "eval_images_skipped": skipped}


def _grid(model, processor, recipe: Recipe, data: pictures.Pictures, run_dir: Path) -> dict:
    first = Records(data.eval.rows[:GRID_PICTURES], data.eval.source, data.eval.lines[:GRID_PICTURES])
    images, _, _ = pictures.decoded(first, recipe.data.on_image_error)
    width, height = scores.reconstruction_grid(model, processor, images, run_dir / scores.RECONSTRUCTION_PNG)
    return {"reconstruction_png": scores.RECONSTRUCTION_PNG, "reconstruction_png_size": [width, height]}


def _prepare_classify(recipe: Recipe, args, data: pictures.Pictures) -> Job:
    model, processor = _classifier(recipe, data.names)
    adapters.check_model_fits(recipe, model)
    model = adapters.wrap(model, recipe, task="classify")  # PEFT's SEQ_CLS trains the fresh head whole
    collator = pictures.PictureCollator(processor, recipe.data.on_image_error, data.names)

    def score(trained, _) -> dict:
        data.report["train_images_skipped"] = len(collator.skipped)
        return _classify_scores(trained, processor, recipe, data)

    return Job(model=model, train_dataset=pictures.as_items(data.train), eval_dataset=pictures.as_items(data.eval),
               evaluate=score, auto_class="AutoModelForImageClassification",
               trainer_kwargs={"data_collator": collator}, processors=(processor,),
               files={LABELS_FILE: {"labels": data.names}}, report=data.report)


def _classifier(recipe: Recipe, names: list[str]):
    if recipe.model.scratch is not None:
        return backbones.scratch(recipe, "classify", names)
    return backbones.load_classifier(recipe, names)


def _classify_scores(model, processor, recipe: Recipe, data: pictures.Pictures) -> dict:
    images, labels, skipped = pictures.decoded(data.eval, recipe.data.on_image_error)
    return {**scores.classification(model, processor, images, labels, data.names, recipe.eval.batch_size),
            "eval_pictures": len(images), "eval_images_skipped": skipped}


def _prepare_dino(recipe: Recipe, args: dino.DinoArguments, data: pictures.Pictures) -> Job:
    backbone, processor = backbones.scratch(recipe, "dino") if recipe.model.scratch else backbones.load_backbone(recipe)
    before = _knn(backbone, processor, recipe, data)  # the backbone as it starts, before the head draws its weights
    head = dino.DinoHead(backbone.config.hidden_size, args.out_dim, args.head_hidden_dim, args.head_bottleneck_dim,
                         args.head_batch_norm)
    size = pictures.processor_size(processor)
    patch = backbone.config.patch_size
    local_size = args.local_crop_size or max(patch, round(size * 3 / 7 / patch) * patch)
    crops = MultiCrop(size, local_size, args.local_crops, args.global_crop_scale, args.local_crop_scale,
                      args.hue_jitter, args.seed)
    collator = pictures.MultiCropCollator(processor, crops, recipe.data.on_image_error)

    def score(pair, _) -> dict:
        data.report["train_images_skipped"] = len(collator.skipped)
        after = _knn(pair.student, processor, recipe, data)
        teacher = _knn(pair.teacher, processor, recipe, data)
        return {"knn_accuracy": after["knn_accuracy"], "knn_accuracy_before": before["knn_accuracy"],
                "knn_accuracy_teacher": teacher["knn_accuracy"], **{k: v for k, v in after.items() if k != "knn_accuracy"}}

    return Job(model=dino.DinoPair(backbone, head), train_dataset=pictures.as_items(data.train),
               eval_dataset=pictures.as_items(data.eval), evaluate=score, auto_class="AutoModel",
               trainer_cls=dino.DinoTrainer, trainer_kwargs={"data_collator": collator}, processors=(processor,),
               report=data.report, metrics={"crops": {"global": [2, size], "local": [args.local_crops, local_size]}})


KNN_K = 20


def _knn(backbone, processor, recipe: Recipe, data: pictures.Pictures) -> dict:
    """k-NN accuracy of the eval pictures among the train pictures' class-token features (their labels vote)."""
    batch, on_error = recipe.eval.batch_size, recipe.data.on_image_error
    bank_images, bank_labels, _ = pictures.decoded(data.train, on_error)
    images, labels, skipped = pictures.decoded(data.eval, on_error)
    bank = scores.class_token_features(backbone, processor, bank_images, batch)
    queries = scores.class_token_features(backbone, processor, images, batch)
    return {"knn_accuracy": scores.knn_accuracy(bank, bank_labels, queries, labels, k=KNN_K), "knn_k": KNN_K,
            "knn_bank": len(bank_images), "eval_pictures": len(images), "eval_images_skipped": skipped}


# ---------------------------------------------------------------- finished runs

def run_labels(run_dir: str | Path) -> list[str]:
    return json.loads((Path(run_dir) / LABELS_FILE).read_text(encoding="utf-8"))["labels"]


def _stage(run_dir: Path, recipe: Recipe) -> str:
    return stage_of(recipe.recipe, str(run_dir / "recipe.yaml"))[1]


def load_run(run_dir: str | Path, merge: bool = False):
    """(model, image processor) of a finished ViT run, in eval mode: the MAE model, the DINO student backbone or
    the classifier (an adapter on its base, merged with `merge`)."""
    run_dir = Path(run_dir)
    recipe = checkpoints.run_recipe(run_dir)
    stage = _stage(run_dir, recipe)
    saved = run_dir / "model"
    if stage == "dino":
        return backbones.backbone_at(str(saved), recipe)[0].eval(), backbones.load_processor(str(saved))
    if saved.is_dir():
        cls = ViTMAEForPreTraining if stage == "mae" else AutoModelForImageClassification
        return cls.from_pretrained(saved).eval(), backbones.load_processor(str(saved))
    base, _ = backbones.load_classifier(recipe, run_labels(run_dir))
    model = checkpoints.attach_adapter(base, run_dir, recipe.adapter.method, merge)
    return model.eval(), backbones.load_processor(str(run_dir / "adapter"))


def base_model_of(run_dir: str | Path):
    """(model, processor) the run started from (a classifier's fresh head seeded as in training), for --baseline."""
    run_dir = Path(run_dir)
    recipe = checkpoints.run_recipe(run_dir)
    stage = _stage(run_dir, recipe)
    if stage == "mae":
        model, processor = backbones.load_mae(recipe)
    elif stage == "dino":
        model, processor = backbones.load_backbone(recipe)
    else:
        transformers.set_seed(build_args(recipe, stage, run_dir).seed)
        model, processor = backbones.load_classifier(recipe, run_labels(run_dir))
    return model.eval(), processor


def evaluate_run(run_dir: Path, recipe: Recipe, stage: str, data: str | None, fmt: str | None,
                 baseline: bool) -> dict:
    """{"model": the stage's scores on the eval split or `data`, "baseline": the base model's (with --baseline)}.
    DINO's k-NN memory bank stays the recipe's train pictures."""
    if fmt and fmt not in FORMATS[stage]:
        raise UserError(f"--format {fmt}: a {recipe.recipe} run evaluates image_label data")
    if data:
        recipe.data.eval = data
    found = pictures.read(recipe, stage, run_labels(run_dir) if stage == "classify" else None)
    score = {"mae": lambda m, p: _mae_scores(m, p, recipe, found),
             "classify": lambda m, p: _classify_scores(m, p, recipe, found),
             "dino": lambda m, p: _knn(m, p, recipe, found)}[stage]
    results = {"model": score(*load_run(run_dir))}
    if baseline:
        results["baseline"] = score(*base_model_of(run_dir))
    return results


def generate(loaded: tuple, recipe: Recipe, prompts: list, settings: GenerateConfig, raw: bool) -> list[str]:
    raise UserError(f"a {recipe.recipe} run reads pictures and does not generate text; use `tunelab predict`")


def predict(run_dir: Path, recipe: Recipe, stage: str, request: PredictRequest) -> list[dict]:
    """Each picture's most likely classes with their probabilities, most likely first ({"input", "labels"})."""
    if stage != "classify":
        raise UserError(f"predict: a {recipe.recipe} run has no classes to predict; fine-tune one with vit.classify "
                        f"(model.name_or_path={run_dir}) and predict with that run")
    if not request.images or request.texts or request.text_pairs or request.labels:
        raise UserError("predict: a ViT run labels pictures with its own classes: give --image PATH (no --text, "
                        "no --labels)")
    images = [load_image(path) for path in request.images]
    model, processor = load_run(run_dir)
    names = run_labels(run_dir)
    probs = scores.class_probabilities(model, processor, images, 32)
    results = []
    for path, p in zip(request.images, probs):
        top = p.topk(min(request.top, len(names)))
        results.append({"input": path, "labels": [(names[j], v) for v, j in zip(top.values.tolist(),
                                                                                   top.indices.tolist())]})
    return results
