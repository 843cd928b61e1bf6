"""Evaluate a causal LM on an eval split: the metrics a recipe's `eval.metrics` asks for."""

from __future__ import annotations

from tunelab.config import Recipe
from tunelab.evaluation.generation import reply_scores
from tunelab.evaluation.perplexity import perplexity

REPLY_METRICS = ("accuracy", "rouge")  # scored on generated replies


def evaluate(model, tokenizer, recipe: Recipe, rows: list[dict]) -> dict:
    if recipe.eval.max_samples is not None:
        rows = rows[:recipe.eval.max_samples]
    out: dict = {}
    if "perplexity" in recipe.eval.metrics:
        out.update(perplexity(model, tokenizer, rows, recipe.data.max_length, recipe.eval.batch_size,
                              recipe.data.loss_on))
    if any(m in recipe.eval.metrics for m in REPLY_METRICS):
        out.update(reply_scores(model, tokenizer, rows, recipe.eval.generate, recipe.eval.metrics,
                                recipe.eval.batch_size, recipe.eval.rouge_language, recipe.eval.rouge_tokenizer))
    return out
