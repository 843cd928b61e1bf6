"""CLIP recipes: contrastive image-text training of CLIP-class dual encoders (CLIPModel) with the HF Trainer.

- pretrain: build a caption tokenizer, an image processor and a tiny CLIP from `model.scratch` and train it
  from scratch on image-caption pairs (this is how `embedded:tiny-clip` is made);
- finetune: continue from a checkpoint with LoRA on the attention projections of both towers, or fully;
  `adapter.freeze` keeps one tower frozen (freeze: vision is locked-image tuning, LiT).

The loss is CLIPModel's own symmetric InfoNCE over the batch with its learnable temperature (return_loss=True),
so the Trainer needs no custom compute_loss. Images are decoded lazily, batch by batch, in the collator.
"""

from __future__ import annotations

import string
from pathlib import Path

import transformers
from peft import LoraConfig, get_peft_model
from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel, TrainingArguments

from tunelab import adapters, checkpoints, rundir
from tunelab.config import GenerateConfig, ModelConfig, Recipe, single_train_source, trainer_args
from tunelab.data.images import load_image, read_labelled, read_pairs
from tunelab.data.readers import Records
from tunelab.errors import UserError
from tunelab.evaluation.clip import evaluate
from tunelab.evaluation.retrieval import probabilities
from tunelab.families import Job, PredictRequest

FORMATS = {"pretrain": ("image_caption",), "finetune": ("image_caption",)}
GENERATES = False
CHAT = False
# The collator reads the raw records (image, caption): the Trainer must not strip their keys.
TRAIN_DEFAULTS = {"logging_steps": 10, "save_steps": 500, "remove_unused_columns": False}
TOWERS = {"vision": ("vision_model.", "visual_projection."), "text": ("text_model.", "text_projection.")}
BOS, EOS, PAD, UNK = "<|startoftext|>", "<|endoftext|>", "<pad>", "<unk>"


def build_args(recipe: Recipe, stage: str, output_dir: Path) -> TrainingArguments:
    return trainer_args(TrainingArguments, recipe, rundir.trainer_defaults(**TRAIN_DEFAULTS), output_dir=str(output_dir))


# ---------------------------------------------------------------- the data

def data_report(recipe: Recipe, stage: str) -> dict:
    """Every image path checked, no pixels decoded."""
    return read_data(recipe)[-1]


def read_data(recipe: Recipe) -> tuple[Records, Records, Records | None, dict]:
    """(train pairs, eval pairs, labelled zero-shot images or None, data report); every path checked up front."""
    d, e = recipe.data, recipe.eval
    if d.format != "image_caption":
        raise UserError(f"{recipe.origin('data.format')}: data.format = {d.format!r} does not fit {recipe.recipe} "
                        f"(use image_caption)")
    if not d.eval:
        raise UserError(f"{recipe.origin('data')}: a CLIP recipe needs data.eval (image-caption pairs for recall@k)")
    train, pairs = read_pairs(d.train, d.caption_template), read_pairs(d.eval, d.caption_template)
    for records, limit in ((train, d.max_train_samples), (pairs, e.max_samples)):
        if limit is not None:
            records.rows, records.lines = records.rows[:limit], records.lines[:limit]
    if any(k < 1 for k in e.recall_k):
        raise UserError(f"{recipe.origin('eval.recall_k')}: eval.recall_k = {e.recall_k} should be >= 1")
    if len(pairs.rows) < max(e.recall_k):
        raise UserError(f"{recipe.origin('eval.recall_k')}: the eval set has {len(pairs.rows)} pairs, too few for "
                        f"recall@{max(e.recall_k)}; give more eval pairs or lower eval.recall_k")
    if not e.templates or any("{}" not in t for t in e.templates):
        raise UserError(f"{recipe.origin('eval.templates')}: each eval.templates entry needs a {{}} for the class name")
    labelled = read_labelled(e.zero_shot) if e.zero_shot else None
    report = {"train_records": len(train.rows), "eval_records": len(pairs.rows),
              "zero_shot_records": len(labelled.rows) if labelled else 0}
    return train, pairs, labelled, report


class ImageCaptionCollator:
    """Decodes a batch's images only when the batch is built, tokenizes its captions and asks CLIPModel for its
    contrastive loss. A file that cannot be decoded stops the run (on_error fail) or is left out of its batch
    and remembered (on_error skip), so metrics.json can count each bad file once however many epochs ran."""

    def __init__(self, tokenizer, image_processor, on_error: str):
        self.tokenizer, self.image_processor, self.on_error = tokenizer, image_processor, on_error
        self.skipped: set[str] = set()

    def __call__(self, items: list[tuple[dict, str]]) -> dict:
        images, captions = [], []
        for row, where in items:
            image = row["image"] if not isinstance(row["image"], str) else load_image(row["image"], self.on_error, where)
            if image is None:
                self.skipped.add(row["image"])
                continue
            images.append(image)  # RGB already: load_image converts, and the built-in sets are drawn in RGB
            captions.append(row["caption"])
        if not images:
            raise UserError(f"{items[0][1]}: no image of this batch could be decoded (on_error: skip); check the files")
        text = self.tokenizer(captions, padding=True, truncation=True, return_tensors="pt")
        pixels = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        return {"input_ids": text["input_ids"], "attention_mask": text["attention_mask"], "pixel_values": pixels,
                "return_loss": True}


