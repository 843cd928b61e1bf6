"""tunelab.scratch.mla against transformers' DeepSeek-V3: the attention module alone (low-rank q or a plain
q_proj, interleaved or half-split RoPE), a whole tiny model's logits, and the same logits through our latent
cache."""

from __future__ import annotations

import torch
import transformers
from transformers.models.deepseek_v3 import modeling_deepseek_v3 as hf_ds

from tunelab.parity import Check
from tunelab.parity.qwen2 import incremental_diff, left_padded_batch
from tunelab.scratch import mla


def hf_config(q_lora_rank: int | None = 16, rope_interleave: bool = True, **kwargs) -> transformers.DeepseekV3Config:
    """Every width different, so that a swapped one fails: nope 8, rope 4, value 6, latent 12, q latent 16.
    first_k_dense_replace = num_hidden_layers: dense MLPs only (MoE is moe.py's subject)."""
    return transformers.DeepseekV3Config(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, q_lora_rank=q_lora_rank, kv_lora_rank=12, qk_nope_head_dim=8, qk_rope_head_dim=4,
        v_head_dim=6, first_k_dense_replace=2, rope_interleave=rope_interleave, max_position_embeddings=64, **kwargs)


def redraw(module: torch.nn.Module) -> None:
    """Every parameter at random, norms included: HF's init leaves those at one (untested)."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.3)


def attention_diff() -> float:
    """DeepseekV3Attention alone, eager, both fed the cos/sin of transformers' DeepseekV3RotaryEmbedding and a
    causal mask, for the V3 layout (q latent, interleaved RoPE) and the V2-Lite one (plain q_proj, rope_interleave
    off). Our own cos/sin are in the model rows."""
    worst = 0.0
    for seed, (q_lora_rank, interleave) in enumerate(((16, True), (None, False))):
        torch.manual_seed(seed)
        cfg = hf_config(q_lora_rank, interleave, attn_implementation="eager")
        ref = hf_ds.DeepseekV3Attention(cfg, layer_idx=0).eval()
        redraw(ref)
        ours = mla.MultiHeadLatentAttention(mla.MlaConfig.from_hf(cfg), layer_idx=0)
        ours.load_state_dict(ref.state_dict(), strict=True)
        x = torch.randn(2, 9, 32)
        position_ids = torch.arange(9).expand(2, 9)
        cos, sin = hf_ds.DeepseekV3RotaryEmbedding(cfg)(x, position_ids)
        causal = torch.ones(9, 9, dtype=torch.bool).tril()[None, None]  # (1, 1, T, T)
        additive = torch.zeros(causal.shape).masked_fill(~causal, torch.finfo(torch.float32).min)
        with torch.no_grad():
            want, _ = ref(x, (cos, sin), additive)
            got = ours(x, cos, sin, causal)
        worst = max(worst, (got - want).abs().max().item())
    return worst


def tiny_models(seed: int = 0):
    torch.manual_seed(seed)
    hf = transformers.DeepseekV3ForCausalLM(hf_config()).eval()
    redraw(hf)
    return hf, mla.MlaForCausalLM.from_hf(hf)


def logits_diff() -> float:
    hf, ours = tiny_models()
    input_ids, attention_mask, position_ids = left_padded_batch()
    with torch.no_grad():
        ref = hf(input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
        got = ours(input_ids, attention_mask, position_ids)
    real = attention_mask.bool()
    return (got[real] - ref[real]).abs().max().item()


def latent_cache_diff() -> float:
    """Ours through the latent cache (only c_kv and the rope key are kept) against transformers without one."""
    hf, ours = tiny_models(seed=1)
    return incremental_diff(hf, ours, mla.LatentCache(len(ours.model.layers)))


CHECKS = [
    Check("mla attention, q latent + interleaved rope; plain q_proj + half-split rope",
          "transformers DeepseekV3Attention (eager)", attention_diff, 1e-5),
    Check("mla logits, left-padded", "transformers DeepseekV3ForCausalLM (dense layers)", logits_diff, 1e-5),
    Check("mla logits through the latent cache, left-padded", "transformers DeepseekV3ForCausalLM, one pass",
          latent_cache_diff, 1e-5),
]
