"""T5 from scratch: an encoder-decoder transformer that learns a bias per relative distance
instead of adding position embeddings to the tokens.

Paper: Raffel et al. 2019, https://arxiv.org/abs/1910.10683 (T5 v1.0: ReLU feed-forward, tied LM head).
T5 v1.1 / flan-t5 swap in a gated-GELU feed-forward (https://arxiv.org/abs/2002.05202) and untie the head.
Hugging Face: https://github.com/huggingface/transformers/blob/main/src/transformers/models/t5/modeling_t5.py
Parameter names follow Hugging Face, so a T5ForConditionalGeneration state_dict loads with strict=True.
No dropout and no key/value cache: this is the forward pass, written to be read. `decode` recomputes
the whole target prefix on every call, which is all a beam search over short outputs needs.
Masks are additive floats (0 to keep, -inf to hide), because T5 adds a learned position bias to the
attention scores anyway: mask and bias fold into one tensor, added once per layer.
"""

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class T5Config:
    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64  # width of one head; T5 does not require num_heads * d_kv == d_model
    d_ff: int = 2048
    num_layers: int = 6
    num_decoder_layers: int = 6
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"  # "relu" (T5 v1.0) or "gated-gelu" (T5 v1.1, flan-t5)
    tie_word_embeddings: bool = True  # v1.0 reads logits off the input embedding; v1.1 has its own head
    pad_token_id: int = 0
    decoder_start_token_id: int = 0  # T5 starts every target with the pad token

    @classmethod
    def from_hf(cls, hf_config):
        values = {f.name: getattr(hf_config, f.name) for f in fields(cls) if hasattr(hf_config, f.name)}
        # transformers 5 reports tie_word_embeddings=True for every T5 and keeps what the checkpoint
        # said in scale_decoder_outputs (the untied weights themselves come from the checkpoint)
        values["tie_word_embeddings"] = hf_config.scale_decoder_outputs
        return cls(**values)


def relative_position_bucket(relative_position, bidirectional, num_buckets, max_distance):
    """Map each key position minus query position to one of `num_buckets` learned biases: near distances get
    a bucket each, farther ones share buckets that widen geometrically, and everything at or beyond max_distance
    shares the last. The encoder spends half its buckets on keys to the right; the decoder only ever looks left,
    so it spends them all on the past. (transformers' float32 log puts a distance that lands exactly on a bucket
    start one bucket lower in a few configs, e.g. 64 of 18 buckets up to 128; never with T5's 32 up to 128.)"""
    if bidirectional:
        num_buckets //= 2
        offset = (relative_position > 0).long() * num_buckets  # keys to the right: the upper half
        distance = relative_position.abs()
    else:
        offset = 0
        distance = (-relative_position).clamp(min=0)  # future keys are masked anyway: bucket 0
    exact = num_buckets // 2  # distances 0 .. exact-1 get a bucket each
    # the m other buckets split exact .. max_distance in equal ratios: bucket exact + j starts at exact * r**(j/m)
    m, r = num_buckets - exact, max_distance / exact
    j = torch.arange(1, m, dtype=torch.float64)  # (m - 1,)
    starts = torch.cat([torch.arange(1, exact + 1, dtype=torch.float64), exact * r ** (j / m)])  # (num_buckets - 1,)
    # a distance's bucket is the number of bucket starts at or below it
    return offset + torch.bucketize(distance, starts.to(distance.device), right=True)


def padding_mask(attention_mask):
    """(B, S) with 1 for tokens and 0 for padding -> additive (B, 1, 1, S), -inf on padded keys.
    A padded query row still sees the real keys, so no row is all -inf (which would give NaN)."""
    blocked = (attention_mask == 0)[:, None, None, :]
    return torch.zeros(blocked.shape, device=blocked.device).masked_fill(blocked, float("-inf"))


