"""What some methods need from the trainer while it trains, through its public hooks (callbacks and the
optimizer factory): AdaLoRA's rank budget, gradual unfreezing's schedule, LoRA+'s two learning rates.

Each callback's `facts()` goes into the run's metrics.json under `train`.
"""

from __future__ import annotations

import sys

import torch
from peft.optimizers import create_loraplus_optimizer
from transformers import TrainerCallback

from tunelab import own_methods
from tunelab.adapters import LORA_LIKE
from tunelab.config import Recipe

ADAPTER = "default"  # the one adapter every tunelab run trains, under PEFT's default name


class AdaLoraBudget(TrainerCallback):
    """AdaLoRA moves rank between layers by importance, which PEFT computes from the gradients after each
    optimizer step (update_and_allocate, before they are zeroed). Its schedule is set from the run's real step
    count once the trainer knows it: the first 10% train at full rank (tinit), the last 20% at the final ranks
    (tfinal), the budget shrinks in between."""

    def __init__(self):
        self.schedule: dict = {}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        config = model.peft_config[ADAPTER]  # the object PEFT's rank allocator reads its schedule from
        config.total_step, config.tinit, config.tfinal = state.max_steps, state.max_steps // 10, state.max_steps // 5
        self.schedule = {"total_step": config.total_step, "tinit": config.tinit, "tfinal": config.tfinal,
                         "init_r": config.init_r, "target_r": config.target_r}

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        model.base_model.update_and_allocate(state.global_step)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        pattern = model.peft_config[ADAPTER].rank_pattern or {}
        self.schedule["final_rank"] = sum(int(sum(kept)) for kept in pattern.values()) if pattern else None

    def facts(self) -> dict:
        return {"adalora": self.schedule}


class GradualUnfreezing(TrainerCallback):
    """ULMFiT's gradual unfreezing (Howard & Ruder, 2018) as full fine-tuning: first the top block trains
    (with everything outside the blocks but the embeddings: the head, the final norm), then one more block
    down at even steps over the first `unfreeze_epochs` epochs, the embeddings last.

    The optimizer was built with every weight in it; a frozen weight gets no gradient, which the optimizer
    skips (no update, no weight decay, no moment), so unfreezing needs no new optimizer."""

    def __init__(self, unfreeze_epochs: float):
        self.unfreeze_epochs = unfreeze_epochs
        self.groups: list[list[torch.nn.Parameter]] = []
        self.names: list[str] = []
        self.at_step: list[int] = []
        self.log: list[dict] = []

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        blocks = own_methods.blocks(model)
        embedding = model.get_input_embeddings().weight
        groups = {name: [] for name in [*reversed(blocks), "embeddings"]}
        for name, param in model.named_parameters():
            owner = next((b for b in blocks if name.startswith(b + ".")), None)
            is_embedding = param is embedding or "embed" in name  # BERT's positions and segments go with its words
            groups["embeddings" if is_embedding else owner or blocks[-1]].append(param)
        self.names, self.groups = list(groups), list(groups.values())
        per_epoch = max(len(train_dataloader) // args.gradient_accumulation_steps, 1) if train_dataloader else 1
        span = min(round(self.unfreeze_epochs * per_epoch), state.max_steps)
        self.at_step = [i * span // len(self.groups) for i in range(len(self.groups))]
        for param in model.parameters():
            param.requires_grad_(False)
        self._unfreeze(state.global_step)

    def on_step_begin(self, args, state, control, **kwargs):
        self._unfreeze(state.global_step)

    def _unfreeze(self, step: int) -> None:
        for i, (name, params) in enumerate(zip(self.names, self.groups)):
            if self.at_step[i] <= step and not any(entry["group"] == name for entry in self.log):
                for param in params:
                    param.requires_grad_(True)
                self.log.append({"step": step, "group": name})
                print(f"gradual_unfreeze: step {step}: {name} trains" + (" (with the head and final norm)" * (i == 0)),
                      file=sys.stderr, flush=True)

    def facts(self) -> dict:
        return {"unfreeze_schedule": self.log}


class LoraPlusOptimizer:
    """transformers' optimizer-factory protocol (Trainer(optimizer_cls_and_kwargs=(factory, kwargs)) calls the
    factory, then calls what it returns with the model): PEFT's LoRA+ groups need the PEFT-wrapped model,
    which TRL builds inside the trainer."""

    def __call__(self):
        return self.build

    @staticmethod
    def build(model, **kwargs):
        return create_loraplus_optimizer(model, torch.optim.AdamW, **kwargs)


def callbacks(recipe: Recipe) -> list:
    method = recipe.adapter.method
    if method == "adalora":
        return [AdaLoraBudget()]
    if method == "gradual_unfreeze":
        return [GradualUnfreezing(recipe.adapter.unfreeze_epochs)]
    return []


def trainer_kwargs(recipe: Recipe, args) -> dict:
    a = recipe.adapter
    if a.loraplus_lr_ratio is None or a.method not in LORA_LIKE:
        return {}
    return {"optimizer_cls_and_kwargs": (LoraPlusOptimizer(), {
        "lr": args.learning_rate, "loraplus_lr_ratio": a.loraplus_lr_ratio, "weight_decay": args.weight_decay,
        "betas": (args.adam_beta1, args.adam_beta2), "eps": args.adam_epsilon})}
