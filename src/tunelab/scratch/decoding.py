"""Greedy and beam search from scratch, for any model that can score the next token.

A model enters only as `next_logprobs(prefixes)`: (n, t) token prefixes in, (n, vocab) log-probabilities
of each one's next token out. For a causal LM (scratch/qwen2.py) a prefix is the prompt plus what has
been generated; for an encoder-decoder (scratch/t5.py) it is the decoder's input, and the encoded source
is closed over. Each step reruns the whole prefixes, without a KV cache: simple, and for short outputs
cheap (qwen2.py's `generate` shows the cache).

Beam search follows transformers' rules, so that both return the same tokens; they are spelled out in
`beam_search`. Background: https://huggingface.co/blog/how-to-generate
HF source: https://github.com/huggingface/transformers/blob/main/src/transformers/generation/utils.py (_beam_search)
"""

from __future__ import annotations

from typing import Callable, Literal

import torch

NextLogProbs = Callable[[torch.Tensor], torch.Tensor]  # (n, t) prefixes -> (n, vocab) next-token log-probs


def causal_lm(model) -> NextLogProbs:
    """For a model mapping (n, t) token ids to (n, t, vocab) logits, e.g. scratch Qwen2ForCausalLM."""
    return lambda prefixes: model(prefixes)[:, -1].log_softmax(dim=-1)


def seq2seq(model, input_ids, attention_mask=None) -> NextLogProbs:
    """For scratch T5: the source (1, S) is encoded once; every decoder prefix attends to it."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    memory = model.encode(input_ids, attention_mask)  # (1, S, C)

    def next_logprobs(prefixes):  # (n, t) -> (n, vocab)
        n = len(prefixes)
        logits = model.decode(prefixes, memory.expand(n, -1, -1), attention_mask.expand(n, -1))  # (n, t, vocab)
        return logits[:, -1].log_softmax(dim=-1)

    return next_logprobs


@torch.no_grad()
def greedy(next_logprobs: NextLogProbs, prompt, max_new_tokens: int, eos_token_id: int | None = None):
    """The single most likely token at every step. prompt (t,) -> (t + generated,), eos included."""
    seq = prompt
    for _ in range(max_new_tokens):
        token = next_logprobs(seq[None])[0].argmax()
        seq = torch.cat((seq, token[None]))
        if token == eos_token_id:
            break
    return seq


@torch.no_grad()
def beam_search(next_logprobs: NextLogProbs, prompt, num_beams: int, max_new_tokens: int,
                eos_token_id: int | None = None, length_penalty: float = 1.0,
                early_stopping: bool | Literal["never"] = False):
    """Follow the num_beams best partial sequences instead of one. prompt (t,) -> (t + generated,).

    A running beam is scored by the sum of its token log-probs. A beam ends when it emits eos or reaches
    max_new_tokens; it is then scored by that sum / (tokens generated, eos included) ** length_penalty
    (> 0 favours long outputs, < 0 short ones) and competes for one of num_beams finished places.
    transformers' rules, which decide the output:
    - each step ranks the best 2 * num_beams continuations of all beams together, so that num_beams can
      run on even if num_beams of them end; an ending one counts only if it ranks in the top num_beams.
    - once num_beams have finished, the search stops: at once if early_stopping is True; if it is False,
      when the best running beam, scored as if it ended now, is no better than the worst finished one;
      if "never", likewise but scored at the length that would suit it best (max_new_tokens when
      length_penalty > 0), which only stops when no running beam can still win.
    The best finished sequence is returned.
    """
    beams = prompt[None]  # (n, t): one beam to start, num_beams from the first step on
    scores = torch.zeros(1, device=prompt.device)  # (n,) summed log-probs, float32 like transformers'
    finished: list[tuple[float, torch.Tensor]] = []  # (normalised score, sequence), best first
    for step in range(1, max_new_tokens + 1):  # step = tokens generated once this one is added
        logprobs = scores[:, None] + next_logprobs(beams)  # (n, vocab)
        vocab = logprobs.shape[1]
        top_scores, top_ids = logprobs.flatten().topk(2 * num_beams)  # (2*num_beams,) each
        running = []
        for rank, (score, flat_id) in enumerate(zip(top_scores, top_ids.tolist())):
            beam, token = divmod(flat_id, vocab)
            seq = torch.cat((beams[beam], torch.tensor([token], device=beams.device)))
            if token == eos_token_id or step == max_new_tokens:
                if rank < num_beams:
                    finished.append(((score / step**length_penalty).item(), seq))
            elif len(running) < num_beams:
                running.append((score, seq))
        finished = sorted(finished, key=lambda f: f[0], reverse=True)[:num_beams]
        full = len(finished) == num_beams
        if step == max_new_tokens or (full and (early_stopping is True or cannot_improve(
                running[0][0], finished[-1][0], step, max_new_tokens, length_penalty, early_stopping))):
            break
        scores = torch.stack([score for score, _ in running])  # (num_beams,), best first
        beams = torch.stack([seq for _, seq in running])  # (num_beams, t + step)
    return finished[0][1]


def cannot_improve(best_running: torch.Tensor, worst_finished: float, step: int, max_new_tokens: int,
                   length_penalty: float, early_stopping: bool | str) -> bool:
    # A running score only falls as tokens are added, but dividing by length ** penalty can raise it:
    # "never" assumes the most favourable length, False (the default) a heuristic, the current one.
    length = max_new_tokens if early_stopping == "never" and length_penalty > 0 else step
    return bool(best_running / length**length_penalty <= worst_finished)
