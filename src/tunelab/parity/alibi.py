"""tunelab.scratch.alibi against transformers' BLOOM: the ALiBi slopes (power-of-two head counts and the
interleaving rule for the others), the bias as the attention weights see it, and a whole BLOOM's logits."""

from __future__ import annotations

import torch
import transformers
from transformers.models.bloom import modeling_bloom as hf_bloom

from tunelab.parity import Check
from tunelab.scratch import alibi


def slopes_diff() -> float:
    """build_alibi_tensor over an all-ones mask holds slope * key position: position 1 gives the slope."""
    worst = 0.0
    for n_head in (8, 6, 12, 16, 5):
        ref = hf_bloom.build_alibi_tensor(torch.ones(1, 2), n_head, torch.float32)[:, 0, 1]  # (nh,)
        worst = max(worst, (alibi.alibi_slopes(n_head) - ref).abs().max().item())
    return worst


def bias_softmax_diff() -> float:
    """The same random scores plus our bias or BLOOM's, under the causal and padding mask, through the softmax,
    on a left-padded batch: the biases themselves differ by a constant per query row (see alibi_bias)."""
    torch.manual_seed(0)
    n_head, T = 6, 10
    attention_mask = torch.ones(3, T, dtype=torch.long)
    attention_mask[1, :3] = 0
    attention_mask[2, :7] = 0
    scores = torch.randn(3, n_head, T, T)
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    ours = scores + alibi.alibi_bias(alibi.alibi_slopes(n_head), positions)  # (B, nh, T, T)
    ref = scores + hf_bloom.build_alibi_tensor(attention_mask, n_head, torch.float32).view(3, n_head, 1, T)
    mask = torch.ones(T, T, dtype=torch.bool).tril() & attention_mask[:, None, None, :].bool()  # (B, 1, T, T)
    probs = [s.masked_fill(~mask, torch.finfo(s.dtype).min).softmax(dim=-1) for s in (ours, ref)]
    real = attention_mask.bool()  # padded query rows see no key: meaningless on both sides
    return (probs[0].transpose(1, 2)[real] - probs[1].transpose(1, 2)[real]).abs().max().item()


def logits_diff() -> float:
    """6 heads (the non-power-of-two rule), left-padded batch, every parameter redrawn (HF's init leaves
    biases at zero and LayerNorms at one); real tokens only."""
    torch.manual_seed(0)
    cfg = transformers.BloomConfig(vocab_size=96, hidden_size=48, n_layer=2, n_head=6)
    hf = transformers.BloomForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0.0, 0.3)
    ours = alibi.BloomForCausalLM.from_hf(hf)
    input_ids = torch.randint(0, 96, (3, 12))
    attention_mask = torch.ones(3, 12, dtype=torch.long)
    attention_mask[1, :4] = 0
    attention_mask[2, :9] = 0
    with torch.no_grad():
        ref = hf(input_ids, attention_mask=attention_mask).logits
        got = ours(input_ids, attention_mask)
    real = attention_mask.bool()
    return (got[real] - ref[real]).abs().max().item()


CHECKS = [
    Check("alibi slopes, 8 6 12 16 5 heads", "transformers bloom build_alibi_tensor", slopes_diff, 1e-7),
    Check("alibi bias through softmax, left-padded", "transformers bloom build_alibi_tensor", bias_softmax_diff, 1e-6),
    Check("alibi bloom logits, 6 heads, left-padded", "transformers BloomForCausalLM", logits_diff, 1e-5),
]
