"""Multi-head latent attention (MLA) from scratch, DeepSeek-V2/V3's answer to the KV cache: instead of keys
and values, each token caches one small latent vector (plus one shared rotary key), from which every head's
keys and values are re-expanded.

Paper: DeepSeek-V2, https://arxiv.org/abs/2405.04434 (section 2.1), used unchanged in DeepSeek-V3,
https://arxiv.org/abs/2412.19437. HF source:
https://github.com/huggingface/transformers/blob/main/src/transformers/models/deepseek_v3/modeling_deepseek_v3.py

Per token and head, q and k have two parts: a "nope" part (no position) that comes out of the low-rank
latent, and a "rope" part that carries RoPE. Rotating the keys made from the latent would put a
position-dependent matrix between the latent and its up-projection: kv_b_proj's key half could no longer be
folded into the query (the trick that lets inference attend in the latent space), and every step would
re-expand and rotate every cached key. So the position lives in a separate, small rope key shared by all
heads (decoupled RoPE).

Parameter names are those of transformers' DeepseekV3ForCausalLM, so its state_dict loads with strict=True.
The model here has dense SwiGLU MLPs only (DeepSeek-V3's first `first_k_dense_replace` layers); its MoE
layers are the subject of moe.py. Shapes: B batch, T new tokens, S tokens attended to (cached + new),
C hidden size, nh heads, dn / dr / dv the nope, rope and value head sizes, r_q / r_kv the latent ranks.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from tunelab.scratch.qwen2 import Qwen2MLP, RMSNorm, RotaryEmbedding, apply_rope, attention_mask_4d, default_inv_freq


@dataclass
class MlaConfig:
    # Defaults: DeepSeek-V3 (671B). Field names match transformers' DeepseekV3Config.
    vocab_size: int = 129280
    hidden_size: int = 7168
    intermediate_size: int = 18432
    num_hidden_layers: int = 61
    num_attention_heads: int = 128
    q_lora_rank: int | None = 1536  # None: a plain q_proj (DeepSeek-V2-Lite)
    kv_lora_rank: int = 512
    qk_nope_head_dim: int = 128
    qk_rope_head_dim: int = 64
    v_head_dim: int = 128
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_interleave: bool = True
    tie_word_embeddings: bool = False

    @property
    def softmax_scale(self) -> float:
        # q.k runs over nope + rope features (192 in V3), so that is the length to normalise by. (The released
        # V3 extends its context with YaRN, which also multiplies this by mscale^2; from_hf refuses YaRN.)
        return (self.qk_nope_head_dim + self.qk_rope_head_dim) ** -0.5

    @classmethod
    def from_hf(cls, hf_config) -> MlaConfig:
        for name, value, ours in (("rope_type", hf_config.rope_parameters["rope_type"], "default"),
                                  ("num_key_value_heads", hf_config.num_key_value_heads, hf_config.num_attention_heads),
                                  ("attention_bias", hf_config.attention_bias, False),
                                  ("hidden_act", hf_config.hidden_act, "silu")):
            if value != ours:  # refuse, rather than return silently different logits
                raise ValueError(f"scratch MLA implements {name}={ours!r} only; this config has {value!r}")
        if hf_config.first_k_dense_replace < hf_config.num_hidden_layers:
            raise ValueError(f"scratch MLA has dense MLPs only; this config has MoE layers from layer "
                             f"{hf_config.first_k_dense_replace} (first_k_dense_replace)")
        values = {f.name: getattr(hf_config, f.name) for f in fields(cls) if f.name != "rope_theta"}
        return cls(**values, rope_theta=hf_config.rope_parameters["rope_theta"])


def kv_cache_floats_per_token(cfg: MlaConfig) -> dict[str, int]:
    """Numbers cached per token and layer. MLA: the latent c_kv and the shared rope key. Standard multi-head
    attention with the same heads: every head's key (nope + rope) and value. DeepSeek-V3:
    MLA 512 + 64 = 576; MHA 128 * (128 + 64) + 128 * 128 = 40960, 71 times as many."""
    return {"mla": cfg.kv_lora_rank + cfg.qk_rope_head_dim,
            "mha": cfg.num_attention_heads * (cfg.qk_nope_head_dim + cfg.qk_rope_head_dim + cfg.v_head_dim)}


class LatentCache:
    """What MLA keeps of the tokens seen so far, per layer: c_kv (B, S, r_kv) after its norm, and the rope key
    (B, 1, S, dr) already rotated. Keys and values are re-expanded from c_kv at every step. (Inference
    engines avoid even that by folding kv_b_proj's key half into the query and its value half into o_proj,
    attending in the latent space directly; the maths is the same.)"""

    def __init__(self, num_layers: int):
        self.c_kv: list = [None] * num_layers
        self.k_rope: list = [None] * num_layers

    def seq_len(self) -> int:
        return 0 if self.c_kv[0] is None else self.c_kv[0].shape[1]

    def update(self, layer: int, c_kv, k_rope):  # (B, T, r_kv), (B, 1, T, dr) -> all so far, S instead of T
        if self.c_kv[layer] is not None:
            c_kv = torch.cat((self.c_kv[layer], c_kv), dim=1)
            k_rope = torch.cat((self.k_rope[layer], k_rope), dim=2)
        self.c_kv[layer], self.k_rope[layer] = c_kv, k_rope
        return c_kv, k_rope


def apply_rope_interleaved(x, cos, sin):  # x (B, n, T, dr); cos, sin (B, T, dr) as RotaryEmbedding returns them
    """RoPE as the paper writes it and DeepSeek's checkpoints are laid out: feature 2i pairs with 2i + 1
    (qwen2.py's rotate_half pairs i with i + dr/2). The output stays interleaved; transformers returns the
    rotated pairs as [all evens, all odds] instead, a permutation applied to q and k alike, so q.k is the same."""
    half = cos.shape[-1] // 2  # cos holds each pair's angle twice (qwen2.py's layout): one copy is enough
    cos, sin = cos[..., :half, None].to(x.dtype), sin[..., :half, None].to(x.dtype)  # (B, T, dr/2, 1)
    pairs = x.unflatten(-1, (-1, 2))  # (B, n, T, dr/2, 2)
    x1, x2 = pairs[..., :1], pairs[..., 1:]  # (B, n, T, dr/2, 1) each
    rotated = torch.cat((x1 * cos[:, None] - x2 * sin[:, None], x2 * cos[:, None] + x1 * sin[:, None]), dim=-1)
    return rotated.flatten(-2)  # (B, n, T, dr)


class MultiHeadLatentAttention(nn.Module):
    def __init__(self, cfg: MlaConfig, layer_idx: int):
        super().__init__()
        self.layer_idx, self.cfg = layer_idx, cfg
        nh, dn, dr, dv = cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
        if cfg.q_lora_rank is None:
            self.q_proj = nn.Linear(cfg.hidden_size, nh * (dn + dr), bias=False)
        else:  # queries are not cached; the low rank only saves parameters and activation memory in training
            self.q_a_proj = nn.Linear(cfg.hidden_size, cfg.q_lora_rank, bias=False)
            self.q_a_layernorm = RMSNorm(cfg.q_lora_rank, eps=1e-6)  # transformers' default eps, not rms_norm_eps
            self.q_b_proj = nn.Linear(cfg.q_lora_rank, nh * (dn + dr), bias=False)
        # one projection down to the latent and the rope key together ("with_mqa": that key is shared, as in MQA)
        self.kv_a_proj_with_mqa = nn.Linear(cfg.hidden_size, cfg.kv_lora_rank + dr, bias=False)
        self.kv_a_layernorm = RMSNorm(cfg.kv_lora_rank, eps=1e-6)
        self.kv_b_proj = nn.Linear(cfg.kv_lora_rank, nh * (dn + dv), bias=False)  # latent up to keys and values
        self.o_proj = nn.Linear(nh * dv, cfg.hidden_size, bias=False)
        self.rope = apply_rope_interleaved if cfg.rope_interleave else apply_rope

    def forward(self, x, cos, sin, mask, cache: LatentCache | None = None):
        B, T, C = x.shape
        cfg = self.cfg
        nh, dn, dr, dv = cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
        if cfg.q_lora_rank is None:
            q = self.q_proj(x)  # (B, T, nh*(dn+dr))
        else:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))  # C -> r_q -> nh*(dn+dr)
        q_nope, q_rope = q.view(B, T, nh, dn + dr).transpose(1, 2).split([dn, dr], dim=-1)  # (B, nh, T, dn|dr)
        q_rope = self.rope(q_rope, cos, sin)

        c_kv, k_rope = self.kv_a_proj_with_mqa(x).split([cfg.kv_lora_rank, dr], dim=-1)  # (B, T, r_kv), (B, T, dr)
        c_kv = self.kv_a_layernorm(c_kv)  # (B, T, r_kv)
        k_rope = self.rope(k_rope[:, None], cos, sin)  # (B, 1, T, dr): one rope key for all heads
        if cache is not None:  # r_kv + dr numbers per token, not nh keys and nh values (kv_cache_floats_per_token)
            c_kv, k_rope = cache.update(self.layer_idx, c_kv, k_rope)  # (B, S, r_kv), (B, 1, S, dr)
        S = c_kv.shape[1]

        kv = self.kv_b_proj(c_kv).view(B, S, nh, dn + dv).transpose(1, 2)  # (B, nh, S, dn+dv)
        k_nope, v = kv.split([dn, dv], dim=-1)  # (B, nh, S, dn), (B, nh, S, dv)
        k = torch.cat((k_nope, k_rope.expand(B, nh, S, dr)), dim=-1)  # (B, nh, S, dn+dr)
        q = torch.cat((q_nope, q_rope), dim=-1)  # (B, nh, T, dn+dr)
        att = (q @ k.transpose(-2, -1)) * cfg.softmax_scale  # (B, nh, T, S)
        att = att.masked_fill(~mask, torch.finfo(att.dtype).min).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, nh * dv)  # (B, T, nh*dv): dv need not be dn + dr
        return self.o_proj(y)


class MlaDecoderLayer(nn.Module):
    def __init__(self, cfg: MlaConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = MultiHeadLatentAttention(cfg, layer_idx)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = Qwen2MLP(cfg)  # the same SwiGLU: gate_proj, up_proj, down_proj

    def forward(self, x, cos, sin, mask, cache):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class MlaModel(nn.Module):
    def __init__(self, cfg: MlaConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(MlaDecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        # RoPE over the dr rope features only
        self.rotary_emb = RotaryEmbedding(cfg, default_inv_freq(cfg.qk_rope_head_dim, cfg.rope_theta))

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache: LatentCache | None = None):
        B, T = input_ids.shape
        past = cache.seq_len() if cache is not None else 0
        if position_ids is None:
            position_ids = (past + torch.arange(T, device=input_ids.device)).expand(B, T)  # (B, T)
        cos, sin = self.rotary_emb(position_ids)  # (B, T, dr) each
        mask = attention_mask_4d(T, past, attention_mask, input_ids.device)  # (B or 1, 1, T, S)
        x = self.embed_tokens(input_ids)  # (B, T, C)
        for layer in self.layers:
            x = layer(x, cos, sin, mask, cache)
        return self.norm(x)


class MlaForCausalLM(nn.Module):
    def __init__(self, cfg: MlaConfig):
        super().__init__()
        self.model = MlaModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    @classmethod
    def from_hf(cls, hf_model) -> MlaForCausalLM:
        model = cls(MlaConfig.from_hf(hf_model.config))
        model.load_state_dict(hf_model.state_dict(), strict=True)
        return model.to(hf_model.dtype).eval()

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache: LatentCache | None = None):
        return self.lm_head(self.model(input_ids, attention_mask, position_ids, cache))  # (B, T, vocab)
