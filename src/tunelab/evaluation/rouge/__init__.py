"""ROUGE for English and Chinese, offline: our own local `evaluate` metric (rouge.py, here).

`evaluate.load("rouge")` needs the Hugging Face Hub, and rouge_score's default tokenizer drops non-ASCII
text, scoring Chinese 0; this module loads rouge.py by its directory's path and tokenizes Chinese itself.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parent  # holds rouge.py: evaluate loads a directory by its same-named script


@lru_cache(maxsize=1)
def load_metric():
    """The metric, loaded once with evaluate.load(<absolute path of this directory>), kept in memory.

    evaluate copies rouge.py into HF_MODULES_CACHE (default ~/.cache/huggingface/modules) to import it,
    so that folder must be writable; keep_in_memory=True spares the Arrow cache files under HF_METRICS_CACHE.
    """
    import evaluate

    return evaluate.load(str(MODULE_DIR), keep_in_memory=True)


def rouge(predictions, references, language="auto", zh_tokenizer="char", use_stemmer=False) -> dict:
    """Mean ROUGE-1/2/L/Lsum F-measures over examples, plus rouge_language ("en"/"zh") and rouge_tokenizer
    ("default" for English, else "char"/"jieba")."""
    result = load_metric().compute(predictions=list(predictions), references=list(references),
                                   language=language, zh_tokenizer=zh_tokenizer, use_stemmer=use_stemmer)
    result["rouge_language"] = result.pop("language")
    result["rouge_tokenizer"] = result.pop("tokenizer")
    return result
