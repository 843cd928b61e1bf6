"""Generate with a seq2seq model in batches and score the outputs with ROUGE (offline, English and Chinese)."""

from __future__ import annotations

import dataclasses

import torch

from tunelab.config import GenerateConfig, Recipe
from tunelab.evaluation.generation import check_generate, generation_kwargs
from tunelab.evaluation.rouge import rouge


@torch.no_grad()
def generate(model, tokenizer, sources: list[str], g: GenerateConfig, max_length: int, batch_size: int = 32) -> list[str]:
    """Decoded outputs for `sources` (already prefixed), special tokens dropped."""
    check_generate(g)
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    for start in range(0, len(sources), batch_size):
        enc = tokenizer(sources[start:start + batch_size], return_tensors="pt", padding=True, truncation=True,
                        max_length=max_length).to(device)
        out = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                             **generation_kwargs(g, tokenizer))
        outputs += [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]
    return outputs


def evaluate(model, tokenizer, recipe: Recipe, eval_sets: dict) -> dict:
    """ROUGE of the generated outputs per task; the first task's scores at the top level, the others
    under `tasks`. The generation settings used are recorded with them."""
    out: dict = {}
    for i, (name, ds) in enumerate(eval_sets.items()):
        if recipe.eval.max_samples is not None:
            ds = ds.select(range(min(recipe.eval.max_samples, len(ds))))
        sources, targets = list(ds["source"]), list(ds["target"])
        predictions = generate(model, tokenizer, sources, recipe.eval.generate, recipe.data.max_length,
                               recipe.eval.batch_size)
        scores = {**rouge(predictions, targets, recipe.eval.rouge_language, recipe.eval.rouge_tokenizer),
                  "n": len(predictions),
                  "samples": [{"source": s, "reference": t, "generated": p}
                              for s, t, p in list(zip(sources, targets, predictions))[:3]]}
        if i == 0:
            out.update(scores)
        else:
            out.setdefault("tasks", {})[name] = scores
    out["generation"] = dataclasses.asdict(recipe.eval.generate)
    return out


def print_samples(results: dict) -> None:
    for sample in results["model"].get("samples", []):
        print(f"  in:  {sample['source']}\n  out: {sample['generated']}\n  ref: {sample['reference']}")
    for name, scores in results["model"].get("tasks", {}).items():
        shown = ", ".join(f"{k} {v:.4f}" for k, v in scores.items() if k.startswith("rouge") and isinstance(v, float))
        print(f"task {name}: {shown}")
