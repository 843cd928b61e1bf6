"""The PEFT config for each PEFT method, which recipe keys each method reads, and the checks that a method fits.

PEFT methods (a PeftModel wraps the base; the run saves `adapter/` with PEFT's own files):
- lora: low-rank updates B @ A on the chosen linear layers, scaled by alpha / r (Hu et al., 2021); options
  use_rslora (alpha / sqrt(r), Kalajdzievski 2023), init (gaussian, pissa, olora) and LoRA+ (loraplus_lr_ratio).
- qlora: LoRA on a base model frozen in 4-bit NF4 with double quantization (Dettmers et al., 2023).
- dora: LoRA whose update is split into a direction and a trained magnitude per output (Liu et al., 2024).
- adalora: LoRA in SVD form whose rank budget moves between layers by importance (Zhang et al., 2023).
- ia3: learned vectors that rescale keys, values and the FFN's activations (Liu et al., 2022).
- ln_tuning: only the norm layers train (Zhao et al., 2023).
- prefix: trained key/value vectors prepended in every attention layer (Li & Liang, 2021).
- prompt: trained embeddings of virtual tokens prepended to the input (Lester et al., 2021).
- ptuning: virtual-token embeddings produced by a small trained MLP encoder (Liu et al., 2021).
tunelab's own (tunelab.own_methods): bitfit, embedding, last_layers, bottleneck.
Whole model (the run saves `model/`): full, and gradual_unfreeze (full, unfrozen from the top down, ULMFiT).
"""

from __future__ import annotations

from peft import (AdaLoraConfig, IA3Config, LNTuningConfig, LoraConfig, PrefixTuningConfig, PromptEncoderConfig,
                  PromptTuningConfig, PromptTuningInit, TaskType)
from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING

from tunelab import own_methods
from tunelab.checkpoints import tokenizer_location
from tunelab.config import Recipe
from tunelab.errors import UserError

PROMPT_LEARNING = ("prefix", "prompt", "ptuning")
LORA_LIKE = ("lora", "qlora", "dora")
PEFT_METHODS = (*LORA_LIKE, "adalora", "ia3", "ln_tuning", *PROMPT_LEARNING)
WHOLE_MODEL = ("full", "gradual_unfreeze")
# Methods whose trained result folds into the base weights (`tunelab merge`); prompts and a bottleneck's
# non-linearity cannot.
MERGEABLE = (*LORA_LIKE, "adalora", "ia3", "ln_tuning", *own_methods.FOLDED)

_LORA_KEYS = ("r", "alpha", "dropout", "target_modules", "use_rslora", "init", "loraplus_lr_ratio")
# The adapter keys each method reads; a recipe that sets others gets them listed as unused (unused_keys).
KEYS = {**{m: _LORA_KEYS for m in LORA_LIKE}, "adalora": ("r", "alpha", "dropout", "target_modules"),
        "prefix": ("num_virtual_tokens",), "prompt": ("num_virtual_tokens", "prompt_init_text"),
        "ptuning": ("num_virtual_tokens", "encoder_hidden_size"), "last_layers": ("trainable_layers",),
        "bottleneck": ("bottleneck_size",), "gradual_unfreeze": ("unfreeze_epochs",)}
LORA_INIT = {"default": True, "gaussian": "gaussian", "pissa": "pissa", "olora": "olora"}


def check_method(recipe: Recipe) -> None:
    """Method/model combinations that cannot work, caught before any weight is loaded."""
    method, model, a = recipe.adapter.method, recipe.model, recipe.adapter
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
                        f"(PEFT does not align its virtual tokens with the tags); use any other method, prefix included")
    for key in ("r", "num_virtual_tokens", "trainable_layers", "bottleneck_size"):
        if getattr(a, key) < 1:
            raise UserError(f"{recipe.origin('adapter.' + key)}: adapter.{key} = {getattr(a, key)} should be >= 1")
    if a.unfreeze_epochs <= 0:
        raise UserError(f"{recipe.origin('adapter.unfreeze_epochs')}: adapter.unfreeze_epochs = {a.unfreeze_epochs} "
                        f"should be > 0 (the epochs over which the blocks unfreeze)")
    _check_lora_options(recipe)


def _check_lora_options(recipe: Recipe) -> None:
    a = recipe.adapter
    if a.method not in LORA_LIKE:
        return
    if a.loraplus_lr_ratio is not None and a.loraplus_lr_ratio <= 0:
        raise UserError(f"{recipe.origin('adapter.loraplus_lr_ratio')}: adapter.loraplus_lr_ratio = "
                        f"{a.loraplus_lr_ratio} should be > 0 (B's learning rate over A's; the paper uses 16)")
    if a.loraplus_lr_ratio is not None and recipe.recipe == "causal_lm.dpo":
        raise UserError(f"{recipe.origin('adapter.loraplus_lr_ratio')}: LoRA+ needs the trainer's "
                        f"optimizer_cls_and_kwargs, which TRL's DPOTrainer does not take; drop adapter.loraplus_lr_ratio")
    if a.init in ("pissa", "olora") and (a.method == "qlora" or recipe.model.quantization):
        raise UserError(f"{recipe.origin('adapter.init')}: adapter.init={a.init} rewrites the base weights, which a "
                        f"4-bit model cannot hold; use adapter.init=default or gaussian with qlora")


