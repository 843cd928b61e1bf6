"""Mamba from scratch: a language model with no attention. Each block mixes tokens through a selective state
space model (SSM): a fixed-size state per channel, updated token by token, whose update rule depends on
the token itself. Generation costs the same per token however long the text (no KV cache that grows).

Paper: Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces",
https://arxiv.org/abs/2312.00752 (Algorithm 2, section 3). HF source:
https://github.com/huggingface/transformers/blob/main/src/transformers/models/mamba/modeling_mamba.py
The scan here is the plain loop over time that transformers falls back to without the CUDA kernels
(mamba-ssm, causal-conv1d): those compute the same recurrence, fused and in parallel.

Parameter names are those of transformers' MambaForCausalLM, so its state_dict loads with strict=True.
Shapes: B batch, T tokens, C hidden size, E inner width (expand * C), N state size per channel, R the rank of
the time-step projection, K the convolution width.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.scratch.qwen2 import RMSNorm


@dataclass
class MambaConfig:
    # Defaults: mamba-130m. Field names match transformers' MambaConfig.
    vocab_size: int = 50280
    hidden_size: int = 768
    state_size: int = 16  # N
    num_hidden_layers: int = 24
    layer_norm_epsilon: float = 1e-5
    expand: int = 2
    conv_kernel: int = 4  # K
    use_bias: bool = False
    use_conv_bias: bool = True
    time_step_rank: int = 48  # R; transformers' "auto" is ceil(hidden_size / 16)
    tie_word_embeddings: bool = True

    @property
    def intermediate_size(self) -> int:  # E
        return self.expand * self.hidden_size

    @classmethod
    def from_hf(cls, hf_config) -> MambaConfig:
        if hf_config.hidden_act != "silu":  # refuse rather than return other logits
            raise ValueError(f"scratch Mamba implements hidden_act='silu' only; this config has "
                             f"{hf_config.hidden_act!r}")
        return cls(**{f.name: getattr(hf_config, f.name) for f in fields(cls)})


def selective_scan(x, dt, A, B, C, D):
    """The SSM h_t = A_bar_t * h_{t-1} + B_bar_t * x_t, y_t = C_t . h_t + D * x_t, one state of N numbers per
    channel, as a loop over time. x, dt (B, T, E); A (E, N); B, C (B, T, N); D (E,). Returns y (B, T, E).

    Discretisation with step dt (the paper's Delta, one per token and channel): A_bar = exp(dt * A), the
    exact decay over a step of length dt (zero-order hold); B_bar = dt * B, its first-order approximation,
    as the paper's code does. A < 0, so A_bar lies in (0, 1): a large dt forgets the state and takes in x_t,
    a small one keeps the state and nearly ignores x_t. dt, B and C come from the token: "selective".

    By hand, one channel, N = 1, A = -1, dt = ln 2 (so A_bar = 1/2), B = C = 1, D = 0, x = [1, 0, 0]:
    h = [ln 2, ln 2 / 2, ln 2 / 4] = [0.693147, 0.346574, 0.173287] = y, a pulse halving at every step."""
    batch, T, E = x.shape
    h = x.new_zeros(batch, E, A.shape[1])  # (B, E, N): the whole memory of the past, whatever T
    ys = []
    for t in range(T):
        A_bar = torch.exp(dt[:, t, :, None] * A)  # (B, E, N)
        B_bar_x = dt[:, t, :, None] * B[:, t, None, :] * x[:, t, :, None]  # (B, E, N)
        h = A_bar * h + B_bar_x  # (B, E, N)
        ys.append((h @ C[:, t, :, None]).squeeze(-1))  # (B, E): C_t reads the state out
    return torch.stack(ys, dim=1) + x * D  # (B, T, E): D is a skip connection around the SSM


class MambaMixer(nn.Module):
    """in_proj to two branches; one goes through a short causal convolution and the selective SSM, the other
    (z) gates the result through SiLU, as in a gated MLP; out_proj brings it back to C."""

    def __init__(self, cfg: MambaConfig):
        super().__init__()
        E, N, R, K = cfg.intermediate_size, cfg.state_size, cfg.time_step_rank, cfg.conv_kernel
        self.R, self.N = R, N
        self.in_proj = nn.Linear(cfg.hidden_size, 2 * E, bias=cfg.use_bias)
        # depthwise (groups=E): each channel convolves only its own past K-1 tokens and itself
        self.conv1d = nn.Conv1d(E, E, kernel_size=K, groups=E, padding=K - 1, bias=cfg.use_conv_bias)
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)  # the token's own dt (low rank), B and C
        self.dt_proj = nn.Linear(R, E, bias=True)
        # A = -exp(A_log) stays negative whatever training does; S4D's init puts A_log = log(1..N) per channel
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))  # (E, N)
        self.D = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, cfg.hidden_size, bias=cfg.use_bias)

    def forward(self, x, attention_mask=None):  # x (B, T, C); attention_mask (B, T), 0 on padding
        T = x.shape[1]
        # padding zeroed before the projection and after the convolution, as transformers does: a left-padded
        # row then starts from a zero state and a zero convolution window, exactly as if unpadded
        keep = 1.0 if attention_mask is None else attention_mask[:, :, None].to(x.dtype)  # (B, T, 1)
        x, z = self.in_proj(x * keep).chunk(2, dim=-1)  # (B, T, E) each
        # padding K-1 on both sides and keeping the first T outputs makes output t see tokens t-K+1..t only
        x = F.silu(self.conv1d(x.transpose(1, 2))[..., :T]).transpose(1, 2) * keep  # (B, T, E)
        dt, B, C = self.x_proj(x).split([self.R, self.N, self.N], dim=-1)  # (B, T, R), (B, T, N), (B, T, N)
        dt = F.softplus(self.dt_proj(dt))  # (B, T, E): a positive step per token and channel
        y = selective_scan(x, dt, -torch.exp(self.A_log), B, C, self.D)  # (B, T, E)
        return self.out_proj(y * F.silu(z))  # (B, T, C)


class MambaBlock(nn.Module):
    """Pre-norm residual block; the mixer stands in for both attention and MLP (there is no separate MLP)."""

    def __init__(self, cfg: MambaConfig):
        super().__init__()
        self.norm = RMSNorm(cfg.hidden_size, cfg.layer_norm_epsilon)
        self.mixer = MambaMixer(cfg)

    def forward(self, x, attention_mask=None):
        return x + self.mixer(self.norm(x), attention_mask)


class MambaModel(nn.Module):
    def __init__(self, cfg: MambaConfig):
        super().__init__()
        self.embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(MambaBlock(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm_f = RMSNorm(cfg.hidden_size, cfg.layer_norm_epsilon)

    def forward(self, input_ids, attention_mask=None):  # no positions anywhere: order lives in the recurrence
        x = self.embeddings(input_ids)  # (B, T, C)
        for layer in self.layers:
            x = layer(x, attention_mask)
        return self.norm_f(x)


class MambaForCausalLM(nn.Module):
    def __init__(self, cfg: MambaConfig):
        super().__init__()
        self.backbone = MambaModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.backbone.embeddings.weight

    @classmethod
    def from_hf(cls, hf_model) -> MambaForCausalLM:
        model = cls(MambaConfig.from_hf(hf_model.config))
        model.load_state_dict(hf_model.state_dict(), strict=True)
        return model.to(hf_model.dtype).eval()

    def forward(self, input_ids, attention_mask=None):
        return self.lm_head(self.backbone(input_ids, attention_mask))  # (B, T, vocab)