class T5LayerNorm(nn.Module):
    """RMSNorm (https://arxiv.org/abs/1910.07467): divide by the root mean square; no centering, no bias."""

    def __init__(self, d_model, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d_model))
        self.eps = eps

    def forward(self, x):  # x (..., C)
        # the mean of squares in float32 as in qwen2.py (in float16 it overflows), then the weight's dtype
        variance = x.float().pow(2).mean(-1, keepdim=True)  # (..., 1)
        return self.weight * (x * torch.rsqrt(variance + self.eps)).to(self.weight.dtype)  # (..., C)


class T5Attention(nn.Module):
    def __init__(self, cfg, has_relative_attention_bias=False):
        super().__init__()
        self.n_head, self.d_kv = cfg.num_heads, cfg.d_kv
        inner = cfg.num_heads * cfg.d_kv
        self.q = nn.Linear(cfg.d_model, inner, bias=False)
        self.k = nn.Linear(cfg.d_model, inner, bias=False)
        self.v = nn.Linear(cfg.d_model, inner, bias=False)
        self.o = nn.Linear(inner, cfg.d_model, bias=False)
        if has_relative_attention_bias:
            self.num_buckets = cfg.relative_attention_num_buckets
            self.max_distance = cfg.relative_attention_max_distance
            self.relative_attention_bias = nn.Embedding(self.num_buckets, cfg.num_heads)

    def position_bias(self, T, bidirectional):
        pos = torch.arange(T, device=self.relative_attention_bias.weight.device)
        relative = pos[None, :] - pos[:, None]  # (T, T): key position minus query position
        buckets = relative_position_bucket(relative, bidirectional, self.num_buckets, self.max_distance)
        return self.relative_attention_bias(buckets).permute(2, 0, 1)[None]  # (1, nh, T, T)

    def forward(self, x, context, bias):  # x (B, T, C); context (B, S, C): x itself, or the encoder's output
        B, T, S = x.shape[0], x.shape[1], context.shape[1]
        q = self.q(x).view(B, T, self.n_head, self.d_kv).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k(context).view(B, S, self.n_head, self.d_kv).transpose(1, 2)  # (B, nh, S, hs)
        v = self.v(context).view(B, S, self.n_head, self.d_kv).transpose(1, 2)  # (B, nh, S, hs)
        # no 1/sqrt(hs): T5 initialises q with a std smaller by that factor instead (Mesh TensorFlow)
        att = (q @ k.transpose(-2, -1) + bias).softmax(dim=-1)  # (B, nh, T, S)
        y = (att @ v).transpose(1, 2).reshape(B, T, -1)  # (B, T, nh*hs)
        return self.o(y)


class T5DenseActDense(nn.Module):
    """T5 v1.0 feed-forward: ReLU between two bias-free projections."""

    def __init__(self, cfg):
        super().__init__()
        self.wi = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.wo = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x):  # x (B, T, C)
        return self.wo(F.relu(self.wi(x)))  # (B, T, C), through (B, T, d_ff)


class T5DenseGatedActDense(nn.Module):
    """T5 v1.1 feed-forward (GEGLU): a GELU branch gates a linear branch elementwise."""

    def __init__(self, cfg):
        super().__init__()
        self.wi_0 = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.wi_1 = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.wo = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x):  # x (B, T, C)
        return self.wo(F.gelu(self.wi_0(x), approximate="tanh") * self.wi_1(x))  # (B, T, C); T5 used the tanh GELU


# Each sub-layer is pre-norm with a residual: x + f(norm(x)).
class T5LayerSelfAttention(nn.Module):
    def __init__(self, cfg, has_relative_attention_bias):
        super().__init__()
        self.SelfAttention = T5Attention(cfg, has_relative_attention_bias)
        self.layer_norm = T5LayerNorm(cfg.d_model, cfg.layer_norm_epsilon)

    def forward(self, x, bias):  # x (B, T, C)
        h = self.layer_norm(x)  # (B, T, C)
        return x + self.SelfAttention(h, h, bias)  # (B, T, C)


class T5LayerCrossAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.EncDecAttention = T5Attention(cfg)
        self.layer_norm = T5LayerNorm(cfg.d_model, cfg.layer_norm_epsilon)

    def forward(self, x, memory, bias):  # x (B, T, C), memory (B, S, C): the encoder's output
        return x + self.EncDecAttention(self.layer_norm(x), memory, bias)  # (B, T, C)


