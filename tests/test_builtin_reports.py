"""Built-in T5 sets: deterministic, held-out cities, targets that follow from their sources, no eval answer in the corpus."""

import re

import pytest

from tunelab.data import builtin_reports as reports_module
from tunelab.data.builtin_reports import corpus, corpus_eval, reports, rewrites

pytestmark = pytest.mark.unit

LANGUAGES = ("en", "zh")


def held_out_cities(language):
    return reports_module._WORLD[language]["cities"][-reports_module._HELD_OUT:]


@pytest.mark.parametrize("language", LANGUAGES)
def test_reports_are_deterministic_and_sized(language):
    assert reports(language, "train") == reports(language, "train")
    assert len(reports(language, "train")) == 1500 and len(reports(language, "eval")) == 150
    assert corpus(language) == corpus(language) and len(corpus_eval(language)) == 200
    assert rewrites("train") == rewrites("train")
    assert len(rewrites("train")) == 800 and len(rewrites("eval")) == 100


@pytest.mark.parametrize("language", LANGUAGES)
def test_eval_cities_never_appear_in_train(language):
    train_text = " ".join(r["source"] + " " + r["target"] for r in reports(language, "train"))
    if language == "en":
        train_text += " " + " ".join(r["source"] + " " + r["target"] for r in rewrites("train"))
    cities = held_out_cities(language)
    assert not [c for c in cities if c in train_text]
    assert all(any(c in r["source"] for c in cities) for r in reports(language, "eval"))


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("split", ("train", "eval"))
def test_headline_follows_from_its_report(language, split):
    world = reports_module._WORLD[language]
    for record in reports(language, split):
        source, target = record["source"], record["target"]
        city = next(c for c in world["cities"] if target.startswith(c))
        month = max((m for m in world["months"] if m in target), key=len)
        value = int(re.findall(r"\d+", target)[-1])
        # the one sentence naming the city, the month and the value states the move, from one figure to the other
        sentences = [s for s in re.split(r"(?<=[.。]) ?", source)
                     if city in s and month in s and value in map(int, re.findall(r"\d+", s))]
        assert len(sentences) == 1, record
        (before,) = [n for n in map(int, re.findall(r"\d+", sentences[0])) if n != value]
        assert world["dirs"]["up" if value > before else "down"] in target


def test_rewrite_is_the_passive_of_its_source():
    cities = reports_module._WORLD["en"]["cities"]
    for record in rewrites("train") + rewrites("eval"):
        source, target = record["source"], record["target"]
        agent = next(a for a in reports_module._AGENTS if a.lower() in source.lower())
        assert f" by {agent}" in target
        verbs = reports_module._VERBS
        assert any(f" {past} " in source and f" {participle} by " in target for past, participle in verbs)
        assert (" were " in target) == (" two " in source)
        assert next(c for c in cities if c in source) in target


@pytest.mark.parametrize("language", LANGUAGES)
def test_corpus_holds_no_eval_answer(language):
    text = "\n".join(d["text"] for d in corpus(language))
    targets = [r["target"] for r in reports(language, "eval")]
    if language == "en":
        targets += [r["target"] for r in rewrites("eval")] + [r["source"] for r in rewrites("eval")]
    assert not [t for t in targets if t in text]
    assert not [r["source"] for r in reports(language, "eval") if r["source"] in text]


def test_chinese_records_are_chinese():
    cjk = re.compile(r"[\u4e00-\u9fff]")
    for record in reports("zh", "train") + reports("zh", "eval"):
        assert cjk.search(record["source"]) and cjk.search(record["target"])
    assert all(cjk.search(d["text"]) for d in corpus("zh") + corpus_eval("zh"))
