"""tunelab.scratch.decoding against transformers' generate: beam search over our Qwen2 and our T5, and
greedy search over our T5, token for token (the checks count tokens that differ)."""

from __future__ import annotations

import torch
import transformers

from tunelab.parity import Check
from tunelab.parity.qwen2 import tiny_hf_qwen2, token_diff
from tunelab.scratch import decoding, qwen2, t5

# (num_beams, length_penalty, early_stopping): transformers' defaults first, then each knob moved;
# at (2, 2.0) each early_stopping rule gives another answer than the others would, for these weights
BEAM_SETTINGS = [(2, 1.0, False), (4, 1.0, False), (3, 0.5, False), (3, -1.0, True),
                 (2, 2.0, False), (2, 2.0, "never"), (2, 2.0, True)]
MAX_NEW_TOKENS = 12


def eos_in_reach(next_logprobs, prefix) -> int:
    """An end token the search will meet: the one greedy picks at its fourth step. Random weights rarely
    pick a fixed id, and then beams would only ever end at max_new_tokens."""
    return int(decoding.greedy(next_logprobs, prefix, 4)[-1])


def beam_qwen2_diff() -> int:
    hf = tiny_hf_qwen2(seed=3)
    ours = decoding.causal_lm(qwen2.Qwen2ForCausalLM.from_hf(hf))
    diffs = 0
    for prompt in torch.randint(0, 96, (2, 5)):
        eos = eos_in_reach(ours, prompt)
        for num_beams, length_penalty, early_stopping in BEAM_SETTINGS:
            ref = hf.generate(prompt[None], attention_mask=torch.ones(1, 5, dtype=torch.long), do_sample=False,
                              num_beams=num_beams, length_penalty=length_penalty, early_stopping=early_stopping,
                              max_new_tokens=MAX_NEW_TOKENS, eos_token_id=eos, pad_token_id=eos)[0]
            got = decoding.beam_search(ours, prompt, num_beams, MAX_NEW_TOKENS, eos, length_penalty, early_stopping)
            diffs += token_diff(got, ref)
    return diffs


def tiny_t5():
    torch.manual_seed(4)
    cfg = transformers.T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                                num_heads=4, feed_forward_proj="gated-gelu", dropout_rate=0.0, decoder_start_token_id=0)
    hf = transformers.T5ForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # peaked next-token distributions: no near-ties for rounding to flip
        for p in hf.parameters():
            p.normal_(0.0, 0.5)
    ours = t5.T5ForConditionalGeneration(t5.T5Config.from_hf(cfg)).eval()
    ours.load_state_dict(hf.state_dict(), strict=True)
    return hf, ours


def t5_diff(beam_settings) -> int:
    """Each source sentence through HF generate and through our search over our T5."""
    hf, ours = tiny_t5()
    start = torch.tensor([hf.config.decoder_start_token_id])
    diffs = 0
    for source in torch.randint(2, 64, (2, 7)):
        next_logprobs = decoding.seq2seq(ours, source[None])
        eos = eos_in_reach(next_logprobs, start)
        for num_beams, length_penalty, early_stopping in beam_settings:
            ref = hf.generate(source[None], do_sample=False, num_beams=num_beams, length_penalty=length_penalty,
                              early_stopping=early_stopping, max_new_tokens=MAX_NEW_TOKENS, eos_token_id=eos)[0]
            if num_beams == 1:
                got = decoding.greedy(next_logprobs, start, MAX_NEW_TOKENS, eos)
            else:
                got = decoding.beam_search(next_logprobs, start, num_beams, MAX_NEW_TOKENS, eos, length_penalty,
                                           early_stopping)
            diffs += token_diff(got, ref)
    return diffs


CHECKS = [
    Check("beam search qwen2", "transformers Qwen2ForCausalLM.generate(num_beams=k)", beam_qwen2_diff, 0),
    Check("beam search t5", "transformers T5ForConditionalGeneration.generate(num_beams=k)",
          lambda: t5_diff(BEAM_SETTINGS), 0),
    Check("greedy search t5", "transformers T5ForConditionalGeneration.generate(do_sample=False)",
          lambda: t5_diff([(1, 1.0, False)]), 0),
]