class T5LayerFF(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        assert cfg.feed_forward_proj in ("relu", "gated-gelu"), cfg.feed_forward_proj
        gated = cfg.feed_forward_proj == "gated-gelu"
        self.DenseReluDense = T5DenseGatedActDense(cfg) if gated else T5DenseActDense(cfg)
        self.layer_norm = T5LayerNorm(cfg.d_model, cfg.layer_norm_epsilon)

    def forward(self, x):
        return x + self.DenseReluDense(self.layer_norm(x))


class T5Block(nn.Module):
    def __init__(self, cfg, is_decoder, has_relative_attention_bias):
        super().__init__()
        layers = [T5LayerSelfAttention(cfg, has_relative_attention_bias)]
        if is_decoder:
            layers.append(T5LayerCrossAttention(cfg))
        layers.append(T5LayerFF(cfg))
        self.layer = nn.ModuleList(layers)

    def forward(self, x, self_bias, memory=None, cross_bias=None):
        x = self.layer[0](x, self_bias)
        if memory is not None:
            x = self.layer[1](x, memory, cross_bias)
        return self.layer[-1](x)


class T5Stack(nn.Module):
    def __init__(self, cfg, embed_tokens, is_decoder):
        super().__init__()
        self.is_decoder = is_decoder
        self.embed_tokens = embed_tokens
        n_layer = cfg.num_decoder_layers if is_decoder else cfg.num_layers
        # only the first block owns a bias table: every block adds the same position bias
        self.block = nn.ModuleList([T5Block(cfg, is_decoder, i == 0) for i in range(n_layer)])
        self.final_layer_norm = T5LayerNorm(cfg.d_model, cfg.layer_norm_epsilon)

    def forward(self, input_ids, mask, memory=None, cross_bias=None):
        x = self.embed_tokens(input_ids)  # (B, T, C)
        first = self.block[0].layer[0].SelfAttention
        bias = first.position_bias(x.shape[1], bidirectional=not self.is_decoder) + mask  # (B or 1, nh, T, T)
        for block in self.block:
            x = block(x, bias, memory, cross_bias)
        return self.final_layer_norm(x)


class T5ForConditionalGeneration(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.shared = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.encoder = T5Stack(cfg, self.shared, is_decoder=False)
        self.decoder = T5Stack(cfg, self.shared, is_decoder=True)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.shared.weight

    def encode(self, input_ids, attention_mask):
        return self.encoder(input_ids, padding_mask(attention_mask))  # (B, S, C)

    def decode(self, decoder_input_ids, encoder_hidden_states, encoder_attention_mask):
        T = decoder_input_ids.shape[1]
        causal = torch.full((T, T), float("-inf"), device=decoder_input_ids.device).triu(1)  # (T, T)
        x = self.decoder(decoder_input_ids, causal, encoder_hidden_states,
                         padding_mask(encoder_attention_mask))  # (B, T, C)
        if self.config.tie_word_embeddings:
            # the shared table holds unit-scale input embeddings; as the output layer they'd make logits ~sqrt(C)
            x = x * self.config.d_model**-0.5
        return self.lm_head(x)  # (B, T, vocab)

    def shift_right(self, labels):
        """Teacher forcing: the decoder reads [start] + labels[:-1] and predicts labels."""
        start = torch.full_like(labels[:, :1], self.config.decoder_start_token_id)
        shifted = torch.cat([start, labels[:, :-1]], dim=1)
        return shifted.masked_fill(shifted == -100, self.config.pad_token_id)  # -100 marks ignored labels

    def forward(self, input_ids, attention_mask, decoder_input_ids=None, labels=None):
        if decoder_input_ids is None:
            decoder_input_ids = self.shift_right(labels)
        logits = self.decode(decoder_input_ids, self.encode(input_ids, attention_mask), attention_mask)
        if labels is None:
            return logits
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        return logits, loss
