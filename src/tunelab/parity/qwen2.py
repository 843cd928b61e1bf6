"""tunelab.scratch.qwen2 against transformers' Qwen2: norm, RoPE, logits (GQA, MQA and MHA head layouts; float32
and bfloat16), the `labels=` loss, greedy generation, the KV cache, and a real tunelab run directory
(`run_dir_checks`)."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from transformers.models.qwen2 import modeling_qwen2 as hf_qwen2

from tunelab.parity import Check
from tunelab.scratch import qwen2


def tiny_config(tie: bool = True, num_key_value_heads: int = 2) -> transformers.Qwen2Config:
    """4 query heads; 2 key/value heads (GQA) unless told 1 (MQA) or 4 (MHA)."""
    return transformers.Qwen2Config(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=num_key_value_heads,
                                    tie_word_embeddings=tie)


def tiny_hf_qwen2(tie: bool = True, seed: int = 0, std: float = 0.3,
                  num_key_value_heads: int = 2) -> transformers.Qwen2ForCausalLM:
    """A random 2-layer Qwen2. Every parameter is redrawn with a large std: HF's init leaves the q/k/v
    biases at zero (they would go untested) and gives near-uniform next-token distributions, whose
    near-ties could flip a greedy or beam choice on rounding noise alone."""
    torch.manual_seed(seed)
    model = transformers.Qwen2ForCausalLM(tiny_config(tie, num_key_value_heads)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
    return model


def rmsnorm_diff() -> float:
    torch.manual_seed(0)
    ref = hf_qwen2.Qwen2RMSNorm(48, eps=1e-6)
    ours = qwen2.RMSNorm(48, eps=1e-6)
    with torch.no_grad():
        ref.weight.normal_()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(3, 7, 48) * 5
    return (ours(x) - ref(x)).abs().max().item()


def rope_diff() -> float:
    hf_cfg = tiny_config()
    ref = hf_qwen2.Qwen2RotaryEmbedding(hf_cfg)
    ours = qwen2.RotaryEmbedding(qwen2.Qwen2Config.from_hf(hf_cfg))
    position_ids = torch.stack([torch.arange(64), torch.arange(64).flip(0) * 100])  # (2, 64), far ones too
    ref_cos, ref_sin = ref(torch.zeros(1), position_ids)
    cos, sin = ours(position_ids)
    return max((cos - ref_cos).abs().max().item(), (sin - ref_sin).abs().max().item())


def left_padded_batch():
    """Three rows of 12 tokens, the last two left-padded by 4 and 9; positions count from each row's first
    real token, as in generation."""
    input_ids = torch.randint(0, 96, (3, 12))
    attention_mask = torch.ones(3, 12, dtype=torch.long)
    attention_mask[1, :4] = 0
    attention_mask[2, :9] = 0
    return input_ids, attention_mask, (attention_mask.cumsum(-1) - 1).clamp(min=0)


def real_token_logits(tie: bool = True, num_key_value_heads: int = 2, dtype=torch.float32, attention: str = "sdpa"):
    """(ours, reference) logits of a left-padded batch, on real tokens only: padded query rows see no key at
    all and their outputs are meaningless."""
    hf = tiny_hf_qwen2(tie=tie, num_key_value_heads=num_key_value_heads).to(dtype)
    hf.set_attn_implementation(attention)
    ours = qwen2.Qwen2ForCausalLM.from_hf(hf)
    input_ids, attention_mask, position_ids = left_padded_batch()
    with torch.no_grad():
        ref = hf(input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
        got = ours(input_ids, attention_mask=attention_mask, position_ids=position_ids)
    real = attention_mask.bool()
    return got[real], ref[real]


def logits_diff(tie: bool = True, num_key_value_heads: int = 2) -> float:
    got, ref = real_token_logits(tie, num_key_value_heads)
    return (got - ref).abs().max().item()


def labels_loss_diff() -> float:
    """The mean next-token loss over a right-padded batch, as training batches are padded, with the padding and
    a 3-token "prompt" labelled -100: the shift and the skipped targets both matter. (Left padding would make
    a padding position predict the first real token, with logits that mean nothing.)"""
    hf = tiny_hf_qwen2(seed=3)
    ours = qwen2.Qwen2ForCausalLM.from_hf(hf)
    input_ids = torch.randint(0, 96, (3, 12))
    attention_mask = torch.ones(3, 12, dtype=torch.long)
    attention_mask[1, 8:] = 0
    attention_mask[2, 5:] = 0
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    labels[:, :3] = -100
    with torch.no_grad():
        ref = hf(input_ids, attention_mask=attention_mask, labels=labels).loss
        _, got = ours(input_ids, attention_mask, labels=labels)
    return abs(got.item() - ref.item())


def token_diff(a: torch.Tensor, b: torch.Tensor) -> int:
    """Tokens that differ between two sequences (or batches of them); each token of length difference
    counts as one."""
    n = min(a.shape[-1], b.shape[-1])
    rows = a.numel() // a.shape[-1]
    return int((a[..., :n] != b[..., :n]).sum()) + abs(a.shape[-1] - b.shape[-1]) * rows


def greedy_diff(left_padded: bool) -> int:
    """Two prompts, with an end token that one row emits early: that row must stop while the other goes on.
    Left-padded: the second prompt is 2 tokens shorter."""
    hf = tiny_hf_qwen2(seed=1)
    ours = qwen2.Qwen2ForCausalLM.from_hf(hf)
    prompt = torch.randint(0, 96, (2, 5))
    attention_mask = torch.ones_like(prompt)
    if left_padded:
        attention_mask[1, :2] = 0
    eos = int(ours.generate(prompt, max_new_tokens=6, attention_mask=attention_mask)[0, -1])
    # HF fills finished rows with pad_token_id, ours with the end token; an explicit attention_mask,
    # or HF would take the prompt's copies of the pad token for padding
    ref = hf.generate(prompt, attention_mask=attention_mask, do_sample=False, max_new_tokens=20,
                      eos_token_id=eos, pad_token_id=eos)
    got = ours.generate(prompt, max_new_tokens=20, eos_token_id=eos, attention_mask=attention_mask)
    return token_diff(got, ref)


def incremental_diff(hf, ours, cache) -> float:
    """Ours fed a 6-token prompt in one pass, then one token at a time through `cache` (the mask growing with
    it), against transformers' one pass over the whole left-padded batch, on real tokens."""
    input_ids, attention_mask, position_ids = left_padded_batch()
    with torch.no_grad():
        ref = hf(input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
        chunks = [slice(0, 6)] + [slice(t, t + 1) for t in range(6, 12)]
        got = torch.cat([ours(input_ids[:, c], attention_mask[:, :c.stop], position_ids[:, c], cache)
                         for c in chunks], dim=1)  # (3, 12, vocab)
    real = attention_mask.bool()
    return (got[real] - ref[real]).abs().max().item()


def cache_diff() -> float:
    """Ours through our KV cache against transformers without one."""
    hf = tiny_hf_qwen2(seed=2)
    ours = qwen2.Qwen2ForCausalLM.from_hf(hf)
    return incremental_diff(hf, ours, qwen2.KVCache(len(ours.model.layers)))


PROMPTS = ["The capital of France is", "Question: what is two plus two?\nAnswer:", "Hello"]


def run_dir_logits(run_dir: Path):
    """(ours, reference): our model on the weights of a finished run (LoRA merged in) against the transformers
    model tunelab itself loads for that run, on the real tokens of a right-padded batch of prompts."""
    from tunelab.families.causal_lm import load_run

    ref, tokenizer = load_run(run_dir, merge=True)
    ref.eval()
    ours = qwen2.Qwen2ForCausalLM.from_hf(ref)
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        want = ref(**batch).logits
        got = ours(batch["input_ids"], attention_mask=batch["attention_mask"])
    real = batch["attention_mask"].bool()
    return got[real], want[real]


# torch.testing.assert_close's float32 defaults: trained logits reach 10-30 rather than ~1 and float32 rounding
# grows with them (seen: ~3e-6), so the allowance grows with each logit instead of a fixed, hand-tuned one.
F32_ATOL, F32_RTOL = 1e-5, 1.3e-6
# ... and its bfloat16 ones: 8 significant bits, one unit in the last place is 0.008 for a logit in [1, 2).
# The reference runs eager attention (the same operations in the same order), and the logits come out equal.
# transformers' default sdpa kernel sums in another order and lands up to 4 units apart (0.03 over 6 seeds and
# the 3 head layouts); a tolerance wide enough for that (5e-2) would also pass an RMSNorm computed in bfloat16
# instead of float32 (0.04 against sdpa), which fails this row.
BF16_ATOL, BF16_RTOL = 1e-5, 1.6e-2


def run_dir_checks(run_dir: Path) -> list[Check]:
    return [Check(f"qwen2 logits, run {Path(run_dir).name}", "tunelab.families.causal_lm.load_run(merge=True)",
                  lambda: run_dir_logits(Path(run_dir)), F32_ATOL, rtol=F32_RTOL)]


def embedded_run_logits():
    from tunelab import checkpoints

    checkpoints.build_embedded()  # no-op when the cache has it (tests/conftest.py builds a quick one)
    return run_dir_logits(checkpoints.embedded_run_dir())


CHECKS = [
    Check("qwen2 rmsnorm", "transformers Qwen2RMSNorm", rmsnorm_diff, 1e-6),
    Check("qwen2 rope cos/sin", "transformers Qwen2RotaryEmbedding", rope_diff, 1e-6),
    Check("qwen2 logits, tied, left-padded", "transformers Qwen2ForCausalLM", lambda: logits_diff(tie=True), 1e-5),
    Check("qwen2 logits, untied, left-padded", "transformers Qwen2ForCausalLM", lambda: logits_diff(tie=False), 1e-5),
    Check("qwen2 logits, MQA (1 kv head for 4), left-padded", "transformers Qwen2ForCausalLM",
          lambda: logits_diff(num_key_value_heads=1), 1e-5),
    Check("qwen2 logits, MHA (4 kv heads for 4), left-padded", "transformers Qwen2ForCausalLM",
          lambda: logits_diff(num_key_value_heads=4), 1e-5),
    Check("qwen2 logits, bfloat16, left-padded", "transformers Qwen2ForCausalLM in bfloat16, eager attention",
          lambda: real_token_logits(dtype=torch.bfloat16, attention="eager"), BF16_ATOL, rtol=BF16_RTOL),
    Check("qwen2 labels loss, prompt and padding -100", "transformers Qwen2ForCausalLM(labels=).loss",
          labels_loss_diff, 1e-5),
    Check("qwen2 greedy tokens (KV cache)", "transformers generate(do_sample=False)", lambda: greedy_diff(False), 0),
    Check("qwen2 greedy tokens, left-padded prompts", "transformers generate(do_sample=False, attention_mask)",
          lambda: greedy_diff(True), 0),
    Check("qwen2 logits through the KV cache, left-padded", "transformers Qwen2ForCausalLM, one pass",
          cache_diff, 1e-5),
    Check("qwen2 logits, embedded run", "tunelab.families.causal_lm.load_run(embedded default)", embedded_run_logits,
          F32_ATOL, rtol=F32_RTOL),
]
