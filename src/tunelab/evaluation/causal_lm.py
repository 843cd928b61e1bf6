"""Evaluate a causal LM on an eval split: the metrics a recipe's `eval.metrics` asks for."""

from __future__ import annotations

from tunelab.config import Recipe
from tunelab.errors import UserError
from tunelab.evaluation.generation import accuracy
from tunelab.evaluation.perplexity import perplexity

METRICS = ("perplexity", "accuracy")


def evaluate(model, tokenizer, recipe: Recipe, rows: list[dict]) -> dict:
    unknown = [m for m in recipe.eval.metrics if m not in METRICS]
    if unknown:
        raise UserError(f"{recipe.origin('eval.metrics')}: unknown metric {unknown[0]!r} (have: {', '.join(METRICS)})")
    if recipe.eval.max_samples is not None:
        rows = rows[:recipe.eval.max_samples]
    out: dict = {}
    if "perplexity" in recipe.eval.metrics:
        out.update(perplexity(model, tokenizer, rows, recipe.data.max_length, recipe.eval.batch_size))
    if "accuracy" in recipe.eval.metrics:
        out.update(accuracy(model, tokenizer, rows, recipe.eval.generate, recipe.eval.batch_size))
    return out
