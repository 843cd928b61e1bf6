"""The original Transformer from scratch: attention, multi-head attention, the position-wise feed-forward
network, LayerNorm, sinusoidal positions, and the encoder-decoder built from them.

Paper: Attention Is All You Need, https://arxiv.org/abs/1706.03762
torch source: https://github.com/pytorch/pytorch/blob/main/torch/nn/modules/transformer.py

Post-LN, as in the paper and torch's default (norm_first=False): each sublayer is x = norm(x + f(x)).
Parameter names are those of torch.nn.Transformer, so its state_dict loads with strict=True.
Masks are booleans, True where a query may look at a key (the convention of
F.scaled_dot_product_attention; nn.MultiheadAttention's masks mean the opposite); hidden scores become
-inf, so hidden keys get exactly zero weight. That is safe here because every query sees some key.
Shapes: B batch, T target tokens, S source tokens, C d_model, nh heads, hs head size (C / nh).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class TransformerConfig:
    # Defaults: the paper's base model. Field names are nn.Transformer's keyword arguments.
    d_model: int = 512
    nhead: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    dim_feedforward: int = 2048
    dropout: float = 0.1
    layer_norm_eps: float = 1e-5


def attention(q, k, v, mask=None, dropout_p=0.0):
    """softmax(q k^T / sqrt(hs)) v. q (..., T, hs), k and v (..., S, hs), mask broadcastable to (..., T, S)."""
    # Dot products of hs-dim vectors grow like sqrt(hs); unscaled, the softmax saturates and its gradients vanish.
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (..., T, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # exp(-inf) = 0: no weight on a masked key
    weights = F.dropout(scores.softmax(dim=-1), dropout_p)  # (..., T, S), each row sums to 1
    return weights @ v  # (..., T, hs)


def causal_mask(T: int, device=None):
    # Token t may look at tokens 0..t: the decoder must not see the words it is about to predict.
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()  # (T, T)


def padding_mask(is_pad):
    # is_pad (B, S), True at padding: no query may look at a pad key. Broadcasts over heads and queries.
    return ~is_pad[:, None, None, :]  # (B, 1, 1, S)


class MultiheadAttention(nn.Module):
    """nh attention heads in parallel, each on its own hs-dim slice of learned projections of q, k, v."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0):
        super().__init__()
        self.nhead, self.dropout = nhead, dropout
        # torch keeps W_q, W_k, W_v stacked in one (3C, C) matrix; so do we, so its weights load as they are.
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d_model))
        self.out_proj = nn.Linear(d_model, d_model)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def split_heads(self, x):
        B, T, C = x.shape
        return x.view(B, T, self.nhead, C // self.nhead).transpose(1, 2)  # (B, nh, T, hs)

    def forward(self, query, key, value, mask=None):  # query (B, T, C), key and value (B, S, C)
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        q = self.split_heads(F.linear(query, w_q, b_q))  # (B, nh, T, hs)
        k = self.split_heads(F.linear(key, w_k, b_k))  # (B, nh, S, hs)
        v = self.split_heads(F.linear(value, w_v, b_v))  # (B, nh, S, hs)
        y = attention(q, k, v, mask, self.dropout if self.training else 0.0)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(query.shape)  # (B, T, C): heads side by side again
        return self.out_proj(y)  # (B, T, C): lets the heads' outputs mix


class LayerNorm(nn.Module):
    """Normalise each token's features to mean 0 and variance 1, then scale and shift.
    Paper: https://arxiv.org/abs/1607.06450"""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x):  # x (..., C)
        mean = x.mean(-1, keepdim=True)  # (..., 1)
        var = x.var(-1, keepdim=True, unbiased=False)  # (..., 1): the population variance, as torch uses
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias  # (..., C)


def sinusoidal_positions(T: int, d_model: int):
    """PE[pos, 2i] = sin(pos / 10000^(2i/C)), PE[pos, 2i+1] = cos(pos / 10000^(2i/C)) (paper, section 3.5).
    Wavelengths from 2*pi to 10000*2*pi; PE[pos + k] is a fixed rotation of PE[pos], so offsets are easy to learn."""
    pos = torch.arange(T).float()[:, None]  # (T, 1)
    inv_freq = 10000 ** (-torch.arange(0, d_model, 2).float() / d_model)  # (C/2,)
    pe = torch.zeros(T, d_model)
    pe[:, 0::2] = torch.sin(pos * inv_freq)  # (T, C/2)
    pe[:, 1::2] = torch.cos(pos * inv_freq)  # (T, C/2)
    return pe  # (T, C)