def as_items(records: Records) -> list[tuple[dict, str]]:
    """(row, file:line) pairs: a plain list is a map-style dataset the Trainer can index."""
    return [(row, records.where(i)) for i, row in enumerate(records.rows)]


# ---------------------------------------------------------------- the model

def train_caption_tokenizer(captions: list[str], vocab_size: int, max_length: int):
    """A lower-cased BPE over caption words with CLIP's start and end-of-text tokens around every caption.
    CLIP pools the text tower at the first end-of-text token, so it must not be id 2: transformers reads
    eos_token_id == 2 as an old config and pools at the largest id instead."""
    from tokenizers import Tokenizer, models as tok_models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(tok_models.BPE(unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    alphabet = [c for c in string.printable if not c.isspace() and not c.isupper()]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOS, BOS, UNK], initial_alphabet=alphabet,
                                  show_progress=False)
    tok.train_from_iterator(captions, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, tok.token_to_id(BOS)), (EOS, tok.token_to_id(EOS))])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                                unk_token=UNK, model_max_length=max_length)


def scratch_model(model_cfg: ModelConfig, captions: list[str]):
    """(CLIPModel, tokenizer, image processor) from `model.scratch`: {vocab_size, image_size, projection_dim,
    text: {...CLIPTextConfig}, vision: {...CLIPVisionConfig}}."""
    spec = dict(model_cfg.scratch)
    if spec.pop("model_type", "clip") != "clip":
        raise UserError("model.scratch: the CLIP recipes build model_type clip")
    text, vision = dict(spec.pop("text", {})), dict(spec.pop("vision", {}))
    image_size = spec.pop("image_size", 224)
    tokenizer = train_caption_tokenizer(captions, spec.pop("vocab_size", 512), text.get("max_position_embeddings", 77))
    try:
        config = transformers.CLIPConfig(
            text_config={**text, "vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
                         "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id},
            vision_config={**vision, "image_size": image_size}, **spec)
    except (ValueError, TypeError) as e:
        raise UserError(f"model.scratch: {e}") from None
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    # The Pillow back end: transformers' default CLIP image processor needs torchvision, which we do not install.
    processor = CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                      crop_size={"height": image_size, "width": image_size})
    return CLIPModel(config), tokenizer, processor


def load_model(model_cfg: ModelConfig):
    """(CLIPModel, tokenizer, image processor) for a recipe's `model:`; a run directory comes back merged."""
    if checkpoints.is_family_run(model_cfg.name_or_path, "clip", "a CLIP run"):
        return load_run(model_cfg.name_or_path, merge=True)
    path = checkpoints.resolve(model_cfg.name_or_path)
    config = transformers.AutoConfig.from_pretrained(path, trust_remote_code=model_cfg.trust_remote_code)
    if config.model_type != "clip":
        raise UserError(f"model.name_or_path = {model_cfg.name_or_path!r}: a {config.model_type} model; the CLIP "
                        f"recipes need a CLIP checkpoint (model_type clip)")
    model = CLIPModel.from_pretrained(path, dtype=checkpoints.DTYPES[model_cfg.dtype],
                                      attn_implementation=model_cfg.attn_implementation)
    return model, AutoTokenizer.from_pretrained(path), _image_processor(path)


def _image_processor(path):
    return AutoImageProcessor.from_pretrained(path, backend="pil")


def peft_config(recipe: Recipe) -> LoraConfig | None:
    """LoRA on the chosen projections of both towers, or of the unfrozen one (adapter.freeze)."""
    a = recipe.adapter
    if a.method == "full":
        return None
    frozen = TOWERS[a.freeze] if a.freeze else None
    exclude = f"({'|'.join(p.rstrip('.') for p in frozen)})\\..*" if frozen else None
    return LoraConfig(r=a.r, lora_alpha=a.alpha, lora_dropout=a.dropout, target_modules=a.target_modules,
                      exclude_modules=exclude)


def check(recipe: Recipe, stage: str) -> None:
    single_train_source(recipe)
    adapters.check_method(recipe)
    if recipe.adapter.method not in ("lora", "full"):
        raise UserError(f"{recipe.origin('adapter.method')}: adapter.method={recipe.adapter.method} is not set up "
                        f"for CLIP's two towers (adapter.freeze); CLIP trains with lora or full")
    if recipe.data.validation_fraction is not None:
        raise UserError(f"{recipe.origin('data.validation_fraction')}: a CLIP recipe scores on data.eval only "
                        f"(no validation split); drop data.validation_fraction")
    if recipe.adapter.freeze and recipe.recipe == "clip.pretrain":
        raise UserError(f"{recipe.origin('adapter.freeze')}: a tower built from scratch cannot stay frozen; "
                        f"adapter.freeze is for fine-tuning")


