"""Prefix tuning from scratch: freeze the whole model and learn, for every layer, the keys and values of a few
"virtual tokens" that every real token can attend to, as if each input began with a learned prompt.

Paper: Prefix-Tuning: Optimizing Continuous Prompts for Generation, https://arxiv.org/abs/2101.00190
peft source: https://github.com/huggingface/peft/blob/main/src/peft/tuners/prefix_tuning/model.py and
PeftModel.get_prompt in https://github.com/huggingface/peft/blob/main/src/peft/peft_model.py

Unlike a soft prompt, which learns input embeddings that the layers then process, the prefix is learned at
every layer directly: no layer computes it, so each layer's prefix is free to be whatever helps.

What is ours and what is transformers': the frozen model is a transformers causal LM of the Llama family
(Qwen2, Llama, Mistral), its weights and modules untouched; the prefix mechanism is ours. Transformers lets
a model swap its attention function (AttentionInterface); we register one that prepends this layer's prefix
keys and values to the real ones (after RoPE), widens the mask, and attends. Transformers hands the function
each layer's queries, keys and values, and forwards our `prefix_kv` keyword to it. (peft instead pre-fills
the model's KV cache with the prefix, as if the virtual tokens had been generated already.)

Shapes: B batch, T real tokens, P virtual tokens, L layers, nh query heads, nkv key/value heads, hs head size.
Masks are transformer.py's booleans, True where a query may see a key, hidden with -inf: no row is all hidden,
since every real token sees all P virtual ones.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import AttentionInterface

from tunelab.scratch.transformer import attention, causal_mask

ATTN_IMPLEMENTATION = "tunelab_prefix"


class PrefixEncoder(nn.Module):
    """The learned keys and values. One embedding row per virtual token holding its keys and values for every
    layer, laid out as peft lays them out (its prefix_projection=False), so peft's weights load."""

    def __init__(self, num_virtual_tokens: int, num_layers: int, num_kv_heads: int, head_dim: int):
        super().__init__()
        self.shape = (num_virtual_tokens, num_layers, 2, num_kv_heads, head_dim)
        self.embedding = nn.Embedding(num_virtual_tokens, num_layers * 2 * num_kv_heads * head_dim)

    def forward(self):
        kv = self.embedding.weight.view(self.shape)  # (P, L, 2, nkv, hs)
        return kv.permute(1, 2, 3, 0, 4)  # (L, 2, nkv, P, hs): per layer, keys then values


def prefix_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, prefix_kv=None,
                     **kwargs):
    """Attention with this layer's prefix in front. query (B, nh, T, hs); key, value (B, nkv, T, hs);
    attention_mask (B, 1, T, P + T), True where allowed; prefix_kv (L, 2, nkv, P, hs)."""
    # attention() scales by 1/sqrt(hs); a family that asks for another scale must fail here, not drift silently
    assert scaling is not None and math.isclose(scaling, query.size(-1) ** -0.5), f"unsupported scaling {scaling}"
    B = query.size(0)
    prefix_k, prefix_v = prefix_kv[module.layer_idx, :, None].expand(-1, B, -1, -1, -1)  # (B, nkv, P, hs) each
    key = torch.cat([prefix_k, key], dim=2)  # (B, nkv, P + T, hs)
    value = torch.cat([prefix_v, value], dim=2)  # (B, nkv, P + T, hs)
    # Grouped-query attention: each key/value head serves nh / nkv consecutive query heads.
    key = key.repeat_interleave(module.num_key_value_groups, dim=1)  # (B, nh, P + T, hs)
    value = value.repeat_interleave(module.num_key_value_groups, dim=1)  # (B, nh, P + T, hs)
    y = attention(query, key, value, attention_mask, dropout)  # (B, nh, T, hs)
    return y.transpose(1, 2), None  # (B, T, nh, hs), and no attention weights: what transformers expects back


AttentionInterface.register(ATTN_IMPLEMENTATION, prefix_attention)


class PrefixTuning(nn.Module):
    """A frozen transformers causal LM plus a trainable PrefixEncoder; forward takes what the model takes."""

    def __init__(self, model: nn.Module, num_virtual_tokens: int = 20):
        super().__init__()
        cfg = model.config
        self.model = model.requires_grad_(False)
        self.model.set_attn_implementation(ATTN_IMPLEMENTATION)
        hs = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.prefix_encoder = PrefixEncoder(num_virtual_tokens, cfg.num_hidden_layers, cfg.num_key_value_heads, hs)
        self.num_virtual_tokens = num_virtual_tokens

    def forward(self, input_ids, attention_mask=None, **kwargs):  # input_ids, attention_mask (B, T)
        B, T, P = *input_ids.shape, self.num_virtual_tokens
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        mask = attention_mask.bool()[:, None, None, :] & causal_mask(T, input_ids.device)  # (B, 1, T, T)
        # Every real token may see every virtual one: they come first, and are never padding.
        mask = torch.cat([mask.new_ones(B, 1, T, P), mask], dim=-1)  # (B, 1, T, P + T)
        # Positions continue after the virtual tokens, as in peft, where the cache counts them as already seen.
        # With RoPE this matters: prefix keys are never rotated, so a query's score against them depends on
        # the query's absolute position, not just on a distance.
        position_ids = torch.arange(P, P + T, device=input_ids.device)[None]  # (1, T)
        return self.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                          prefix_kv=self.prefix_encoder(), **kwargs)
