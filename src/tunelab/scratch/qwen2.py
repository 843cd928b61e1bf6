"""Qwen2 from scratch: a decoder-only transformer with RMSNorm, rotary positions, grouped-query attention
and a SwiGLU MLP, the next-token loss, plus greedy generation with a KV cache.

Paper: Qwen2 Technical Report, https://arxiv.org/abs/2407.10671
HF source: https://github.com/huggingface/transformers/blob/main/src/transformers/models/qwen2/modeling_qwen2.py

Parameter names are those of transformers' Qwen2ForCausalLM, so a Hugging Face state_dict loads with
strict=True; `Qwen2ForCausalLM.from_hf(hf_model)` does exactly that. Shapes: B batch, T new tokens,
S tokens attended to (cached + new), C hidden size, nh query heads, nkv key/value heads, hs head size.
Masks are booleans, True where a query may see a key; hidden scores get finfo.min, not -inf (why: Qwen2Attention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.scratch.losses import IGNORE_INDEX, cross_entropy


@dataclass
class Qwen2Config:
    # Defaults: Qwen2.5-0.5B. Field names match transformers' Qwen2Config.
    vocab_size: int = 151936
    hidden_size: int = 896
    intermediate_size: int = 4864
    num_hidden_layers: int = 24
    num_attention_heads: int = 14
    num_key_value_heads: int = 2
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    tie_word_embeddings: bool = True

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf(cls, hf_config) -> Qwen2Config:
        for name, value, ours in (("rope_type", hf_config.rope_parameters["rope_type"], "default"),
                                  ("use_sliding_window", hf_config.use_sliding_window, False),
                                  ("hidden_act", hf_config.hidden_act, "silu")):
            if value != ours:  # refuse, rather than return silently different logits
                raise ValueError(f"scratch Qwen2 implements {name}={ours!r} only; this config has {value!r}")
        # transformers 5 keeps rope_theta inside the rope_parameters dict
        values = {f.name: getattr(hf_config, f.name) for f in fields(cls) if f.name != "rope_theta"}
        return cls(**values, rope_theta=hf_config.rope_parameters["rope_theta"])


class RMSNorm(nn.Module):
    """Root-mean-square norm (https://arxiv.org/abs/1910.07467): LayerNorm without the mean or the bias."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        # In float32 even for half-precision weights: a mean of squares overflows float16.
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)  # (..., C)
        return self.weight * xf.to(x.dtype)


def default_inv_freq(head_dim: int, theta: float):
    # one frequency per pair of features, from 1 down to ~1/theta: fast and slow "clock hands"
    return 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)  # (hs/2,)


class RotaryEmbedding(nn.Module):
    """RoPE (https://arxiv.org/abs/2104.09864): rotate each query/key pair of features by an angle
    proportional to the position, so q.k depends only on the distance between tokens. A context-extension
    method (rope_scaling.py) swaps in its own inv_freq and attention_factor; plain RoPE has 1.0."""

    def __init__(self, cfg: Qwen2Config, inv_freq=None, attention_factor: float = 1.0):
        super().__init__()
        if inv_freq is None:
            inv_freq = default_inv_freq(cfg.head_dim, cfg.rope_theta)  # (hs/2,)
        self.register_buffer("inv_freq", inv_freq, persistent=False)  # derived, so not in the state_dict
        self.attention_factor = attention_factor

    def forward(self, position_ids):  # position_ids (B, T)
        angles = position_ids[..., None].float() * self.inv_freq  # (B, T, hs/2)
        angles = torch.cat((angles, angles), dim=-1)  # (B, T, hs): feature i pairs with i + hs/2
        # scaling both q and k by the factor scales their dot product, the attention logits, by its square
        return angles.cos() * self.attention_factor, angles.sin() * self.attention_factor


def rotate_half(x):
    # HF pairs feature i with i + hs/2 (not with its neighbour, as the paper writes it); same maths,
    # permuted features, and checkpoints are trained with this layout.
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x, cos, sin):  # x (B, n, T, hs); cos, sin (B, T, hs) in float32
    # angles in float32 (bfloat16 cannot tell position 256 from 257), then cast so a bfloat16 q stays bfloat16
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


class KVCache:
    """Keys and values of every layer for the tokens seen so far: a new token then costs one row of
    attention instead of a rerun of the whole prefix."""

    def __init__(self, num_layers: int):
        self.k: list = [None] * num_layers
        self.v: list = [None] * num_layers

    def seq_len(self) -> int:  # tokens cached so far
        return 0 if self.k[0] is None else self.k[0].shape[2]

    def update(self, layer: int, k, v):  # k, v (B, nkv, T, hs) -> all of them so far, (B, nkv, S, hs)
        if self.k[layer] is not None:
            k, v = torch.cat((self.k[layer], k), dim=2), torch.cat((self.v[layer], v), dim=2)
        self.k[layer], self.v[layer] = k, v
        return k, v


class Qwen2Attention(nn.Module):
    """Grouped-query attention (https://arxiv.org/abs/2305.13245): nh query heads share nkv key/value
    heads, which shrinks the KV cache nh/nkv times. Qwen2 keeps a bias on q, k and v (not on o)."""

    def __init__(self, cfg: Qwen2Config, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.nh, self.nkv, self.hs = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, self.nh * self.hs, bias=True)
        self.k_proj = nn.Linear(cfg.hidden_size, self.nkv * self.hs, bias=True)
        self.v_proj = nn.Linear(cfg.hidden_size, self.nkv * self.hs, bias=True)
        self.o_proj = nn.Linear(self.nh * self.hs, cfg.hidden_size, bias=False)

    def forward(self, x, cos, sin, mask, cache: KVCache | None):
        B, T, C = x.shape
        q = self.q_proj(x).view(B, T, self.nh, self.hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k_proj(x).view(B, T, self.nkv, self.hs).transpose(1, 2)  # (B, nkv, T, hs)
        v = self.v_proj(x).view(B, T, self.nkv, self.hs).transpose(1, 2)  # (B, nkv, T, hs)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # rotated before caching: positions stick
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # (B, nkv, S, hs)
        # each key/value head serves nh/nkv consecutive query heads: copy it that many times
        n_rep = self.nh // self.nkv
        k, v = k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)  # (B, nh, S, hs)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(self.hs)  # (B, nh, T, S)
        # finfo.min rather than -inf: a padding row that may see nothing gets a uniform softmax, not NaN
        att = att.masked_fill(~mask, torch.finfo(att.dtype).min).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, self.nh * self.hs)  # (B, T, nh*hs)
        return self.o_proj(y)