def freeze_tower(model, tower: str | None) -> None:
    for name, param in model.named_parameters():
        if tower and name.startswith(TOWERS[tower]):
            param.requires_grad_(False)


# ---------------------------------------------------------------- training and runs

def prepare(recipe: Recipe, stage: str, args) -> Job:
    train_pairs, eval_pairs, labelled, report = read_data(recipe)
    transformers.set_seed(args.seed)
    if recipe.model.scratch is not None:
        model, tokenizer, processor = scratch_model(recipe.model, [r["caption"] for r in train_pairs.rows])
    else:
        model, tokenizer, processor = load_model(recipe.model)
    adapters.check_model_fits(recipe, model)
    config = peft_config(recipe)
    if config is None:
        freeze_tower(model, recipe.adapter.freeze)
    else:
        model = get_peft_model(model, config)
    collator = ImageCaptionCollator(tokenizer, processor, recipe.data.on_image_error)

    def score(trained, _) -> dict:
        report["train_images_skipped"] = len(collator.skipped)  # known only once training has read every batch
        return evaluate(trained, tokenizer, processor, recipe, eval_pairs, labelled)

    return Job(model=model, train_dataset=as_items(train_pairs), eval_dataset=as_items(eval_pairs), evaluate=score,
               auto_class="CLIPModel", trainer_kwargs={"data_collator": collator}, processors=(tokenizer, processor),
               report=report, train_facts=lambda trained: {"logit_scale": _temperature(trained)})


def _temperature(model) -> float:
    """exp(logit_scale): the learned inverse temperature that multiplies the cosine similarities."""
    return round(float(model.logit_scale.detach().exp()), 3)


def load_run(run_dir: str | Path, merge: bool = False):
    """(model, tokenizer, image processor) of a finished CLIP run, in eval mode."""
    run_dir = Path(run_dir)
    if (run_dir / "model").is_dir():
        path = run_dir / "model"
        return CLIPModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path), _image_processor(path)
    recipe = checkpoints.run_recipe(run_dir)
    base, _, _ = load_model(recipe.model)
    model = checkpoints.attach_adapter(base, run_dir, recipe.adapter.method, merge)
    adapter = run_dir / "adapter"
    return model.eval(), AutoTokenizer.from_pretrained(adapter), _image_processor(adapter)


def base_model_of(run_dir: str | Path):
    model, tokenizer, processor = load_model(checkpoints.run_recipe(run_dir).model)
    return model.eval(), tokenizer, processor


def evaluate_run(run_dir: Path, recipe: Recipe, stage: str, data: str | None, fmt: str | None,
                 baseline: bool) -> dict:
    """{"model": recall@k and zero-shot accuracy, "baseline": the same for the base model (with --baseline)}.
    --data names other image-caption pairs to retrieve over; the zero-shot set stays the recipe's."""
    if fmt and fmt not in FORMATS[stage]:
        raise UserError(f"--format {fmt}: a {recipe.recipe} run evaluates image_caption data")
    if data:
        recipe.data.eval = data
    _, pairs, labelled, _ = read_data(recipe)
    results = {"model": evaluate(*load_run(run_dir), recipe, pairs, labelled)}
    if baseline:
        results["baseline"] = evaluate(*base_model_of(run_dir), recipe, pairs, labelled)
    return results


def generate(loaded: tuple, recipe: Recipe, prompts: list, settings: GenerateConfig, raw: bool) -> list[str]:
    raise UserError(f"a {recipe.recipe} run matches images and texts and does not generate; use `tunelab predict`")


def predict(run_dir: Path, recipe: Recipe, stage: str, request: PredictRequest) -> list[dict]:
    """Each image's zero-shot label probabilities over request.labels, most likely first ({"input", "labels"})."""
    if not request.images or not request.labels or request.texts or request.text_pairs:
        raise UserError('predict: a CLIP run labels images: give --image PATH and --labels "a,b,c" (no --text)')
    labels = [label.strip() for label in request.labels.split(",") if label.strip()]
    template = request.template or recipe.eval.templates[0]
    if "{}" not in template:
        raise UserError(f"predict: --template {template!r} needs a {{}} for the label")
    images = [load_image(path) for path in request.images]
    model, tokenizer, processor = load_run(run_dir)
    results = []
    for path, image in zip(request.images, images):
        probs = sorted(probabilities(model, tokenizer, processor, image, labels, template).items(), key=lambda kv: -kv[1])
        results.append({"input": path, "labels": probs[:request.top]})
    return results
