"""Causal LM recipes for any decoder-only AutoModelForCausalLM: pretrain, sft (TRL SFTTrainer), dpo (TRL DPOTrainer).

The trainers do the work; this module only chooses their arguments, hands them data in TRL's shapes,
and writes the run directory. Everything that can be wrong with the input is checked before the run
directory is created.
"""

from __future__ import annotations

import time
from pathlib import Path

import transformers
from jinja2 import TemplateError
from trl import DPOConfig, DPOTrainer, SFTConfig

from tunelab import adapters, models, precision, rundir
from tunelab.config import Recipe, to_dict, trainer_args
from tunelab.data.chat import TemplateNotUsable, check_replies, render
from tunelab.data.loading import apply_length_limit, load_dataset, load_splits
from tunelab.errors import UserError
from tunelab.evaluation.causal_lm import evaluate
from tunelab.evaluation.generation import check_generate
from tunelab.evaluation.perplexity import loss_tokens
from tunelab.models import base_model_of, load_run  # noqa: F401  (this family's run loaders)
from tunelab.models import set_stop_tokens
from tunelab.families.sft_trainer import SFTTrainerLabelPositions

FORMATS = {
    "pretrain": ("text",),
    "sft": ("messages", "alpaca", "sharegpt", "prompt_completion", "text"),
    "dpo": ("preference",),
}
# TRL defaults to bf16 and gradient checkpointing. tunelab picks bf16 by the machine and the model's size
# (train.bf16: auto, tunelab.precision), and checkpoints no activations: it recomputes the forward pass.
TRAIN_DEFAULTS = {"activation_checkpointing": False, "logging_steps": 5, "save_steps": 200}
# Pad to the longest in a batch of similar lengths: measured faster on the CPU than padding-free packing
# (README, "Speed"). Measured for SFT only, so DPO keeps the Trainer's default (random) order.
LENGTH_GROUPING = {"train_sampling_strategy": "group_by_length"}
_NO_LIMIT = 10**9


def _record_length(tokenizer, row: dict) -> int:
    """Untruncated token count, so overlong records can be counted (or dropped) before TRL truncates them."""
    if "input_ids" in row:
        return len(row["input_ids"])
    if "rejected" in row:  # a preference pair is as long as its longer side
        return max(len(loss_tokens(tokenizer, {"prompt": row["prompt"], "chosen": row[k]}, _NO_LIMIT)[0])
                   for k in ("chosen", "rejected"))
    return len(loss_tokens(tokenizer, row, _NO_LIMIT)[0])


def _sft_loss_args(recipe: Recipe) -> dict:
    """Which tokens carry loss. Conversations come tokenized with their masks (tokenize_conversations);
    last_assistant turned messages into prompt/completion (data.formats), whose completion TRL trains."""
    if recipe.data.loss_on == "all":
        return {"completion_only_loss": False}
    return {}


def tokenize_conversations(ds, tokenizer, loss_on: str, where: list[str], model_name: str):
    """Add input_ids and assistant_masks to conversation records, with data.chat's masks (the same that
    evaluation scores). TRL's SFTTrainer builds its labels from a tokenized data set's assistant_masks; left
    to itself it would need a template TRL knows or one with {% generation %} markers. `where` names each
    record's file and line for an error."""
    if "messages" not in ds.column_names:
        return ds

    def tokenize(row, index):
        at = where[index]
        try:
            ids, mask = loss_tokens(tokenizer, row, _NO_LIMIT, loss_on)
        except TemplateError as e:
            raise UserError(f"{at}: the chat template of {model_name} cannot render this conversation: {e}") from None
        except TemplateNotUsable as e:
            raise UserError(f"{at}: model {model_name}: {e}") from None
        tools = [m["content"] for m in row["messages"] if m["role"] == "tool"]
        if tools and not all(t in render(tokenizer, row["messages"]) for t in tools):
            raise UserError(f"{at}: the chat template of {model_name} leaves tool messages out; use a template "
                            f"that renders role 'tool' (model.chat_template: chatml, or a .jinja file)")
        return {"input_ids": ids, "assistant_masks": mask}

    return ds.map(tokenize, with_indices=True)


def for_trainer(ds):
    """What the trainer gets: the tokens and masks of tokenized conversations, other records as they are."""
    return ds.select_columns(["input_ids", "assistant_masks"]) if "input_ids" in ds.column_names else ds


def resolve_bf16(recipe: Recipe) -> str | None:
    """Turn `train.bf16: auto` (also the default when the key is left out) into true or false in the recipe;
    the reason, or None where the recipe chose."""
    if recipe.train.get("bf16", "auto") != "auto":
        return None
    recipe.train["bf16"], why = precision.choose_bf16(models.parameter_count(recipe.model))
    return why


