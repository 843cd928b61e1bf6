"""The PEFT config for each method (None for full fine-tuning), and the checks that a method fits a model.

- lora: low-rank updates B @ A on the chosen linear layers, scaled by alpha / r (Hu et al., 2021).
- qlora: LoRA on a base model frozen in 4-bit NF4 with double quantization (Dettmers et al., 2023).
- prefix: trained key/value vectors prepended in every attention layer (Li & Liang, 2021).
- prompt: trained embeddings of virtual tokens prepended to the input (Lester et al., 2021).
- ptuning: virtual-token embeddings produced by a small trained MLP encoder (Liu et al., 2021).
- full: every weight is trained; the run saves a whole model.
"""

from __future__ import annotations

from peft import (LoraConfig, PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig,
                  PromptTuningInit, TaskType)

from tunelab.config import Recipe
from tunelab.checkpoints import tokenizer_location
from tunelab.errors import UserError

PROMPT_LEARNING = ("prefix", "prompt", "ptuning")


def check_method(recipe: Recipe) -> None:
    """Method/model combinations that cannot work, caught before any weight is loaded."""
    method, model = recipe.adapter.method, recipe.model
    if (method == "qlora" or model.quantization) and not recipe.recipe.startswith("causal_lm."):
        raise UserError(f"{recipe.origin('adapter.method')}: 4-bit loading (qlora, model.quantization) is set up for "
                        f"causal LMs only; use lora (a small encoder fits in memory unquantized)")
    if method == "qlora" and model.quantization is None:
        model.quantization = "nf4"
    if model.quantization and method not in ("qlora", "lora"):
        raise UserError(f"{recipe.origin('adapter.method')}: adapter.method={method} cannot train a 4-bit model "
                        f"(model.quantization={model.quantization}); use qlora")
    if model.scratch is not None and not recipe.recipe.endswith(".pretrain"):
        raise UserError(f"{recipe.origin('model.scratch')}: model.scratch builds a model to pretrain; fine-tune a "
                        f"pretrained checkpoint or run instead (model.name_or_path)")
    if model.scratch is not None and method != "full":
        raise UserError(f"{recipe.origin('adapter.method')}: a model built from scratch (model.scratch) has no "
                        f"pretrained weights to adapt; use adapter.method=full")
    if recipe.recipe.endswith(".pretrain") and method in PROMPT_LEARNING:
        raise UserError(f"{recipe.origin('adapter.method')}: adapter.method={method} does not fit pretraining; "
                        f"use full or lora")
    if recipe.recipe == "encoder.tag" and method in ("prompt", "ptuning"):
        # PEFT prepends the virtual tokens to the inputs but not to the labels of token classification
        raise UserError(f"{recipe.origin('adapter.method')}: adapter.method={method} does not fit token tagging "
                        f"(PEFT does not align its virtual tokens with the tags); use lora, prefix or full")
    if recipe.adapter.r < 1 or recipe.adapter.num_virtual_tokens < 1:
        raise UserError(f"{recipe.origin('adapter')}: adapter.r and adapter.num_virtual_tokens must be >= 1")


def check_model_fits(recipe: Recipe, model) -> None:
    """Checks that need the loaded model's config."""
    config = model.config
    if recipe.adapter.method in ("lora", "qlora") and isinstance(recipe.adapter.target_modules, list):
        names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        missing = [m for m in recipe.adapter.target_modules if m not in names]
        if missing:
            raise UserError(f"{recipe.origin('adapter.target_modules')}: {config.model_type} has no module named "
                            f"{missing[0]!r} (it has e.g. {', '.join(sorted(n for n in names if 'proj' in n)[:8])})")


# tunelab task -> PEFT task type (which also decides what PEFT trains besides the adapter: a fresh head).
TASK_TYPES = {"causal_lm": TaskType.CAUSAL_LM, "classify": TaskType.SEQ_CLS, "tag": TaskType.TOKEN_CLS,
              "seq2seq": TaskType.SEQ_2_SEQ_LM}


def peft_config(recipe: Recipe, task: str = "causal_lm"):
    a = recipe.adapter
    task_type = TASK_TYPES[task]
    if a.method == "full":
        return None
    if a.method in ("lora", "qlora"):
        # An encoder's fresh head is trained whole (PEFT's modules_to_save), so it must not get LoRA too;
        # all-linear would give it LoRA for token classification.
        heads = ["classifier", "score"] if task in ("classify", "tag") else None
        return LoraConfig(task_type=task_type, r=a.r, lora_alpha=a.alpha, lora_dropout=a.dropout,
                          target_modules=a.target_modules, exclude_modules=heads)
    if a.method == "prefix":
        return PrefixTuningConfig(task_type=task_type, num_virtual_tokens=a.num_virtual_tokens)
    if a.method == "prompt":
        if a.prompt_init_text:
            return PromptTuningConfig(task_type=task_type, num_virtual_tokens=a.num_virtual_tokens,
                                      prompt_tuning_init=PromptTuningInit.TEXT, prompt_tuning_init_text=a.prompt_init_text,
                                      tokenizer_name_or_path=tokenizer_location(recipe.model))
        return PromptTuningConfig(task_type=task_type, num_virtual_tokens=a.num_virtual_tokens)
    return PromptEncoderConfig(task_type=task_type, num_virtual_tokens=a.num_virtual_tokens,
                               encoder_hidden_size=a.encoder_hidden_size)