class EncoderLayer(nn.Module):
    """Self-attention, then a position-wise feed-forward network; each wrapped as norm(x + dropout(f(x)))."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.self_attn = MultiheadAttention(cfg.d_model, cfg.nhead, cfg.dropout)
        self.linear1 = nn.Linear(cfg.d_model, cfg.dim_feedforward)
        self.linear2 = nn.Linear(cfg.dim_feedforward, cfg.d_model)
        self.norm1 = LayerNorm(cfg.d_model, cfg.layer_norm_eps)
        self.norm2 = LayerNorm(cfg.d_model, cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def feed_forward(self, x):
        # The same two-layer MLP at every position: attention mixes tokens, this transforms each one alone.
        return self.linear2(self.dropout(F.relu(self.linear1(x))))  # (B, T, C)

    def forward(self, x, mask=None):  # x (B, S, C)
        x = self.norm1(x + self.dropout(self.self_attn(x, x, x, mask)))
        return self.norm2(x + self.dropout(self.feed_forward(x)))  # (B, S, C)


class DecoderLayer(nn.Module):
    """The encoder layer's two sublayers with cross-attention between them: queries from the target,
    keys and values from the encoder's output (the "memory")."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.self_attn = MultiheadAttention(cfg.d_model, cfg.nhead, cfg.dropout)
        self.multihead_attn = MultiheadAttention(cfg.d_model, cfg.nhead, cfg.dropout)
        self.linear1 = nn.Linear(cfg.d_model, cfg.dim_feedforward)
        self.linear2 = nn.Linear(cfg.dim_feedforward, cfg.d_model)
        self.norm1 = LayerNorm(cfg.d_model, cfg.layer_norm_eps)
        self.norm2 = LayerNorm(cfg.d_model, cfg.layer_norm_eps)
        self.norm3 = LayerNorm(cfg.d_model, cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, memory, tgt_mask=None, memory_mask=None):  # x (B, T, C), memory (B, S, C)
        x = self.norm1(x + self.dropout(self.self_attn(x, x, x, tgt_mask)))  # (B, T, C)
        x = self.norm2(x + self.dropout(self.multihead_attn(x, memory, memory, memory_mask)))  # (B, T, C)
        feed_forward = self.linear2(self.dropout(F.relu(self.linear1(x))))  # (B, T, C), as in the encoder
        return self.norm3(x + self.dropout(feed_forward))  # (B, T, C)


# Each stack ends in a LayerNorm. The paper has none (post-LN outputs are already normalised);
# torch.nn.Transformer adds one, and we keep it so its weights load.
class Encoder(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.num_encoder_layers))
        self.norm = LayerNorm(cfg.d_model, cfg.layer_norm_eps)

    def forward(self, src, src_mask=None):  # src (B, S, C)
        for layer in self.layers:
            src = layer(src, src_mask)  # (B, S, C)
        return self.norm(src)  # (B, S, C)


class Decoder(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_decoder_layers))
        self.norm = LayerNorm(cfg.d_model, cfg.layer_norm_eps)

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None):  # tgt (B, T, C), memory (B, S, C)
        for layer in self.layers:
            tgt = layer(tgt, memory, tgt_mask, memory_mask)  # (B, T, C)
        return self.norm(tgt)  # (B, T, C)


class Transformer(nn.Module):
    """The encoder-decoder, on embeddings, like nn.Transformer: the encoder reads the whole source; the decoder
    reads the target so far, causally, and looks up the encoder's output ("memory") through cross-attention."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def forward(self, src, tgt, src_is_pad=None):  # src (B, S, C), tgt (B, T, C), src_is_pad (B, S)
        src_mask = None if src_is_pad is None else padding_mask(src_is_pad)  # (B, 1, 1, S)
        memory = self.encoder(src, src_mask)  # (B, S, C)
        # Source padding is hidden twice: from the encoder's self-attention and from the decoder's cross-attention.
        tgt_mask = causal_mask(tgt.size(1), tgt.device)  # (T, T)
        return self.decoder(tgt, memory, tgt_mask=tgt_mask, memory_mask=src_mask)  # (B, T, C)


class Seq2Seq(nn.Module):
    """Token ids in, next-token logits out: embeddings (scaled by sqrt(C), section 3.4) plus sinusoidal positions,
    the Transformer, and a linear map to the vocabulary."""

    def __init__(self, cfg: TransformerConfig, src_vocab: int, tgt_vocab: int, pad_id: int = 0):
        super().__init__()
        self.pad_id, self.d_model = pad_id, cfg.d_model
        self.src_embed = nn.Embedding(src_vocab, cfg.d_model)
        self.tgt_embed = nn.Embedding(tgt_vocab, cfg.d_model)
        self.transformer = Transformer(cfg)
        self.lm_head = nn.Linear(cfg.d_model, tgt_vocab)
        self.dropout = nn.Dropout(cfg.dropout)
        # The paper shares the embeddings with the pre-softmax layer, where a std of 1/sqrt(C) keeps the logits of
        # order 1 (tensor2tensor's init), and multiplies them by sqrt(C) on input, back to entries of size ~1 like
        # the positions'. We keep that init and that scaling, without the sharing.
        nn.init.normal_(self.src_embed.weight, std=cfg.d_model**-0.5)
        nn.init.normal_(self.tgt_embed.weight, std=cfg.d_model**-0.5)

    def embed(self, embedding: nn.Embedding, ids):  # ids (B, T)
        x = embedding(ids) * math.sqrt(self.d_model)  # (B, T, C), entries of size ~1 like the positions'
        return self.dropout(x + sinusoidal_positions(ids.size(1), self.d_model).to(x.device))  # (B, T, C)

    def forward(self, src_ids, tgt_ids):  # src_ids (B, S), tgt_ids (B, T)
        src, tgt = self.embed(self.src_embed, src_ids), self.embed(self.tgt_embed, tgt_ids)
        return self.lm_head(self.transformer(src, tgt, src_ids == self.pad_id))  # (B, T, tgt_vocab)
