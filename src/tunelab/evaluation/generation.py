"""Generation with the model's chat template, stopping where the template ends a turn; exact-match accuracy
and ROUGE of the generated replies."""

from __future__ import annotations

import torch

from tunelab.config import GenerateConfig
from tunelab.data.chat import end_of_turn_ids
from tunelab.data.formats import prompt_and_reference
from tunelab.errors import UserError

THINK_START, THINK_END = "<think>", "</think>"


def check_generate(g: GenerateConfig) -> None:
    if g.max_new_tokens < 1:
        raise UserError(f"generation: max_new_tokens = {g.max_new_tokens} should be >= 1")
    if g.num_beams < 1:
        raise UserError(f"generation: num_beams = {g.num_beams} should be >= 1")
    if g.length_penalty != 1.0 and g.num_beams == 1:
        raise UserError(f"generation: length_penalty = {g.length_penalty} acts only in beam search; "
                        f"set num_beams > 1 or leave length_penalty at 1.0")
    if g.no_repeat_ngram_size < 0:
        raise UserError(f"generation: no_repeat_ngram_size = {g.no_repeat_ngram_size} should be >= 0")
    if g.do_sample and not (g.temperature > 0 and 0 < g.top_p <= 1):
        raise UserError(f"generation: sampling needs temperature > 0 and 0 < top_p <= 1 "
                        f"(got {g.temperature}, {g.top_p})")


def generation_kwargs(g: GenerateConfig, tokenizer) -> dict:
    """Stop at the template's end of turn as well as at eos: a model whose pad token is its eos, or whose
    template ends turns with another token than eos (Llama-3's <|eot_id|>), stops where its reply ends."""
    kwargs = {"max_new_tokens": g.max_new_tokens, "num_beams": g.num_beams, "do_sample": g.do_sample,
              "pad_token_id": tokenizer.pad_token_id, "eos_token_id": end_of_turn_ids(tokenizer)}
    if g.num_beams > 1:
        kwargs["length_penalty"] = g.length_penalty
    if g.no_repeat_ngram_size:
        kwargs["no_repeat_ngram_size"] = g.no_repeat_ngram_size
    if g.do_sample:
        kwargs.update(temperature=g.temperature, top_p=g.top_p)
    return kwargs


def render_prompt(tokenizer, prompt: str | list) -> str:
    if isinstance(prompt, list):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return prompt


@torch.no_grad()
def generate(model, tokenizer, prompts: list, g: GenerateConfig, batch_size: int = 32) -> list[str]:
    """Replies (decoded new tokens, special tokens dropped) for chat-message or plain-text prompts."""
    check_generate(g)
    model.eval()
    device = next(model.parameters()).device
    tokenizer.padding_side = "left"  # decoder-only models continue from the last real token
    replies = []
    for start in range(0, len(prompts), batch_size):
        texts = [render_prompt(tokenizer, p) for p in prompts[start:start + batch_size]]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        out = model.generate(**enc, **generation_kwargs(g, tokenizer))
        new_tokens = out[:, enc["input_ids"].shape[1]:]
        replies += [t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
    return replies


def answer_of(reply: str) -> str:
    """A reply without the reasoning block a thinking model writes first (Qwen3's `<think>...</think>`, empty
    when thinking is off): the reference answer has none, so it is not scored."""
    head, closed, answer = reply.partition(THINK_END)
    return answer.strip() if closed and head.lstrip().startswith(THINK_START) else reply


def reply_scores(model, tokenizer, rows: list[dict], g: GenerateConfig, metrics: list[str], batch_size: int = 32,
                 rouge_language: str = "auto", rouge_tokenizer: str = "char") -> dict:
    """Generate a reply to each record's prompt once; score it against the reference reply by exact match
    (after stripping spaces) and/or ROUGE (Chinese by characters or jieba words), as `metrics` asks."""
    pairs = [p for p in (prompt_and_reference(r) for r in rows) if p is not None]
    if not pairs:
        return {}
    generated = generate(model, tokenizer, [p for p, _ in pairs], g, batch_size)
    replies = [answer_of(reply) for reply in generated]
    references = [reference.strip() for _, reference in pairs]
    out: dict = {}
    if "accuracy" in metrics:
        hits = [reply == reference for reply, reference in zip(replies, references)]
        out.update(accuracy=sum(hits) / len(hits), accuracy_n=len(hits))
    if "rouge" in metrics:
        from tunelab.evaluation.rouge import rouge

        out.update(rouge(replies, references, rouge_language, rouge_tokenizer), rouge_n=len(replies))
    out["samples"] = [{"prompt": p[-1]["content"] if isinstance(p, list) else p, "reference": ref, "generated": reply}
                      for reply, (p, ref) in list(zip(generated, pairs))[:5]]
    return out
