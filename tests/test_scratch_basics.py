"""Hand-worked numbers for the lab's basics (src/tunelab/scratch): values a reader can check with a calculator,
for the pieces that have no library twin, the Transformer's masks seen from the outside, and the configs
the from-scratch models refuse to load."""

import math

import pytest
import torch
import transformers

from tunelab.scratch import bert, clip, qwen2
from tunelab.scratch.bitfit import apply_bitfit
from tunelab.scratch.bottleneck import Bottleneck
from tunelab.scratch.dpo import dpo_loss
from tunelab.scratch.losses import cross_entropy, perplexity
from tunelab.scratch.transformer import Seq2Seq, TransformerConfig, sinusoidal_positions

pytestmark = pytest.mark.unit


def test_sinusoidal_positions_by_hand():
    """d_model = 4: features 0, 1 turn at 1 radian per position, features 2, 3 at 10000^(-2/4) = 0.01.

    pos 0: [sin 0, cos 0, sin 0,    cos 0   ] = [0,        1,         0,        1       ]
    pos 1: [sin 1, cos 1, sin 0.01, cos 0.01] = [0.841471, 0.540302,  0.010000, 0.999950]
    pos 2: [sin 2, cos 2, sin 0.02, cos 0.02] = [0.909297, -0.416147, 0.019999, 0.999800]
    """
    expected = torch.tensor([[0.0, 1.0, 0.0, 1.0],
                             [0.841471, 0.540302, 0.010000, 0.999950],
                             [0.909297, -0.416147, 0.019999, 0.999800]])
    torch.testing.assert_close(sinusoidal_positions(3, 4), expected, atol=1e-6, rtol=0)


def test_cross_entropy_and_perplexity_by_hand():
    """Two classes. Logits [0, ln 3] give p = [1/4, 3/4]; logits [ln 3, 0] give p = [3/4, 1/4].

    Both targets are class 1: NLL = -ln(3/4) = 0.287682 and -ln(1/4) = 1.386294; the third token is ignored.
    Mean NLL = (0.287682 + 1.386294) / 2 = 0.836988; perplexity = exp(0.836988) = 4 / sqrt(3) = 2.309401.
    """
    ln3 = math.log(3)
    logits = torch.tensor([[0.0, ln3], [ln3, 0.0], [5.0, -5.0]])
    targets = torch.tensor([1, 1, -100])
    assert cross_entropy(logits, targets).item() == pytest.approx(0.836988, abs=1e-6)
    assert perplexity([(logits, targets)]).item() == pytest.approx(2.309401, abs=1e-6)


def test_dpo_loss_by_hand():
    """beta = 0.1, two pairs.

    Pair 1: the policy raised the chosen log-prob from -7 (reference) to -5 and lowered the rejected from -8 to -9.
      chosen reward   = 0.1 * (-5 - -7) =  0.2
      rejected reward = 0.1 * (-9 - -8) = -0.1
      margin = 0.2 - -0.1 = 0.3;  loss = -ln sigmoid(0.3) = ln(1 + e^-0.3) = ln(1.740818) = 0.554355
    Pair 2: the policy equals the reference: rewards 0, margin 0, loss = -ln sigmoid(0) = ln 2 = 0.693147.
    Mean: (0.554355 + 0.693147) / 2 = 0.623751.

    Label smoothing eps = 0.1 adds eps * (-ln sigmoid(-m) + ln sigmoid(m)) = eps * m to each pair, since
    -ln sigmoid(-m) = m - ln sigmoid(m): pair 1 gives 0.554355 + 0.03 = 0.584355, pair 2 stays ln 2.
    Mean: (0.584355 + 0.693147) / 2 = 0.638751.
    """
    policy_chosen, policy_rejected = torch.tensor([-5.0, -4.0]), torch.tensor([-9.0, -6.0])
    ref_chosen, ref_rejected = torch.tensor([-7.0, -4.0]), torch.tensor([-8.0, -6.0])
    out = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=0.1)
    assert out.loss.item() == pytest.approx(0.623751, abs=1e-6)
    torch.testing.assert_close(out.chosen_rewards, torch.tensor([0.2, 0.0]))
    torch.testing.assert_close(out.rejected_rewards, torch.tensor([-0.1, 0.0]))
    smoothed = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=0.1, label_smoothing=0.1)
    assert smoothed.loss.item() == pytest.approx(0.638751, abs=1e-6)


def _seq2seq():
    torch.manual_seed(0)
    cfg = TransformerConfig(d_model=16, nhead=4, num_encoder_layers=1, num_decoder_layers=1,
                            dim_feedforward=32, dropout=0.0)
    return Seq2Seq(cfg, src_vocab=10, tgt_vocab=10, pad_id=0).eval()