def build_args(recipe: Recipe, stage: str, output_dir: Path):
    resolve_bf16(recipe)
    defaults = rundir.trainer_defaults(**TRAIN_DEFAULTS)
    if "gradient_checkpointing" in recipe.train:  # the deprecated name still works if a user writes it
        defaults.pop("activation_checkpointing")
    if stage == "dpo":
        return trainer_args(DPOConfig, recipe, defaults, output_dir=str(output_dir),
                            max_length=recipe.data.max_length)
    return trainer_args(SFTConfig, recipe, {**defaults, **LENGTH_GROUPING}, output_dir=str(output_dir),
                        max_length=recipe.data.max_length, **(_sft_loss_args(recipe) if stage == "sft" else {}))


def model_and_data(recipe: Recipe, stage: str, seed: int):
    """(model, tokenizer, splits) for a run of this stage, overlong records counted (or dropped); `tunelab
    train` and `tunelab bench` both start here."""
    splits = load_splits(recipe, FORMATS[stage])
    # The Trainer seeds only in its own __init__, after a scratch model and TRL's PEFT wrapping have drawn
    # their initial weights: seed first, so the same recipe builds the same model.
    transformers.set_seed(seed)
    if recipe.model.scratch is not None:
        model, tokenizer = models.scratch_model(recipe.model, (r["text"] for r in splits.train))
    else:
        model, tokenizer = models.load_causal_lm(recipe.model)
    adapters.check_model_fits(recipe, model)
    if stage == "sft" and recipe.data.loss_on == "assistant" and "messages" in splits.train.column_names:
        check_replies(tokenizer, recipe.model.name_or_path)
    for name in ("train", "eval"):
        ds = getattr(splits, name)
        if stage == "sft":
            ds = tokenize_conversations(ds, tokenizer, recipe.data.loss_on, splits.where[name],
                                        recipe.model.name_or_path)
        lengths = [_record_length(tokenizer, row) for row in ds]
        setattr(splits, name, apply_length_limit(ds, lengths, recipe.data, name, splits.report))
    return model, tokenizer, splits


def train(recipe: Recipe, stage: str, out: Path, resume: bool = False, overwrite: bool = False) -> dict:
    started = time.time()
    adapters.check_method(recipe)
    check_generate(recipe.eval.generate)
    staging = rundir.partial_path(out)
    bf16_choice = resolve_bf16(recipe)
    args = build_args(recipe, stage, staging)
    rundir.check_free(out, resume, overwrite)
    model, tokenizer, splits = model_and_data(recipe, stage, args.seed)

    staging = rundir.stage(out, resume, overwrite, args.process_index == 0)
    log_path = staging / "train_log.jsonl"
    callbacks = [rundir.TrainLogCallback(log_path), rundir.RankReportCallback()]
    peft_config = adapters.peft_config(recipe)
    trainer_cls = DPOTrainer if stage == "dpo" else SFTTrainerLabelPositions
    eval_dataset = splits.eval if args.eval_strategy != "no" else None
    set_stop_tokens(model, tokenizer)
    trainer = trainer_cls(model=model, args=args, train_dataset=for_trainer(splits.train),
                          eval_dataset=for_trainer(eval_dataset) if eval_dataset is not None else None,
                          processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks)
    checkpoint = rundir.last_checkpoint(staging) if resume else None
    result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer_eval = trainer.evaluate(splits.eval) if stage == "dpo" else {}  # collective: every rank calls it
    if not trainer.is_world_process_zero():
        return {}

    saved = staging / ("model" if recipe.adapter.method == "full" else "adapter")
    trainer.save_model(str(saved))
    tokenizer.save_pretrained(str(saved))
    trainer.model.generation_config.save_pretrained(str(saved))  # an adapter's too, so its end of turn is kept
    scores = {**evaluate(trainer.model, tokenizer, recipe, splits.eval.to_list()),
              **{k.removeprefix("eval_"): v for k, v in trainer_eval.items() if "rewards" in k or "logps" in k}}
    metrics = rundir.run_metrics(recipe, trainer, result, scores, splits.report, started,
                                 chat_template=getattr(tokenizer, "tunelab_chat_template", "own"),
                                 precision={"bf16": args.bf16, "why": bf16_choice or "set by the recipe (train.bf16)"})
    rundir.write_run(staging, out, to_dict(recipe), metrics, "AutoModelForCausalLM")
    return metrics


def evaluate_run(run_dir: Path, recipe: Recipe, stage: str, data: str | None, fmt: str | None,
                 baseline: bool) -> dict:
    """{"model": metrics, "baseline": metrics of the base model (with --baseline)} on the eval split or `data`."""
    if data:
        rows = load_dataset(data, recipe.data, fmt).to_list()
    else:
        rows = load_splits(recipe, FORMATS[stage]).eval.to_list()
    model, tokenizer = load_run(run_dir)
    results = {"model": evaluate(model, tokenizer, recipe, rows)}
    if baseline:
        base, base_tokenizer = base_model_of(run_dir)
        results["baseline"] = evaluate(base, base_tokenizer, recipe, rows)
    for sample in results["model"].get("samples", [])[:3]:
        print(f"  Q: {sample['prompt']}\n  A: {sample['generated']}   (reference: {sample['reference']})")
    return results
