"""Evaluate a causal LM on an eval split: the metrics a recipe's `eval.metrics` asks for."""

from __future__ import annotations

from tunelab.config import Recipe
from tunelab.evaluation.generation import generate, reply_scores
from tunelab.rewards import answer_matches
from tunelab.evaluation.perplexity import perplexity

REPLY_METRICS = ("accuracy", "rouge")  # scored on generated replies


def evaluate(model, tokenizer, recipe: Recipe, rows: list[dict]) -> dict:
    if recipe.eval.max_samples is not None:
        rows = rows[:recipe.eval.max_samples]
    if rows and prompt_only(rows[0]):  # no reply to score: the answer of the greedy reply
        replies = generate(model, tokenizer, [r["prompt"] for r in rows], recipe.eval.generate, recipe.eval.batch_size)
        return answer_accuracy(rows, replies)
    out: dict = {}
    if "perplexity" in recipe.eval.metrics:
        out.update(perplexity(model, tokenizer, rows, recipe.data.max_length, recipe.eval.batch_size,
                              recipe.data.loss_on))
    if any(m in recipe.eval.metrics for m in REPLY_METRICS):
        out.update(reply_scores(model, tokenizer, rows, recipe.eval.generate, recipe.eval.metrics,
                                recipe.eval.batch_size, recipe.eval.rouge_language, recipe.eval.rouge_tokenizer))
    return out


def prompt_only(row: dict) -> bool:
    """A record of the prompt format: something to generate from, perhaps with an answer, but no reply."""
    return "prompt" in row and not ({"completion", "chosen", "messages"} & set(row))


def answer_accuracy(rows: list[dict], replies: list[str]) -> dict:
    """Share of replies whose answer is the record's (rewards.exact_answer's rule), over the records with one."""
    answered = [(reply, r["answer"]) for reply, r in zip(replies, rows) if r.get("answer")]
    if not answered:
        return {}
    return {"accuracy": sum(answer_matches(reply, a) for reply, a in answered) / len(answered),
            "accuracy_n": len(answered)}