def test_seq2seq_decoder_cannot_see_the_future():
    model, src = _seq2seq(), torch.tensor([[5, 6, 7]])
    a = model(src, torch.tensor([[1, 2, 3, 4]]))  # (1, 4, 10)
    b = model(src, torch.tensor([[1, 2, 9, 9]]))  # the last two target tokens changed
    torch.testing.assert_close(a[:, :2], b[:, :2])  # positions 0 and 1 cannot tell
    assert not torch.allclose(a[:, 2:], b[:, 2:])


def test_seq2seq_ignores_source_padding():
    model, tgt = _seq2seq(), torch.tensor([[1, 2, 3]])
    short = model(torch.tensor([[5, 6, 7]]), tgt)
    padded = model(torch.tensor([[5, 6, 7, 0, 0]]), tgt)  # the same source, padded to 5 tokens
    torch.testing.assert_close(short, padded, atol=1e-6, rtol=0)


@pytest.mark.parametrize("build", [
    lambda: qwen2.Qwen2Config.from_hf(transformers.Qwen2Config(
        rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e6})),
    lambda: qwen2.Qwen2Config.from_hf(transformers.Qwen2Config(use_sliding_window=True)),
    lambda: qwen2.Qwen2Config.from_hf(transformers.Qwen2Config(hidden_act="gelu")),
    lambda: bert.BertConfig.from_hf(transformers.BertConfig(hidden_act="relu")),
    lambda: bert.BertConfig.from_hf(transformers.BertConfig(position_embedding_type="relative_key")),
    lambda: clip.CLIPConfig.from_hf(transformers.CLIPConfig(text_config={"hidden_act": "gelu"})),
    lambda: clip.CLIPConfig.from_hf(transformers.CLIPConfig(vision_config={"hidden_act": "gelu"})),
], ids=["qwen2 rope scaling", "qwen2 sliding window", "qwen2 gelu", "bert relu", "bert relative positions",
        "clip text gelu", "clip vision gelu"])
def test_from_hf_refuses_what_the_scratch_code_does_not_implement(build):
    with pytest.raises(ValueError, match="implements"):
        build()


def test_from_hf_accepts_the_defaults():
    qwen2.Qwen2Config.from_hf(transformers.Qwen2Config())
    bert.BertConfig.from_hf(transformers.BertConfig())
    clip.CLIPConfig.from_hf(transformers.CLIPConfig())


def test_bottleneck_adapter_by_hand():
    """hidden 2, size 1: down = [1, 1] with bias 0, up = [2, -1] with bias [0.5, 0], so with h = x1 + x2 and
    g = GELU(h) = h Phi(h) (Phi the standard normal distribution function), y = x + [2 g + 0.5, -g].

    GELU(1) = Phi(1) = 0.841345; GELU(-1) = -Phi(-1) = -(1 - 0.841345) = -0.158655; GELU(0) = 0.
    x = [ 1,    0  ]: h =  1, y = [1 + 1.682689 + 0.5,    0 - 0.841345] = [ 3.182689, -0.841345]
    x = [-0.5, -0.5]: h = -1, y = [-0.5 - 0.317311 + 0.5, -0.5 + 0.158655] = [-0.317311, -0.341345]
    x = [ 0,    0  ]: h =  0, y = [0 + 0 + 0.5,          0 - 0       ] = [ 0.5,       0       ]
    """
    adapter = Bottleneck(hidden=2, size=1)
    with torch.no_grad():
        adapter.down.weight.copy_(torch.tensor([[1.0, 1.0]]))
        adapter.down.bias.zero_()
        adapter.up.weight.copy_(torch.tensor([[2.0], [-1.0]]))
        adapter.up.bias.copy_(torch.tensor([0.5, 0.0]))
        y = adapter(torch.tensor([[1.0, 0.0], [-0.5, -0.5], [0.0, 0.0]]))
    expected = torch.tensor([[3.182689, -0.841345], [-0.317311, -0.341345], [0.5, 0.0]])
    torch.testing.assert_close(y, expected, atol=1e-6, rtol=0)


def test_bitfit_leaves_only_linear_and_layernorm_biases_trainable():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Embedding(3, 4),
                                torch.nn.Linear(4, 2, bias=False))
    assert apply_bitfit(model) == ["0.bias", "1.bias"]
    assert [name for name, p in model.named_parameters() if p.requires_grad] == ["0.bias", "1.bias"]
