"""SFTTrainerLabelPositions: the LM head only where a token carries loss gives TRL's loss and gradients."""

from __future__ import annotations

import pytest
import torch

from conftest import RECIPES

from tunelab import adapters
from tunelab.config import load_recipe
from tunelab.families import causal_lm
from tunelab.trainers import SFTTrainerLabelPositions

pytestmark = pytest.mark.recipe


def _trainer(tmp_path, method: str):
    """The tiny default's trainer; no LoRA dropout, so that two passes over a batch draw the same."""
    recipe = load_recipe(RECIPES / "sft_lora.yaml", [f"adapter.method={method}", "adapter.dropout=0", "train.max_steps=1"])
    args = causal_lm.build_args(recipe, "sft", tmp_path)
    model, tokenizer, splits = causal_lm.model_and_data(recipe, "sft", args.seed)
    return SFTTrainerLabelPositions(model=model, args=args, train_dataset=causal_lm.for_trainer(splits.train),
                                    processing_class=tokenizer, peft_config=adapters.peft_config(recipe, "causal_lm", model))


def _loss_and_grads(trainer, batch, ours: bool):
    model = trainer.model
    model.train()
    model.zero_grad()
    if ours:
        loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=None)
    else:  # TRL's own compute_loss, the one the subclass replaces
        loss = super(SFTTrainerLabelPositions, trainer).compute_loss(model, dict(batch), num_items_in_batch=None)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("method", ["lora", "full"])
def test_label_positions_only_gives_trls_loss_and_gradients(tmp_path, method):
    trainer = _trainer(tmp_path, method)
    batch = next(iter(trainer.get_train_dataloader()))
    labels = batch["labels"][:, 1:]
    kept = (labels != -100).any(dim=0).sum().item()
    assert 0 < kept < labels.shape[1]  # the batch has prompt positions the head can skip
    ours, our_grads = _loss_and_grads(trainer, batch, ours=True)
    trl, trl_grads = _loss_and_grads(trainer, batch, ours=False)
    torch.testing.assert_close(ours, trl, rtol=1e-5, atol=1e-6)
    assert our_grads.keys() == trl_grads.keys() and our_grads
    for name, grad in our_grads.items():
        torch.testing.assert_close(grad, trl_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_prompt_learning_goes_to_trls_own_loss(tmp_path):
    """Virtual tokens shift every position: a prompt-tuned model keeps TRL's loss."""
    trainer = _trainer(tmp_path, "prompt")
    batch = next(iter(trainer.get_train_dataloader()))
    assert not trainer._plain_nll(trainer.model, batch)


def test_adalora_trains_on_the_models_loss_with_its_orthogonality_penalty(tmp_path):
    """TRL computes its loss from the logits, which drops the penalty AdaLoRA adds to the model's own loss:
    on the same batch, the loss tunelab trains on is TRL's plus that penalty."""
    trainer = _trainer(tmp_path, "adalora")
    batch = next(iter(trainer.get_train_dataloader()))
    loss = trainer.compute_loss(trainer.model, dict(batch))
    trl = super(SFTTrainerLabelPositions, trainer).compute_loss(trainer.model, dict(batch))
    penalty = trainer.model.peft_config["default"].orth_reg_weight
    assert penalty > 0 and loss > trl + 1e-3
