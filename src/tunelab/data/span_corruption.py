"""T5's span-corruption pretraining objective (Raffel et al. 2020, "Exploring the Limits of Transfer
Learning with a Unified Text-to-Text Transformer", section 3.1.4), as a data collator.

About 15% of the tokens (`noise_density`) are dropped in spans of mean length 3
(`mean_noise_span_length`). Each dropped span becomes one sentinel in the input; the target lists
each sentinel followed by the tokens it replaced, in order. Both end with EOS. Example (spans "for
inviting" and "last"):

    tokens:  Thank you for inviting me to your party last week .
    input:   Thank you <extra_id_0> me to your party <extra_id_1> week . </s>
    target:  <extra_id_0> for inviting <extra_id_1> last </s>

Counts: noise tokens = max(1, round(length * density)), kept to at least one kept token when
length >= 2; spans = max(1, round(noise tokens / mean span length)). Span lengths and the kept runs
between them are uniformly random compositions, so spans always alternate with kept runs.
"""

from __future__ import annotations

import random

import numpy as np
import torch

IGNORE_INDEX = -100  # positions the loss skips (the label padding)


def _composition(total: int, parts: int, rng) -> list[int]:
    """`total` split into `parts` positive integers, uniformly over all such splits: `parts - 1`
    distinct cut points among the `total - 1` gaps between items."""
    if isinstance(rng, random.Random):
        cuts = sorted(rng.sample(range(1, total), parts - 1))
    else:  # numpy Generator
        cuts = sorted(int(c) + 1 for c in rng.choice(total - 1, parts - 1, replace=False))
    bounds = [0, *cuts, total]
    return [b - a for a, b in zip(bounds, bounds[1:])]


def corrupt(ids: list[int], sentinel_ids: list[int], eos_id: int, rng: random.Random | np.random.Generator,
            noise_density: float = 0.15, mean_noise_span_length: float = 3.0) -> tuple[list[int], list[int]]:
    """(input_ids, target_ids) for one sequence `ids` (without EOS)."""
    length = len(ids)
    if length == 0:
        raise ValueError("span corruption needs at least one token")
    noise = max(1, round(length * noise_density))
    if length >= 2:
        noise = min(noise, length - 1)  # keep something for the encoder to read
    kept = length - noise
    # Each interior kept run needs a token, so `kept` bounds the span count too.
    spans = max(1, min(round(noise / mean_noise_span_length), noise, kept + 1))
    if spans > len(sentinel_ids):
        raise ValueError(f"{spans} noise spans but only {len(sentinel_ids)} sentinel tokens; "
                         "use shorter sequences or a tokenizer with more <extra_id_N>")

    span_lengths = _composition(noise, spans, rng)
    # spans + 1 kept runs; the interior ones are >= 1 (else two spans would merge), the two ends
    # may be empty, so the text may start or end with a span. A composition of kept + 2 into
    # spans + 1 positive parts, less one at each end, is uniform over exactly those layouts.
    runs = _composition(kept + 2, spans + 1, rng)
    runs[0] -= 1
    runs[-1] -= 1

    inputs, targets, pos = [], [], 0
    for i, span in enumerate(span_lengths):
        inputs += ids[pos:pos + runs[i]]
        pos += runs[i]
        inputs.append(sentinel_ids[i])
        targets += [sentinel_ids[i], *ids[pos:pos + span]]
        pos += span
    inputs += ids[pos:]
    return inputs + [eos_id], targets + [eos_id]


class SpanCorruptionCollator:
    """`data_collator` for `Trainer` with a T5 model: features hold "input_ids" (a text's tokens, no
    EOS); returns padded input_ids, attention_mask and labels (-100 on padding). The model shifts
    labels right itself to make the decoder inputs.

    The rng lives in the collator, so every batch gets fresh noise and a run is reproducible from
    `seed`. (With DataLoader workers > 0 each worker would get a copy of the same rng state and
    repeat the same noise; Trainer's default is 0 workers.)"""

    def __init__(self, tokenizer, noise_density: float = 0.15, mean_noise_span_length: float = 3.0,
                 max_length: int | None = 512, seed: int = 0):
        if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
            raise ValueError("span corruption needs a tokenizer with pad and EOS tokens")
        self.tokenizer = tokenizer
        self.noise_density = noise_density
        self.mean_noise_span_length = mean_noise_span_length
        self.max_length = max_length
        self.rng = random.Random(seed)
        # Look the sentinels up by name: their ids need not be the last in the vocabulary.
        self.sentinel_ids = []
        while (tok := tokenizer.convert_tokens_to_ids(f"<extra_id_{len(self.sentinel_ids)}>")) not in (
                None, tokenizer.unk_token_id):
            self.sentinel_ids.append(tok)
        if not self.sentinel_ids:
            raise ValueError("the tokenizer has no <extra_id_0> sentinel token")

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        pairs = []
        for feature in features:
            ids = [int(t) for t in feature["input_ids"]]
            if self.max_length is not None:
                ids = ids[:self.max_length - 1]  # room for EOS (corruption only shortens the input)
            pairs.append(corrupt(ids, self.sentinel_ids, self.tokenizer.eos_token_id, self.rng,
                                 self.noise_density, self.mean_noise_span_length))
        pad = self.tokenizer.pad_token_id
        width = max(len(inp) for inp, _ in pairs)
        label_width = max(len(tgt) for _, tgt in pairs)
        return {
            "input_ids": torch.tensor([inp + [pad] * (width - len(inp)) for inp, _ in pairs]),
            "attention_mask": torch.tensor([[1] * len(inp) + [0] * (width - len(inp)) for inp, _ in pairs]),
            "labels": torch.tensor([tgt + [IGNORE_INDEX] * (label_width - len(tgt)) for _, tgt in pairs]),
        }