class Qwen2MLP(nn.Module):
    """SwiGLU (https://arxiv.org/abs/2002.05202): a SiLU-activated gate multiplies a second projection."""

    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):  # x (B, T, C)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # (B, T, C)


class Qwen2DecoderLayer(nn.Module):
    """Pre-norm block: normalise, transform, add back to the residual stream."""

    def __init__(self, cfg: Qwen2Config, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Qwen2Attention(cfg, layer_idx)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = Qwen2MLP(cfg)

    def forward(self, x, cos, sin, mask, cache):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


def attention_mask_4d(T: int, past: int, padding_mask=None, device=None):
    """(B or 1, 1, T, S) booleans, True where query t may see key s: causal, minus padding keys.
    padding_mask (B, S) is the tokenizer's attention_mask over cached and new tokens, 0 on padding."""
    query_pos = past + torch.arange(T, device=device)  # (T,)
    mask = torch.arange(past + T, device=device)[None, :] <= query_pos[:, None]  # (T, S)
    mask = mask[None, None]  # (1, 1, T, S)
    if padding_mask is not None:
        mask = mask & padding_mask[:, None, None, :].bool()  # (B, 1, T, S)
    return mask


class Qwen2Model(nn.Module):
    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Qwen2DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(cfg)

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache: KVCache | None = None):
        B, T = input_ids.shape
        past = cache.seq_len() if cache is not None else 0
        if position_ids is None:  # left-padded batches should pass attention_mask.cumsum(-1) - 1
            position_ids = (past + torch.arange(T, device=input_ids.device)).expand(B, T)  # (B, T)
        cos, sin = self.rotary_emb(position_ids)  # (B, T, hs) each, computed once for all layers
        mask = attention_mask_4d(T, past, attention_mask, input_ids.device)  # (B or 1, 1, T, S)
        x = self.embed_tokens(input_ids)  # (B, T, C)
        for layer in self.layers:
            x = layer(x, cos, sin, mask, cache)
        return self.norm(x)  # (B, T, C)


class Qwen2ForCausalLM(nn.Module):
    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.config = cfg
        self.model = Qwen2Model(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:  # small models spend a large share of parameters on the vocabulary
            self.lm_head.weight = self.model.embed_tokens.weight

    @classmethod
    def from_hf(cls, hf_model) -> Qwen2ForCausalLM:
        model = cls(Qwen2Config.from_hf(hf_model.config))
        model.load_state_dict(hf_model.state_dict(), strict=True)
        return model.to(hf_model.dtype).eval()

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache: KVCache | None = None, labels=None):
        """Logits (B, T, vocab); given labels (B, T), also the next-token loss: (logits, loss) as nanoGPT returns
        them. labels are the input ids with -100 where no loss is wanted (prompt, padding); position t's logits
        predict labels[t + 1], so the shift happens here, as in transformers' `labels=`."""
        logits = self.lm_head(self.model(input_ids, attention_mask, position_ids, cache))  # (B, T, vocab)
        if labels is None:
            return logits
        # the last position predicts a token not in the batch; the loss in float32 even for a bfloat16 model
        loss = cross_entropy(logits[:, :-1].float(), labels[:, 1:], IGNORE_INDEX)  # mean over counted tokens
        return logits, loss

    @torch.no_grad()
    def generate(self, input_ids, max_new_tokens: int, eos_token_id: int | None = None, attention_mask=None):
        """Greedy decoding: the prompt (B, T) runs once to fill the cache, then each step feeds only the
        token just chosen. Rows that have emitted eos_token_id keep emitting it until all have. Prompts of
        different lengths go left-padded (each row's next token in the same column) with their attention_mask
        (B, T), 0 on padding; without one, every token counts as real."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        cache = KVCache(len(self.model.layers))
        ids, new = input_ids, input_ids  # all tokens so far; those the cache has not seen yet
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (B, T): count from the first real token
        done = torch.zeros(len(input_ids), dtype=torch.bool, device=input_ids.device)  # (B,)
        for _ in range(max_new_tokens):
            hidden = self.model(new, attention_mask, position_ids, cache)  # (B, T or 1, C)
            # only the last position's next token is wanted: the head (C x vocab, the largest matmul of a small
            # model) runs on one row per sequence instead of all T prompt positions, as nanoGPT's does
            logits = self.lm_head(hidden[:, -1])  # (B, vocab)
            next_id = logits.argmax(dim=-1)  # (B,)
            if eos_token_id is not None:
                next_id = torch.where(done, eos_token_id, next_id)
                done = done | (next_id == eos_token_id)
            new = next_id[:, None]  # (B, 1)
            ids = torch.cat((ids, new), dim=1)  # (B, T + generated)
            attention_mask = torch.cat((attention_mask, torch.ones_like(new)), dim=1)  # (B, T + generated)
            position_ids = position_ids[:, -1:] + 1  # (B, 1)
            if done.all():
                break
        return ids
