"""Encoder model inputs: records tokenized for BERT-class models, word tags aligned to sub-tokens, and the
longest input a model takes. Shared by the encoder family (training) and its evaluation."""

from __future__ import annotations

from tunelab import adapters
from tunelab.config import Recipe

IGNORE = -100  # the label the loss skips: special tokens and the later sub-tokens of a word


def max_length(recipe: Recipe, model) -> int:
    """data.max_length, but never past the model's learned positions, less the positions PEFT's virtual
    tokens take (prompt tuning prepends them; prefix tuning shifts the position ids by their number)."""
    positions = getattr(model.config, "max_position_embeddings", recipe.data.max_length)
    if recipe.adapter.method in adapters.PROMPT_LEARNING:
        positions -= recipe.adapter.num_virtual_tokens
    return min(recipe.data.max_length, positions)


def align_tags(word_ids: list[int | None], tag_ids: list[int]) -> list[int]:
    """The first sub-token of a word carries the word's tag; its other sub-tokens and the special tokens
    get IGNORE, so the loss counts each word once."""
    labels, previous = [], None
    for word in word_ids:
        labels.append(IGNORE if word is None or word == previous else tag_ids[word])
        previous = word
    return labels


def encode(tokenizer, stage: str, batch: dict, limit: int | None, names: list[str] | None = None) -> dict:
    """Tokenize a batch of records (truncated to `limit` tokens; None: untruncated), with label ids if `names`."""
    truncate = {"truncation": True, "max_length": limit} if limit else {}
    index = {n: i for i, n in enumerate(names or [])}
    if stage == "tag":
        enc = tokenizer(batch["tokens"], is_split_into_words=True, **truncate)
        if names:
            enc["labels"] = [align_tags(enc.word_ids(i), [index[t] for t in tags]) for i, tags in enumerate(batch["tags"])]
        return enc
    enc = tokenizer(batch["text"], batch["text_pair"] if stage == "pair" else None, **truncate)
    if names:
        enc["labels"] = [index[label] for label in batch["label"]]
    return enc


