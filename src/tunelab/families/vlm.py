"""Vision-language recipes (LLaVA, minimind-V): a CLIP vision tower, a projector and a causal LM, trained in two stages
with the HF Trainer.

- pretrain (alignment): assemble the model from `model.vision_tower` (a CLIP checkpoint or run, or
  embedded:tiny-clip) and `model.name_or_path` (any causal LM tunelab loads) and train the projector alone on
  image-caption chats, so that the LM learns nothing new and the pictures learn to speak its language;
- sft (instruction tuning): from an assembled model (a pretrain run, or embedded:tiny-vlm), train the projector
  and a LoRA on the LM (or the whole LM) on chats about pictures, the loss on the replies only. Given
  model.vision_tower too, it assembles the parts itself and skips the alignment stage (the projector starts fresh).

The vision tower stays frozen in both, as in LLaVA. The model is transformers' LlavaForConditionalGeneration
(tunelab.vision_language), so a run's model/ or its base plus adapter/ loads with transformers and peft alone.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
import transformers
from peft import LoraConfig, get_peft_model
from transformers import Trainer, TrainingArguments

from tunelab import adapters, checkpoints, rundir, vision_language as vl
from tunelab.config import GenerateConfig, ModelConfig, Recipe, single_train_source, trainer_args
from tunelab.data import formats
from tunelab.data.images import load_image
from tunelab.data.readers import Records, read_records
from tunelab.errors import UserError
from tunelab.evaluation.generation import check_generate, generation_kwargs
from tunelab.families import Job, PredictRequest

FORMATS = {"pretrain": ("image_chat",), "sft": ("image_chat",)}
GENERATES = True
CHAT = True
IMAGES = True  # `tunelab generate` needs --image
METHODS = {"pretrain": ("full",), "sft": ("lora", "full")}
TRAIN_DEFAULTS = {"logging_steps": 10, "save_steps": 500, "remove_unused_columns": False}
PROJECTOR = "multi_modal_projector"
AUTO_CLASS = "LlavaForConditionalGeneration"


def check(recipe: Recipe, stage: str) -> None:
    single_train_source(recipe)
    adapters.check_method(recipe)
    check_generate(recipe.eval.generate)
    method, vision = recipe.adapter.method, recipe.model.vision_tower
    if method not in METHODS[stage]:
        why = ("vlm.pretrain trains the projector alone and saves the whole assembled model: use adapter.method: full"
               if stage == "pretrain" else "vlm.sft trains the projector with a LoRA on the LM (lora) or the whole "
               "LM (full)")
        raise UserError(f"{recipe.origin('adapter.method')}: adapter.method={method} does not fit {recipe.recipe}; {why}")
    if stage == "pretrain" and not vision:
        raise UserError(f"{recipe.origin('model')}: vlm.pretrain needs model.vision_tower (a CLIP checkpoint or run, "
                        f"or embedded:tiny-clip) to put in front of model.name_or_path")
    if recipe.model.scratch is not None:
        raise UserError(f"{recipe.origin('model.scratch')}: a vision-language model is assembled from pretrained "
                        f"parts; drop model.scratch")


def build_args(recipe: Recipe, stage: str, output_dir: Path) -> TrainingArguments:
    return trainer_args(TrainingArguments, recipe, rundir.trainer_defaults(**TRAIN_DEFAULTS), output_dir=str(output_dir))


# ---------------------------------------------------------------- the data

def read_chats(spec: str, max_records: int | None = None) -> Records:
    """image_chat records, checked, each image a PIL picture (built-in sets) or an absolute path to an existing file."""
    records = read_records(spec)
    formats.check(records, "image_chat")
    base = Path(spec).resolve().parent
    for i, row in enumerate(records.rows):
        if isinstance(row["image"], str):
            path = base / row["image"]
            if not path.is_file():
                raise UserError(f"{records.where(i)}: image {row['image']!r} not found (looked for {path}; "
                                f"paths are relative to the data file's folder)")
            row["image"] = str(path)
        elif not hasattr(row["image"], "convert"):
            raise UserError(f"{records.where(i)}: field 'image' should be a path to a picture")
    if max_records is not None:
        records.rows, records.lines = records.rows[:max_records], records.lines[:max_records]
    return records


def read_data(recipe: Recipe) -> tuple[Records, Records, dict]:
    """(train chats, eval chats, report); without data.eval, data.eval_fraction of train (seeded) is held out."""
    d = recipe.data
    train = read_chats(single_train_source(recipe))
    if d.eval:
        evals = read_chats(d.eval)
    else:
        order = list(range(len(train.rows)))
        random.Random(d.seed).shuffle(order)
        cut = max(1, int(len(order) * d.eval_fraction))
        evals = Records([train.rows[i] for i in order[:cut]], train.source, [train.lines[i] for i in order[:cut]])
        train.rows, train.lines = [train.rows[i] for i in order[cut:]], [train.lines[i] for i in order[cut:]]
    for records, limit in ((train, d.max_train_samples), (evals, d.max_eval_samples)):
        if limit is not None:
            records.rows, records.lines = records.rows[:limit], records.lines[:limit]
    return train, evals, {"train_records": len(train.rows), "eval_records": len(evals.rows)}


def data_report(recipe: Recipe, stage: str) -> dict:
    return read_data(recipe)[-1]


def encode_records(processor, records: Records, max_length: int, report: dict, split: str) -> list[dict]:
    """Each chat as token ids and labels (tunelab.vision_language.encode_chat), cut to data.max_length; a chat whose
    replies all lie past the cut is an error naming its line, found before anything is written."""
    items, cut = [], 0
    for i, row in enumerate(records.rows):
        ids, labels = vl.encode_chat(processor, row["messages"])
        if len(ids) > max_length:
            cut += 1
            ids, labels = ids[:max_length], labels[:max_length]
            if all(label == -100 for label in labels):
                raise UserError(f"{records.where(i)}: the chat is {len(vl.encode_chat(processor, row['messages'])[0])} "
                                f"tokens with the picture's, and its reply starts after data.max_length = {max_length}; "
                                f"raise data.max_length")
        items.append({"input_ids": ids, "labels": labels, "image": row["image"], "where": records.where(i)})
    report[f"{split}_truncated"] = cut
    return items


class ImageChatCollator:
    """Pads a batch of encoded chats on the right and decodes their pictures only now."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, items: list[dict]) -> dict:
        width = max(len(item["input_ids"]) for item in items)
        pad = self.processor.tokenizer.pad_token_id or 0
        images = [item["image"] if not isinstance(item["image"], str) else load_image(item["image"], where=item["where"])
                  for item in items]
        return {"input_ids": torch.tensor([x["input_ids"] + [pad] * (width - len(x["input_ids"])) for x in items]),
                "attention_mask": torch.tensor([[1] * len(x["input_ids"]) + [0] * (width - len(x["input_ids"]))
                                                for x in items]),
                "labels": torch.tensor([x["labels"] + [-100] * (width - len(x["labels"])) for x in items]),
                "pixel_values": vl.pixels(self.processor, [image.convert("RGB") for image in images])}