def unused_keys(recipe: Recipe) -> list[str]:
    """Adapter keys the recipe sets that its method does not read (a LoRA recipe switched to bitfit keeps r)."""
    reads = {"method", "freeze", *KEYS.get(recipe.adapter.method, ())}
    # A list's items have origins of their own ("adapter.target_modules[0]"): the list is the key.
    given = dict.fromkeys(path.removeprefix("adapter.").split("[")[0] for path in recipe.origins
                          if path.startswith("adapter."))
    return [f"adapter.{key}" for key in given if "." not in key and key not in reads]


def check_model_fits(recipe: Recipe, model) -> None:
    """Checks that need the loaded model's config."""
    config, method = model.config, recipe.adapter.method
    if method in (*LORA_LIKE, "adalora") and isinstance(recipe.adapter.target_modules, list):
        names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        missing = [m for m in recipe.adapter.target_modules if m not in names]
        if missing:
            raise UserError(f"{recipe.origin('adapter.target_modules')}: {config.model_type} has no module named "
                            f"{missing[0]!r} (it has e.g. {', '.join(sorted(n for n in names if 'proj' in n)[:8])})")
    if method == "ia3" and config.model_type not in TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING:
        raise UserError(f"{recipe.origin('adapter.method')}: PEFT does not know where IA3 goes in a "
                        f"{config.model_type} model (its keys, values and FFN); use lora or ln_tuning")
    own_methods.check_fits(recipe, model)


# tunelab task -> PEFT task type (which also decides what PEFT trains besides the adapter: a fresh head).
TASK_TYPES = {"causal_lm": TaskType.CAUSAL_LM, "classify": TaskType.SEQ_CLS, "tag": TaskType.TOKEN_CLS,
              "seq2seq": TaskType.SEQ_2_SEQ_LM}


def peft_config(recipe: Recipe, task: str, model):
    """The PEFT config of a PEFT method; None for the others."""
    a = recipe.adapter
    task_type = TASK_TYPES[task]
    # An encoder's fresh head is trained whole (PEFT's modules_to_save), so it must not get LoRA too;
    # all-linear would give it LoRA for token classification.
    heads = ["classifier", "score"] if task in ("classify", "tag") else None
    if a.method in LORA_LIKE:
        return LoraConfig(task_type=task_type, r=a.r, lora_alpha=a.alpha, lora_dropout=a.dropout,
                          target_modules=a.target_modules, exclude_modules=heads, use_dora=a.method == "dora",
                          use_rslora=a.use_rslora, init_lora_weights=LORA_INIT[a.init])
    if a.method == "adalora":
        # r is the average rank AdaLoRA ends with; it starts from 1.5 r (PEFT's own 12 -> 8). The real
        # schedule (total_step, tinit, tfinal) is set from the run's step count when training starts
        # (method_hooks.AdaLoraBudget); PEFT refuses a config without one, hence the placeholder.
        return AdaLoraConfig(task_type=task_type, init_r=max(a.r * 3 // 2, 1), target_r=a.r, lora_alpha=a.alpha,
                             lora_dropout=a.dropout, target_modules=a.target_modules, exclude_modules=heads,
                             total_step=1)
    if a.method == "ia3":
        return IA3Config(task_type=task_type)  # PEFT's per-architecture keys, values and FFN layers
    if a.method == "ln_tuning":
        return LNTuningConfig(task_type=task_type, target_modules=own_methods.norm_names(model))
    if a.method == "prefix":
        return PrefixTuningConfig(task_type=task_type, num_virtual_tokens=a.num_virtual_tokens)
    if a.method == "prompt":
        if a.prompt_init_text:
            return PromptTuningConfig(task_type=task_type, num_virtual_tokens=a.num_virtual_tokens,
                                      prompt_tuning_init=PromptTuningInit.TEXT, prompt_tuning_init_text=a.prompt_init_text,
                                      tokenizer_name_or_path=tokenizer_location(recipe.model))
        return PromptTuningConfig(task_type=task_type, num_virtual_tokens=a.num_virtual_tokens)
    if a.method == "ptuning":
        return PromptEncoderConfig(task_type=task_type, num_virtual_tokens=a.num_virtual_tokens,
                                   encoder_hidden_size=a.encoder_hidden_size)
    return None


def wrap(model, recipe: Recipe, task: str):
    """The model as the method trains it: wrapped by PEFT, or with tunelab's own method applied (the whole
    model, unchanged, for full and gradual_unfreeze)."""
    from peft import get_peft_model

    config = peft_config(recipe, task, model)
    return get_peft_model(model, config) if config is not None else own_methods.apply(model, recipe)
