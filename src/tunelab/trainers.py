"""TRL's SFTTrainer, with the LM head run only where a token carries loss when training on the CPU.

TRL's fused LM head scores only the label positions where Triton runs (CUDA); elsewhere it projects every
position through the LM head (and computes entropy and top-1 agreement for its metrics). With assistant-only
loss most positions are prompt: SmolLM2's 49k-word head on 8 x 144 tokens took a quarter of a CPU step,
for replies of about 30 tokens. Here the model's own `logits_to_keep` (a tensor of sequence positions)
keeps the positions whose next token is a label in some row of the batch, and the loss is the same
token-weighted mean NLL TRL computes, over the same tokens. Only `compute_loss`, the Trainer's public
hook for this, is overridden; every case this does not cover goes to TRL's own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import Trainer
from trl import SFTTrainer


class SFTTrainerLabelPositions(SFTTrainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self._adalora(model):
            # AdaLoRA adds its orthogonality penalty to the loss the model computes from labels; TRL computes
            # its loss from the logits, which would drop the penalty. The Trainer's own takes the model's loss.
            return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        if return_outputs or not model.training or not self._plain_nll(model, inputs):
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        targets = inputs["labels"][:, 1:]  # position t predicts token t + 1
        keep = (targets != -100).any(dim=0).nonzero().squeeze(-1)  # (K,) positions some row takes loss after
        forward_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        logits = model(**forward_inputs, use_cache=False, logits_to_keep=keep).logits  # (B, K, V)
        nll = F.cross_entropy(logits.flatten(0, 1).float(), targets[:, keep].flatten(), ignore_index=-100,
                              reduction="sum")
        count = (targets != -100).sum() if num_items_in_batch is None else num_items_in_batch
        loss = nll / torch.as_tensor(count).clamp(min=1)
        # As TRL's and the Trainer's: num_items_in_batch counts every rank's tokens, and DDP averages gradients.
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        return loss

    def _adalora(self, model) -> bool:
        peft_config = getattr(self.accelerator.unwrap_model(model), "active_peft_config", None)
        return getattr(peft_config, "peft_type", None) == "ADALORA"

    def _plain_nll(self, model, inputs) -> bool:
        """The case handled here: plain next-token NLL, on the CPU, without virtual prompt tokens (which
        shift the positions) and without a loss TRL adds or changes (DFT, label smoothing, MoE aux loss)."""
        peft_config = getattr(self.accelerator.unwrap_model(model), "active_peft_config", None)
        return ("labels" in inputs and inputs["labels"].device.type == "cpu"
                and not getattr(peft_config, "is_prompt_learning", False)
                and self.args.loss_type == "nll" and self.label_smoother is None
                and self.compute_loss_func is None and not self.aux_loss_enabled)
