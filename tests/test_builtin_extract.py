"""Built-in extraction sets: deterministic, house-style JSON whose values the text states, held-out eval people,
preference pairs whose rejected reply is a real mistake."""

import json
import re

import pytest

from tunelab.data import builtin, formats
from tunelab.data.builtin_extract import KEYS, extraction, extraction_preference
from tunelab.data.readers import read_records

pytestmark = pytest.mark.unit

LANGUAGES = ("en", "zh")
NAMES = ("extract_train", "extract_eval", "extract_en_eval", "extract_zh_eval", "extract_preference_train",
         "extract_preference_eval")
CJK = re.compile(r"[\u4e00-\u9fff]")


def house_style(reply: str) -> dict | None:
    """The parsed reply if it is one line of JSON in the house style (the four keys in order, the age an int,
    json.dumps's default separators, nothing around it), else None."""
    try:
        parsed = json.loads(reply)
    except json.JSONDecodeError:
        return None
    if not isinstance(parsed, dict) or tuple(parsed) != KEYS or type(parsed["age"]) is not int:
        return None
    return parsed if json.dumps(parsed, ensure_ascii=False) == reply else None


def user_and_reply(record: dict) -> tuple[str, str]:
    if "messages" in record:
        user, reply = record["messages"]
    else:
        (user,), (reply,) = record["prompt"], record["chosen"]
    assert user["role"] == "user" and reply["role"] == "assistant"
    return user["content"], reply["content"]


def text_of(user: str) -> str:
    """The text after the instruction."""
    return re.split(r"\n\n(?:Text: |文字：)", user, maxsplit=1)[1]


def all_records(split: str) -> list[dict]:
    return [r for lang in LANGUAGES for r in extraction(lang, split) + extraction_preference(lang, split)]


def test_sets_are_deterministic_and_sized():
    for name in NAMES:
        make, _ = builtin.DATASETS[name]
        assert make() == make(), name
    sizes = {name: len(builtin.DATASETS[name][0]()) for name in NAMES}
    assert sizes == {"extract_train": 320, "extract_eval": 48, "extract_en_eval": 24, "extract_zh_eval": 24,
                     "extract_preference_train": 192, "extract_preference_eval": 32}


def test_sets_pass_tunelabs_format_checks():
    for name in NAMES:
        fmt = builtin.DATASETS[name][1]
        records = read_records(f"builtin:{name}")
        assert records.implied_format == fmt == ("preference" if "preference" in name else "messages")
        formats.check(records, fmt)
        ds = formats.to_dataset(records, fmt)
        assert len(ds) == len(records.rows)


def test_no_system_turn():
    for name in NAMES:
        for record in builtin.DATASETS[name][0]():
            turns = record.get("messages") or record["prompt"] + record["chosen"] + record["rejected"]
            assert all(m["role"] != "system" for m in turns)


@pytest.mark.parametrize("split", ("train", "eval"))
def test_every_reply_is_house_style_json_of_facts_the_text_states(split):
    for record in all_records(split):
        user, reply = user_and_reply(record)
        facts = house_style(reply)
        assert facts is not None, reply
        assert list(json.loads(reply)) == ["name", "age", "city", "job"]
        text = text_of(user)
        for key in ("name", "city", "job"):
            assert isinstance(facts[key], str) and facts[key] in text, (key, record)
        assert 18 <= facts["age"] <= 79 and str(facts["age"]) in re.findall(r"\d+", text), record
        assert "\n" not in reply and len(reply) < 100


def test_phrasings_vary_the_order_of_facts_and_add_other_numbers():
    for lang in LANGUAGES:
        orders, with_other_number = set(), 0
        for record in extraction(lang, "train"):
            user, reply = user_and_reply(record)
            text, facts = text_of(user), json.loads(reply)
            numbers = re.findall(r"\d+", text)
            positions = {k: text.index(str(facts[k])) for k in ("name", "city", "job")}
            positions["age"] = next(m.start() for m in re.finditer(r"\d+", text) if m.group() == str(facts["age"]))
            orders.add(tuple(sorted(positions, key=positions.get)))
            with_other_number += any(n != str(facts["age"]) for n in numbers)
        assert len(orders) >= 5, orders
        assert with_other_number >= len(extraction(lang, "train")) // 3


def test_eval_people_are_held_out():
    for lang in LANGUAGES:
        train = extraction(lang, "train") + extraction_preference(lang, "train")
        train_names = {json.loads(user_and_reply(r)[1])["name"] for r in train}
        train_pairs = {(f["name"], f["city"]) for f in (json.loads(user_and_reply(r)[1]) for r in train)}
        train_text = "\n".join(user_and_reply(r)[0] for r in train)
        for record in extraction(lang, "eval") + extraction_preference(lang, "eval"):
            facts = json.loads(user_and_reply(record)[1])
            assert facts["name"] not in train_names and (facts["name"], facts["city"]) not in train_pairs
            assert facts["name"] not in train_text, facts["name"]
        eval_names = [json.loads(user_and_reply(r)[1])["name"] for r in extraction(lang, "eval")]
        assert len(set(eval_names)) == len(eval_names)


def test_language_eval_sets_are_the_halves_of_extract_eval():
    both = builtin.DATASETS["extract_eval"][0]()
    english, chinese = builtin.DATASETS["extract_en_eval"][0](), builtin.DATASETS["extract_zh_eval"][0]()
    assert both == english + chinese and len(english) == len(chinese) == 24
    train = builtin.DATASETS["extract_train"][0]()
    assert train[0::2] == extraction("en", "train") and train[1::2] == extraction("zh", "train")
    pairs = builtin.DATASETS["extract_preference_eval"][0]()
    assert pairs == extraction_preference("en", "eval") + extraction_preference("zh", "eval")


def test_chinese_records_are_chinese_and_english_ones_are_not():
    for record in extraction("zh", "train") + extraction("zh", "eval") + extraction_preference("zh", "eval"):
        user, reply = user_and_reply(record)
        facts = json.loads(reply)
        assert CJK.search(text_of(user)) and CJK.search(user.split("\n\n")[0])
        assert all(CJK.search(facts[k]) for k in ("name", "city", "job"))
    for record in extraction("en", "train") + extraction("en", "eval") + extraction_preference("en", "eval"):
        assert not CJK.search(json.dumps(record, ensure_ascii=False))


@pytest.mark.parametrize("split", ("train", "eval"))
def test_rejected_reply_is_a_plausible_mistake(split):
    for lang in LANGUAGES:
        kinds = {"wrong value": 0, "other number as age": 0, "style": 0}
        for record in extraction_preference(lang, split):
            user, chosen = user_and_reply(record)
            (rejected,) = record["rejected"]
            assert rejected["role"] == "assistant"
            rejected = rejected["content"]
            truth = house_style(chosen)
            assert rejected != chosen
            parsed = house_style(rejected)
            if parsed is None:  # the right facts in another style (prose, a fence, key order, spacing, "age": "34")
                kinds["style"] += 1
                assert truth["name"] in rejected and str(truth["age"]) in rejected
            else:  # house style, but a wrong value
                assert parsed != truth
                wrong = [k for k in KEYS if parsed[k] != truth[k]]
                assert len(wrong) == 1
                kinds["wrong value"] += 1
                if wrong == ["age"] and str(parsed["age"]) in re.findall(r"\d+", text_of(user)):
                    kinds["other number as age"] += 1
        assert all(kinds.values()), kinds
        assert kinds["style"] > kinds["wrong value"] / 2
