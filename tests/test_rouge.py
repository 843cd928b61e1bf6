"""ROUGE, our local evaluate metric (tunelab/evaluation/rouge): English matches rouge_score, Chinese is scored."""

import os
import socket
import sys

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")  # before evaluate is imported: its config reads these once

import evaluate  # noqa: E402  (imported here so the tests' timings exclude it)
import pytest
from rouge_score import rouge_scorer

from tunelab.evaluation.rouge import MODULE_DIR, load_metric, rouge

pytestmark = pytest.mark.unit

TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]

ENGLISH = [  # (prediction, reference)
    ("The cat sat on the mat.", "The cat was sitting on the mat."),
    ("Inflation fell to 2 percent.\nThe economy grew 3.5% in 2023.",  # sentences in the other order
     "The economy grew by 3.5% in 2023.\nInflation dropped to 2%.\nUnemployment stayed low."),
    ("", "Nothing was predicted here."),
    ("Running runners ran quickly!", "The runner runs quick, running."),
    ("U.S. officials, on Monday, said: 'no comment.'", "Officials said no comment on Monday."),
    ("Hello world", "hello, WORLD!!!"),
]


def chinese_tokenizer(mode="char", use_stemmer=False):
    # The tokenizer class lives in the module evaluate imported; importing tunelab.evaluation.rouge.rouge
    # ourselves would shadow the rouge() function with the submodule.
    return sys.modules[type(load_metric()).__module__].ChineseTokenizer(mode, use_stemmer)


@pytest.mark.parametrize("use_stemmer", [False, True])
def test_english_equals_rouge_score_mean_f(use_stemmer):
    scorer = rouge_scorer.RougeScorer(TYPES, use_stemmer=use_stemmer)
    per_example = [scorer.score(ref, pred) for pred, ref in ENGLISH]
    expected = {t: sum(s[t].fmeasure for s in per_example) / len(ENGLISH) for t in TYPES}
    got = rouge([p for p, _ in ENGLISH], [r for _, r in ENGLISH], use_stemmer=use_stemmer)
    assert got["rouge_language"] == "en" and got["rouge_tokenizer"] == "default"
    for t in TYPES:
        assert got[t] == pytest.approx(expected[t], abs=1e-9)
        assert isinstance(got[t], float)
    assert expected["rougeLsum"] > expected["rougeL"]  # the newlines matter


def test_stemmer_is_passed_through():
    preds, refs = [p for p, _ in ENGLISH], [r for _, r in ENGLISH]
    assert rouge(preds, refs, use_stemmer=True)["rouge1"] > rouge(preds, refs)["rouge1"]


def test_chinese_by_characters_hand_worked():
    """今天天气很好 vs 今天天气不错, one token per character:
    1-grams: 今 天 天 气 很 好 vs 今 天 天 气 不 错; clipped overlap 今1 + 天2 + 气1 = 4, so P = R = F = 4/6.
    2-grams: 今天 天天 天气 气很 很好 vs 今天 天天 天气 气不 不错; overlap 今天 天天 天气 = 3 of 5 each, F = 0.6.
    LCS: 今天天气 = 4, so rougeL P = R = F = 4/6; no 。！？ and no newline: one sentence, rougeLsum = rougeL.
    """
    got = rouge(["今天天气很好"], ["今天天气不错"])
    assert (got["rouge_language"], got["rouge_tokenizer"]) == ("zh", "char")
    assert got["rouge1"] == pytest.approx(4 / 6, abs=1e-9)
    assert got["rouge2"] == pytest.approx(3 / 5, abs=1e-9)
    assert got["rougeL"] == pytest.approx(4 / 6, abs=1e-9)
    assert got["rougeLsum"] == pytest.approx(4 / 6, abs=1e-9)


def test_chinese_rougelsum_splits_on_sentence_ends():
    """今天天气很好。我们去公园。 vs 我们去公园。今天天气不错。 (11 characters each, punctuation dropped).
    rougeL, one sequence: LCS is 我们去公园 (5) or 今天天气 (4), so 5, F = 5/11.
    rougeLsum, split after 。: reference sentence 我们去公园 is covered by 5, 今天天气不错 by 今天天气 = 4,
    union LCS 9, P = R = F = 9/11.
    """
    got = rouge(["今天天气很好。我们去公园。"], ["我们去公园。今天天气不错。"])
    assert got["rougeL"] == pytest.approx(5 / 11, abs=1e-9)
    assert got["rougeLsum"] == pytest.approx(9 / 11, abs=1e-9)


def test_chinese_char_tokens():
    tokens = chinese_tokenizer().tokenize("iPhone １５ 发布了，售价5999元！")
    assert tokens == ["iphone", "15", "发", "布", "了", "售", "价", "5999", "元"]


def test_chinese_jieba_words_hand_worked():
    """jieba 0.42.1 cuts 今天天气很好 into 今天天气 / 很 / 好 and 今天天气不错 into 今天天气 / 不错.
    1-grams: overlap 今天天气 = 1, P = 1/3, R = 1/2, F = 2PR/(P+R) = (1/3)/(5/6) = 0.4 (chars gave 4/6).
    2-grams: 今天天气很 很好 vs 今天天气不错: none shared, 0. LCS 1: rougeL = 0.4.
    """
    tokenizer = chinese_tokenizer("jieba")
    assert tokenizer.tokenize("今天天气很好。") == ["今天天气", "很", "好"]
    assert tokenizer.tokenize("今天天气不错") == ["今天天气", "不错"]
    got = rouge(["今天天气很好"], ["今天天气不错"], zh_tokenizer="jieba")
    assert got["rouge_tokenizer"] == "jieba"
    assert got["rouge1"] == pytest.approx(0.4, abs=1e-9)
    assert got["rouge2"] == pytest.approx(0.0, abs=1e-9)
    assert got["rougeL"] == pytest.approx(0.4, abs=1e-9)
    assert got["rouge1"] != rouge(["今天天气很好"], ["今天天气不错"])["rouge1"]


def test_rouge_score_default_tokenizer_scores_chinese_zero():
    """Why we tokenize Chinese ourselves: rouge_score keeps only [a-z0-9], so Chinese has no tokens at all."""
    scorer = rouge_scorer.RougeScorer(TYPES)
    assert all(score.fmeasure == 0 for score in scorer.score("今天天气不错", "今天天气很好").values())
    forced = rouge(["今天天气很好"], ["今天天气不错"], language="en")
    assert forced["rouge_language"] == "en" and all(forced[t] == 0 for t in TYPES)


def test_auto_language_detection():
    assert rouge(["今天天气很好"], ["今天天气不错"])["rouge_language"] == "zh"
    assert rouge(["the weather is nice"], ["nice weather today"])["rouge_language"] == "en"
    assert rouge(["the weather is nice"], ["天气不错"])["rouge_language"] == "zh"  # any CJK text decides


def test_loads_from_a_local_path_without_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network used while loading the local ROUGE metric")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for path in (MODULE_DIR, MODULE_DIR / "rouge.py"):  # the directory (what rouge() uses) or the script
        metric = evaluate.load(str(path), keep_in_memory=True)
        assert metric.compute(predictions=["a b"], references=["a c"])["rouge1"] == pytest.approx(0.5)