# ---------------------------------------------------------------- the model

def load_model(model_cfg: ModelConfig) -> tuple:
    """(LlavaForConditionalGeneration, LlavaProcessor) for a recipe's `model:`: assembled from model.vision_tower
    and the LM in name_or_path, or an assembled model (a vlm run comes back merged, embedded:tiny-vlm is built on
    first use)."""
    if model_cfg.vision_tower:
        from tunelab.families import causal_lm, clip

        lm, tokenizer = causal_lm.load_model(ModelConfig(**{**vars(model_cfg), "vision_tower": None}))
        clip_model, _, image_processor = clip.load_model(ModelConfig(name_or_path=model_cfg.vision_tower))
        return vl.assemble(lm, tokenizer, clip_model, image_processor)
    if checkpoints.is_family_run(model_cfg.name_or_path, "vlm", "a vision-language (vlm) run"):
        return load_run(model_cfg.name_or_path, merge=True)
    path = checkpoints.resolve(model_cfg.name_or_path)
    config = transformers.AutoConfig.from_pretrained(path)
    if config.model_type != "llava":
        raise UserError(f"model.name_or_path = {model_cfg.name_or_path!r}: a {config.model_type} model, not an assembled "
                        f"vision-language model; run vlm.pretrain first (it takes model.vision_tower and this LM)")
    return vl.load(path)


def prepare_weights(model, recipe: Recipe, stage: str):
    """Freeze what this stage keeps: pretrain trains the projector alone; sft the projector and the LM (a LoRA on
    its linear layers, or all of it). The vision tower never trains."""
    for name, param in model.named_parameters():
        param.requires_grad_(PROJECTOR in name or (stage == "sft" and "language_model" in name))
    if recipe.adapter.method != "lora":
        return model
    a = recipe.adapter
    wanted = "|".join(a.target_modules) if isinstance(a.target_modules, list) else \
        "|".join(sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                         if "language_model" in n and isinstance(m, torch.nn.Linear)}))
    config = LoraConfig(r=a.r, lora_alpha=a.alpha, lora_dropout=a.dropout, use_rslora=a.use_rslora,
                        target_modules=rf".*language_model.*\.({wanted})", modules_to_save=[PROJECTOR])
    return get_peft_model(model, config)


