"""T5 span corruption: the corrupted pair rebuilds the text, the noise statistics match the paper's
15% / mean span 3, sentinels run in order, and the collator pads and repeats from its seed."""

import random

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

from tunelab.data.span_corruption import SpanCorruptionCollator, corrupt

pytestmark = pytest.mark.unit

EOS = 1
# Sentinels in the middle of the id range: nothing may assume they are the last ids.
SENTINELS = list(range(1000, 1100))
WORDS = [i for i in range(3, 2000) if i not in SENTINELS]


def split_target(target: list[int]) -> dict[int, list[int]]:
    """sentinel -> the tokens it stands for."""
    spans, current = {}, None
    for tok in target[:-1]:
        if tok in SENTINELS:
            current = spans.setdefault(tok, [])
        else:
            current.append(tok)
    return spans


def rebuild(inputs: list[int], target: list[int]) -> list[int]:
    spans = split_target(target)
    out = []
    for tok in inputs[:-1]:
        out += spans[tok] if tok in SENTINELS else [tok]
    return out


def sample(length: int, rng) -> list[int]:
    return [rng.choice(WORDS) for _ in range(length)]


@pytest.fixture(scope="module")
def tokenizer():
    names = ["<pad>", "</s>", "<unk>"] + [f"w{i}" for i in range(20)]
    names += [f"<extra_id_{i}>" for i in range(100)] + [f"w{i}" for i in range(20, 200)]
    backend = Tokenizer(models.WordLevel(vocab={n: i for i, n in enumerate(names)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   additional_special_tokens=[f"<extra_id_{i}>" for i in range(100)])


@pytest.mark.parametrize("make_rng", [random.Random, np.random.default_rng])
def test_reconstructs_the_original(make_rng):
    rng, data_rng = make_rng(0), random.Random(1)
    for length in list(range(1, 40)) + [100, 257, 512]:
        ids = sample(length, data_rng)
        inputs, target = corrupt(ids, SENTINELS, EOS, rng)
        assert rebuild(inputs, target) == ids


def test_noise_fraction_and_span_length():
    rng, data_rng = random.Random(0), random.Random(1)
    for lengths in ([100] * 2000, [data_rng.randint(50, 300) for _ in range(2000)]):
        noise = spans = total = 0
        for length in lengths:
            inputs, target = corrupt(sample(length, data_rng), SENTINELS, EOS, rng)
            n_spans = sum(t in SENTINELS for t in target)
            spans += n_spans
            noise += len(target) - 1 - n_spans
            total += length
        assert abs(noise / total - 0.15) <= 0.01
        assert abs(noise / spans - 3.0) <= 0.3


def test_spans_land_anywhere():
    """Spans are not pinned to one end: the first and the last token both get corrupted sometimes."""
    rng = random.Random(0)
    ids = list(range(3, 103))
    first = last = 0
    for _ in range(500):
        inputs, _ = corrupt(ids, SENTINELS, EOS, rng)
        first += inputs[0] in SENTINELS
        last += inputs[-2] in SENTINELS
    assert 10 < first < 250 and 10 < last < 250


def test_sentinels_in_order_and_eos_at_the_end():
    rng, data_rng = random.Random(0), random.Random(1)
    for length in (1, 2, 5, 30, 100, 400):
        inputs, target = corrupt(sample(length, data_rng), SENTINELS, EOS, rng)
        in_sentinels = [t for t in inputs if t in SENTINELS]
        assert in_sentinels == SENTINELS[:len(in_sentinels)] == [t for t in target if t in SENTINELS]
        assert target[0] == SENTINELS[0]
        assert inputs[-1] == EOS and target[-1] == EOS
        assert EOS not in inputs[:-1] + target[:-1]


@pytest.mark.parametrize("length", [1, 2, 3])
def test_very_short_sequences(length):
    rng = random.Random(0)
    for _ in range(50):
        ids = WORDS[:length]
        inputs, target = corrupt(ids, SENTINELS, EOS, rng)
        noise = len(target) - 1 - sum(t in SENTINELS for t in target)
        assert noise >= 1
        assert length - noise >= (1 if length >= 2 else 0)
        assert rebuild(inputs, target) == ids


def test_collator_pads_and_is_deterministic(tokenizer):
    features = [{"input_ids": tokenizer(" ".join(f"w{i % 200}" for i in range(n))).input_ids} for n in (40, 7, 120)]
    collator = SpanCorruptionCollator(tokenizer, seed=3)
    assert collator.sentinel_ids == tokenizer.convert_tokens_to_ids([f"<extra_id_{i}>" for i in range(100)])
    batch = collator(features)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    for row, mask, labels, feature in zip(batch["input_ids"], batch["attention_mask"], batch["labels"], features):
        n_in, n_lab = int(mask.sum()), int((labels != -100).sum())
        assert mask.tolist() == [1] * n_in + [0] * (len(mask) - n_in)
        assert (row[n_in:] == tokenizer.pad_token_id).all() and row[n_in - 1] == tokenizer.eos_token_id
        assert (labels[n_lab:] == -100).all() and labels[n_lab - 1] == tokenizer.eos_token_id
        spans = dict(zip(collator.sentinel_ids, range(100)))
        rebuilt, target = [], labels[:n_lab].tolist()
        cuts = [i for i, t in enumerate(target) if t in spans] + [n_lab - 1]
        by_sentinel = {target[a]: target[a + 1:b] for a, b in zip(cuts, cuts[1:])}
        for tok in row[:n_in - 1].tolist():
            rebuilt += by_sentinel[tok] if tok in spans else [tok]
        assert rebuilt == feature["input_ids"]

    again = SpanCorruptionCollator(tokenizer, seed=3)(features)
    assert all(torch.equal(batch[k], again[k]) for k in batch)
    second = collator(features)  # the same collator moves on: new noise for the next batch
    assert not torch.equal(batch["input_ids"], second["input_ids"])

    # What Trainer does with the batch: T5 shifts the labels right itself and returns a loss.
    config = T5Config(vocab_size=len(tokenizer), d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2,
                      decoder_start_token_id=tokenizer.pad_token_id, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id)
    loss = T5ForConditionalGeneration(config)(**batch).loss
    assert torch.isfinite(loss)


def test_collator_truncates_to_max_length(tokenizer):
    batch = SpanCorruptionCollator(tokenizer, max_length=16)([{"input_ids": list(range(3, 23)) * 5}])
    assert batch["input_ids"].shape[1] <= 16
