"""BitFit from scratch: fine-tune only the bias terms of a model, and freeze everything else.

Paper: BitFit: Simple Parameter-efficient Fine-tuning for Transformer-based Masked Language-models,
https://arxiv.org/abs/2106.10199
peft has no BitFit; its nearest relative is BEFT (https://arxiv.org/abs/2509.15974), which freezes the biases
too and trains a delta added to each target Linear's output:
https://github.com/huggingface/peft/blob/main/src/peft/tuners/beft/layer.py (class Linear)

The biases are about 0.1% of BERT's parameters (the Linear layers' and the LayerNorms'), and the paper finds that
training them alone comes close to full fine-tuning on GLUE: fine-tuning, it argues, mostly exposes what the
pretrained model already knows. No new module, no merge: the trained biases are the model's own, so the result
loads and runs like the base model. A new task head (a classifier) is trained in full besides, as the paper does;
it is not part of the base model, so the caller unfreezes it.
"""

from __future__ import annotations

from torch import nn

BIASED = (nn.Linear, nn.LayerNorm)  # the paper's bias terms: those of BERT's Linear layers and LayerNorms


def apply_bitfit(model: nn.Module) -> list[str]:
    """Freeze every parameter of model except the biases of its Linear and LayerNorm layers; return the names of
    the parameters left trainable."""
    model.requires_grad_(False)
    for module in model.modules():
        if isinstance(module, BIASED) and module.bias is not None:
            module.bias.requires_grad_(True)
    return [name for name, parameter in model.named_parameters() if parameter.requires_grad]
