"""Hand-checkable facts for the lab's attention alternatives (src/tunelab/scratch/alibi.py, mla.py, mamba.py,
rwkv.py): numbers a reader can redo on paper. tests/test_parity.py compares the same code with transformers."""

import math

import pytest
import torch
import transformers

from tunelab.scratch import alibi, mamba, mla, rwkv

pytestmark = pytest.mark.unit


def test_alibi_slopes_for_a_power_of_two_are_a_geometric_sequence():
    """8 heads: 2^(-8h/8) = 2^-h for h = 1..8."""
    assert alibi.alibi_slopes(8).tolist() == [2.0 ** -h for h in range(1, 9)]


def test_alibi_slopes_for_6_heads_interleave_the_8_head_rule():
    """k = 4: 2^(-8h/4) = 1/4, 1/16, 1/64, 1/256; then 6 - 4 = 2 heads take the 8-head rule's odd-numbered
    slopes 2^(-1), 2^(-3) = 1/2, 1/8, which fall between the first ones."""
    assert alibi.alibi_slopes(6).tolist() == [1 / 4, 1 / 16, 1 / 64, 1 / 256, 1 / 2, 1 / 8]


def test_alibi_bias_by_hand():
    """One head of slope 1/2. Row 0 unpadded, positions 0, 1, 2: query 2 sees -1/2 * (2 - j) = [-1, -0.5, 0].
    Row 1 left-padded by one: its real tokens are positions 0, 1, so its last query sees [.., -0.5, 0]."""
    positions = (torch.tensor([[1, 1, 1], [0, 1, 1]]).cumsum(-1) - 1).clamp(min=0)  # [[0, 1, 2], [0, 0, 1]]
    bias = alibi.alibi_bias(torch.tensor([0.5]), positions)  # (2, 1, 3, 3)
    assert bias[0, 0, 2].tolist() == [-1.0, -0.5, 0.0]
    assert bias[1, 0, 2, 1:].tolist() == [-0.5, 0.0]


def test_mla_caches_the_latent_and_one_rope_key_per_token():
    """DeepSeek-V3 per token and layer: MLA keeps 512 + 64 = 576 numbers; multi-head attention with the same
    128 heads would keep keys of 128 + 64 and values of 128 per head, 128 * 320 = 40960. And a tiny model's
    cache after a 5-token prompt and one more token holds exactly (B, 6, kv_lora_rank) and (B, 1, 6, rope)."""
    assert mla.kv_cache_floats_per_token(mla.MlaConfig()) == {"mla": 576, "mha": 40960}
    cfg = mla.MlaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, q_lora_rank=16, kv_lora_rank=12, qk_nope_head_dim=8,
                        qk_rope_head_dim=4, v_head_dim=6)
    model = mla.MlaForCausalLM(cfg).eval()
    cache = mla.LatentCache(cfg.num_hidden_layers)
    ids = torch.randint(0, 50, (2, 6))
    with torch.no_grad():
        model(ids[:, :5], cache=cache)
        model(ids[:, 5:], cache=cache)
    for layer in range(2):
        assert cache.c_kv[layer].shape == (2, 6, 12) and cache.k_rope[layer].shape == (2, 1, 6, 4)
    assert mla.kv_cache_floats_per_token(cfg) == {"mla": 12 + 4, "mha": 4 * (8 + 4 + 6)}


def test_mla_refuses_moe_layers_by_name():
    hf_cfg = transformers.DeepseekV3Config(num_hidden_layers=4, first_k_dense_replace=1)
    with pytest.raises(ValueError, match="first_k_dense_replace"):
        mla.MlaConfig.from_hf(hf_cfg)


def test_selective_scan_by_hand():
    """One channel, N = 1, A = -1, dt = ln 2 (A_bar = 1/2), B = C = 1, D = 0, a pulse x = [1, 0, 0]:
    h = [ln 2, ln 2 / 2, ln 2 / 4] = y. With D = 1 the input is added back: y_0 = ln 2 + 1."""
    x = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1)
    dt = torch.full((1, 3, 1), math.log(2))
    A, B, C = -torch.ones(1, 1), torch.ones(1, 3, 1), torch.ones(1, 3, 1)
    y = mamba.selective_scan(x, dt, A, B, C, D=torch.zeros(1))
    torch.testing.assert_close(y.flatten(), torch.tensor([0.693147, 0.346574, 0.173287]), atol=1e-6, rtol=0)
    y = mamba.selective_scan(x, dt, A, B, C, D=torch.ones(1))
    assert y[0, 0, 0].item() == pytest.approx(math.log(2) + 1, abs=1e-6)


def test_wkv_by_hand_and_finite_for_huge_keys():
    """w = ln 2 (time_decay = ln ln 2), u = 0, k = 0, v = [1, 2, 4]: wkv = [1, (1 + 2) / 2, (1/2 + 2 + 4) / 2.5]
    = [1, 1.5, 2.6]. Keys [200, 0] (e^200 overflows float32): the first token outweighs the second by e^200,
    so wkv_2 = v_1 = 3, finite."""
    time_decay, time_first = torch.tensor([math.log(math.log(2))]), torch.zeros(1)
    out = rwkv.wkv(time_decay, time_first, torch.zeros(1, 3, 1), torch.tensor([1.0, 2.0, 4.0]).view(1, 3, 1))
    torch.testing.assert_close(out.flatten(), torch.tensor([1.0, 1.5, 2.6]), atol=1e-6, rtol=0)
    out = rwkv.wkv(time_decay, time_first, torch.tensor([200.0, 0.0]).view(1, 2, 1),
                   torch.tensor([3.0, 5.0]).view(1, 2, 1))
    assert out.flatten().tolist() == [3.0, 3.0]
