"""T5 (tunelab.scratch.t5) against transformers' T5ForConditionalGeneration, with tiny random weights."""

import torch
from transformers import T5Config as HFT5Config
from transformers import T5ForConditionalGeneration as HFT5
from transformers.models.t5.modeling_t5 import T5Attention as HFT5Attention
from transformers.models.t5.modeling_t5 import T5LayerNorm as HFT5LayerNorm

from tunelab.parity import Check
from tunelab.scratch import t5


def _bucket_diff(bidirectional):
    # distances from -300 to 300 reach every exact, log-spaced and clamped bucket, for T5's 32 buckets up to
    # 128 and for the 8 up to 20 of the tiny models below
    relative = torch.arange(-300, 301)
    differ = 0  # positions put in a different bucket
    for num_buckets, max_distance in ((32, 128), (8, 20)):
        ours = t5.relative_position_bucket(relative, bidirectional, num_buckets, max_distance)
        ref = HFT5Attention._relative_position_bucket(relative, bidirectional, num_buckets, max_distance)
        differ += (ours != ref).sum().item()
    return differ


def _layer_norm_diff():
    """In float32, and in bfloat16, where the mean of squares must be taken in float32 as transformers does."""
    torch.manual_seed(0)
    ref = HFT5LayerNorm(32, eps=1e-6)
    torch.nn.init.normal_(ref.weight)
    ours = t5.T5LayerNorm(32, eps=1e-6)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(3, 7, 32) * 4
    worst = (ours(x) - ref(x)).abs().max().item()
    ref, ours, x = ref.bfloat16(), ours.bfloat16(), x.bfloat16()
    return max(worst, (ours(x) - ref(x)).abs().max().item())


def _models(feed_forward_proj, tied):
    torch.manual_seed(0)
    # 8 buckets up to distance 20 so that sequences of ~10 tokens reach the log-spaced buckets
    hf_cfg = HFT5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                        num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=20,
                        feed_forward_proj=feed_forward_proj, tie_word_embeddings=tied, dropout_rate=0.0,
                        decoder_start_token_id=0)
    ref = HFT5(hf_cfg).eval()
    if not tied:
        # transformers 5 ties lm_head to shared even when told not to (an untied checkpoint unties it
        # on load), so untie by hand; std d_model**-0.5 keeps logits O(1) as in a trained flan-t5 head
        ref.lm_head.weight = torch.nn.Parameter(torch.randn_like(ref.shared.weight) * 32**-0.5)
    ours = t5.T5ForConditionalGeneration(t5.T5Config.from_hf(hf_cfg)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def _batch():
    input_ids = torch.randint(2, 64, (3, 11))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 7:] = 0  # right padding
    attention_mask[2, 4:] = 0
    input_ids = input_ids.masked_fill(attention_mask == 0, 0)
    labels = torch.randint(2, 64, (3, 9))
    labels[1, 6:] = -100  # ignored label positions
    return input_ids, attention_mask, labels


def _logits_diff(feed_forward_proj, tied):
    ref, ours = _models(feed_forward_proj, tied)
    input_ids, attention_mask, labels = _batch()
    decoder_input_ids = ours.shift_right(labels)
    with torch.no_grad():
        expected = ref(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids).logits
        got = ours(input_ids, attention_mask, decoder_input_ids=decoder_input_ids)
    return (got - expected).abs().max().item()


def _loss_diff():
    ref, ours = _models("gated-gelu", tied=False)
    input_ids, attention_mask, labels = _batch()
    with torch.no_grad():
        expected = ref(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        _, got = ours(input_ids, attention_mask, labels=labels)
    return (got - expected).abs().item()


def _shift_right_diff():
    ref, ours = _models("relu", tied=True)
    _, _, labels = _batch()
    return (ours.shift_right(labels) != ref._shift_right(labels)).sum().item()  # tokens that differ


_REF = "transformers T5ForConditionalGeneration"
CHECKS = [
    Check("t5 position buckets, bidirectional (encoder)", "transformers T5Attention._relative_position_bucket",
          lambda: _bucket_diff(True), 0),
    Check("t5 position buckets, unidirectional (decoder)", "transformers T5Attention._relative_position_bucket",
          lambda: _bucket_diff(False), 0),
    # in bfloat16 one rounding step is ~1e-2: passing at 1e-6 means both sides take the same steps
    Check("t5 layer norm (RMS, no bias), float32 and bfloat16", "transformers T5LayerNorm", _layer_norm_diff, 1e-6),
    Check("t5 shift right of labels", "transformers T5ForConditionalGeneration._shift_right", _shift_right_diff, 0),
    Check("t5 logits, relu, tied (v1.0)", _REF, lambda: _logits_diff("relu", True), 1e-5),
    Check("t5 logits, relu, untied", _REF, lambda: _logits_diff("relu", False), 1e-5),
    Check("t5 logits, gated-gelu, tied", _REF, lambda: _logits_diff("gated-gelu", True), 1e-5),
    Check("t5 logits, gated-gelu, untied (v1.1, flan)", _REF, lambda: _logits_diff("gated-gelu", False), 1e-5),
    Check("t5 loss with labels", _REF, _loss_diff, 1e-5),
]