def prepare(recipe: Recipe, stage: str, args) -> Job:
    train, evals, report = read_data(recipe)
    transformers.set_seed(args.seed)  # the projector's initial weights
    model, processor = load_model(recipe.model)
    if recipe.data.max_length <= vl.image_token_count(processor):
        raise UserError(f"{recipe.origin('data.max_length')}: data.max_length = {recipe.data.max_length} leaves no room "
                        f"for text after the picture's {vl.image_token_count(processor)} tokens; raise it")
    adapters.check_model_fits(recipe, model)
    train_items, eval_items = (encode_records(processor, records, recipe.data.max_length, report, split)
                               for records, split in ((train, "train"), (evals, "eval")))
    model = prepare_weights(model, recipe, stage)
    return Job(model=model, train_dataset=train_items, eval_dataset=eval_items,
               evaluate=lambda trained, _: evaluate(trained, processor, recipe, evals),
               auto_class=AUTO_CLASS, trainer_cls=Trainer,
               trainer_kwargs={"data_collator": ImageChatCollator(processor)},
               processors=(processor, model.generation_config), report=report,
               metrics={"image_tokens": vl.image_token_count(processor)})


# ---------------------------------------------------------------- evaluation and runs

def evaluate(model, processor, recipe: Recipe, records: Records) -> dict:
    """Exact match (`accuracy`, after stripping spaces) and ROUGE of the generated last reply of each chat, per
    question kind too where the records say one (the built-in sets do), and five samples."""
    from tunelab.evaluation.rouge import rouge

    e = recipe.eval
    rows = records.rows[:e.max_samples] if e.max_samples else records.rows
    chats = [row["messages"][:max(i for i, m in enumerate(row["messages"]) if m["role"] == "assistant")]
             for row in rows]
    references = [row["messages"][len(chat)]["content"].strip() for row, chat in zip(rows, chats)]
    images = [row["image"] if not isinstance(row["image"], str) else load_image(row["image"]) for row in rows]
    kwargs = generation_kwargs(e.generate, processor.tokenizer)
    replies = []
    for start in range(0, len(rows), e.batch_size):
        replies += vl.answer(model, processor, chats[start:start + e.batch_size],
                             [im.convert("RGB") for im in images[start:start + e.batch_size]], kwargs)
    hits = [reply == reference for reply, reference in zip(replies, references)]
    out: dict = {"accuracy": sum(hits) / len(hits), "accuracy_n": len(hits)}
    kinds = sorted({row.get("kind") for row in rows if row.get("kind")})
    if kinds:
        out["accuracy_by_kind"] = {k: round(sum(h for h, row in zip(hits, rows) if row.get("kind") == k) /
                                            sum(row.get("kind") == k for row in rows), 4) for k in kinds}
    if "rouge" in e.metrics:
        out.update(rouge(replies, references, e.rouge_language, e.rouge_tokenizer))
    out["samples"] = [{"prompt": chat[-1]["content"], "reference": ref, "generated": reply}
                      for chat, ref, reply in list(zip(chats, references, replies))[:5]]
    return out


def load_run(run_dir: str | Path, merge: bool = False) -> tuple:
    """(model, processor) of a finished vlm run, in eval mode: its model/, or its base with the adapter."""
    run_dir = Path(run_dir)
    if (run_dir / "model").is_dir():
        model, processor = vl.load(run_dir / "model")
        return model.eval(), processor
    recipe = checkpoints.run_recipe(run_dir)
    base, _ = load_model(recipe.model)
    model = checkpoints.attach_adapter(base, run_dir, recipe.adapter.method, merge)
    processor = vl.load_processor(run_dir / "adapter")
    return model.eval(), processor


def base_model_of(run_dir: str | Path) -> tuple:
    recipe = checkpoints.run_recipe(run_dir)
    transformers.set_seed(recipe.train.get("seed", 0))  # a pretrain run's fresh projector
    model, processor = load_model(recipe.model)
    return model.eval(), processor


def evaluate_run(run_dir: Path, recipe: Recipe, stage: str, data: str | None, fmt: str | None,
                 baseline: bool) -> dict:
    if fmt and fmt not in FORMATS[stage]:
        raise UserError(f"--format {fmt}: a {recipe.recipe} run evaluates image_chat data")
    records = read_chats(data) if data else read_data(recipe)[1]
    results = {"model": evaluate(*load_run(run_dir), recipe, records)}
    if baseline:
        results["baseline"] = evaluate(*base_model_of(run_dir), recipe, records)
    return results


def generate(loaded: tuple, recipe: Recipe, prompts: list, settings: GenerateConfig, raw: bool) -> list[str]:
    """Replies to chats whose user message carries an "image" path (`tunelab generate RUN --image P --prompt Q`)."""
    if raw:
        raise UserError(f"generate: a {recipe.recipe} run answers chats about a picture; drop --raw")
    model, processor = loaded
    images = [load_image(next(m["image"] for m in chat if m.get("image"))) for chat in prompts]
    chats = [[{"role": m["role"], "content": m["content"]} for m in chat] for chat in prompts]
    return vl.answer(model, processor, chats, images, generation_kwargs(settings, processor.tokenizer))


def predict(run_dir: Path, recipe: Recipe, stage: str, request: PredictRequest) -> list[dict]:
    raise UserError(f"{run_dir}: a {recipe.recipe} run answers questions about pictures; use "
                    f"`tunelab generate {run_dir} --image PATH --prompt QUESTION`")
