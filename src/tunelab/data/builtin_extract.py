"""Built-in structured extraction into JSON (chat), in English and Chinese, generated deterministically.

The world: people with a name, an age (18 to 79), a city and a job. The user turn asks for these four facts from a
short text ("Meet Dana Reyes, 34, who works as a nurse in Denver and has 2 kids."); the reply is one line of JSON in
the house style, `{"name": "Dana Reyes", "age": 34, "city": "Denver", "job": "nurse"}`: exactly these keys in this
order, the age a number, json.dumps's default separators, nothing before or after it. Chinese records have Chinese
text and values under the same English keys. Each language has eight phrasings that state the facts in different
orders, six of them with a second number that is not the age (kids, years in the job, hours a week, a building).
A pretrained chat model knows JSON but answers in its own style (prose first, a ```json fence, another key order or
spacing, the age as a string), so exact match starts low and SFT teaches the house style. No system turn: a
model's template adds its own default.
- `extraction`: {"messages": [user, assistant]}; 160 records per language for train, 24 for eval.
- `extraction_preference`: prompt / chosen / rejected as message lists; rejected is a plausible mistake, eight
  kinds in turn: a wrong value (the age off by a few, the other number taken as the age, another city) or the right
  values in another style (prose first, a fence, another key order, other spacing, the age as a string);
  96 records per language for train, 16 for eval.
Eval people are held out: a fixed shuffle of every first-and-last-name pair sets 40 names per language aside, which
no train record uses (so no train record has an eval record's name, nor its name and city); the SFT eval split
takes 24 of them, the preference eval split the other 16.
"""

from __future__ import annotations

import json
import random

KEYS = ("name", "age", "city", "job")
_HELD_OUT = 40  # names per language set aside for the eval splits: 24 for SFT, 16 for preference
_SIZES = {("sft", "train"): 160, ("sft", "eval"): 24, ("preference", "train"): 96, ("preference", "eval"): 16}

_WORLD = {
    "en": {
        "first": ["Dana", "Maria", "James", "Aisha", "Tom", "Priya", "Lucas", "Emma", "Omar", "Chloe", "Daniel",
                  "Sofia", "Kevin", "Grace", "Ivan", "Nora", "Samuel", "Leah", "Victor", "Hannah", "Marcus", "Julia",
                  "Ethan", "Rosa", "Felix", "Alice", "Hugo", "Megan", "Pablo", "Irene"],
        "last": ["Reyes", "Lopez", "Carter", "Khan", "Baker", "Shah", "Moreau", "Clark", "Haddad", "Nguyen", "Fischer",
                 "Rossi", "Walsh", "Kim", "Petrov", "Hayes", "Okafor", "Cohen", "Silva", "Brennan", "Ito", "Novak",
                 "Turner", "Garcia", "Larsen", "Murphy", "Costa", "Price", "Ortiz", "Foster"],
        "cities": ["Denver", "Boston", "Austin", "Seattle", "Chicago", "Dallas", "Phoenix", "Atlanta", "Miami",
                   "Portland", "Toronto", "London", "Dublin", "Sydney", "Leeds", "Vancouver", "Melbourne", "Houston",
                   "Glasgow", "Auckland", "San Diego", "New Orleans", "Salt Lake City", "Cape Town"],
        "jobs": ["nurse", "teacher", "engineer", "chef", "dentist", "pilot", "lawyer", "farmer", "plumber", "architect",
                 "accountant", "electrician", "baker", "librarian", "pharmacist", "mechanic", "journalist",
                 "photographer", "doctor", "driver"],
        "instruction": "Extract the person's name, age, city and job from the text. Reply with JSON only: "
                       "keys name, age, city, job.\n\nText: {text}",
        # (phrasing, range of the number that is not the age, or None)
        "texts": [("{name} is a {age}-year-old {job} from {city}.", None),
                  ("Meet {name}, {age}, who works as {a_job} in {city} and has {d} kids.", (1, 4)),
                  ("{city} resident {name} has worked as {a_job} for {d} years and turned {age} in May.", (2, 15)),
                  ("At {age}, {name} is {a_job} living in {city}.", None),
                  ("{name} lives in {city} with {d} cats, works as {a_job} and is {age} years old.", (1, 5)),
                  ("Name on file: {name}. The {job}, aged {age}, moved to {city} {d} years ago.", (2, 15)),
                  ("Working {d} hours a week as {a_job} in {city}, {name} ({age}) rarely takes a day off.", (20, 60)),
                  ("Our new neighbour in {city} is {name}, {a_job} who is {age} and lives at number {d}.", (1, 99))],
        "prose": ["Here is the extracted information:\n{json}", "Sure! Here is the JSON:\n\n{json}",
                  "The person is {name}. {json}"],
    },
    "zh": {
        "first": ["王", "李", "张", "刘", "陈", "杨", "黄", "赵", "周", "吴", "徐", "孙", "马", "朱", "胡", "郭", "何",
                  "林", "高", "罗"],
        "last": ["芳", "明", "伟", "娜", "静", "磊", "敏", "勇", "婷", "强", "洋", "丽", "杰", "涛", "霞", "建国", "晓燕",
                 "志强", "秀英", "海涛", "雪梅", "子轩", "欣怡", "浩然"],
        "cities": ["杭州", "成都", "南京", "武汉", "西安", "青岛", "厦门", "长沙", "苏州", "重庆", "天津", "广州",
                   "深圳", "北京", "上海", "昆明", "大连", "合肥", "郑州", "济南", "福州", "宁波", "哈尔滨", "贵阳"],
        "jobs": ["护士", "老师", "工程师", "厨师", "牙医", "飞行员", "律师", "农民", "水管工", "建筑师", "会计", "电工",
                 "面包师", "图书管理员", "药剂师", "修理工", "记者", "摄影师", "医生", "司机"],
        "instruction": "从下面的文字中提取这个人的姓名、年龄、城市和职业。只回复JSON，键为name、age、city、job。"
                       "\n\n文字：{text}",
        "texts": [("{name}今年{age}岁，是{city}的一名{job}。", None),
                  ("{name}，{age}岁，在{city}当{job}，有{d}个孩子。", (1, 3)),
                  ("在{city}工作的{job}{name}今年{age}岁，住在{d}号楼。", (1, 40)),
                  ("{city}人{name}是一名{job}，今年{age}岁。", None),
                  ("{age}岁的{name}在{city}做{job}已经{d}年了。", (2, 15)),
                  ("登记信息：{name}，现居{city}，职业是{job}，年龄{age}岁，工号{d}。", (10, 99)),
                  ("{name}住在{city}，养了{d}只猫，今年{age}岁，职业是{job}。", (1, 5)),
                  ("{job}{name}每周在{city}工作{d}个小时，今年{age}岁。", (20, 60))],
        "prose": ["提取结果如下：\n{json}", "好的，以下是JSON：\n\n{json}", "这个人是{name}。{json}"],
    },
}
# The kinds of rejected reply, taken in turn: three wrong values, then five house-style mistakes.
_MISTAKES = ("age_off", "other_number", "other_city", "prose", "fence", "key_order", "spacing", "age_string")
_SEEDS = {"en": 131, "zh": 141}


def house_json(facts: dict) -> str:
    """The reply in the house style: the four keys in order, one line, default separators, Chinese kept as is."""
    return json.dumps({k: facts[k] for k in KEYS}, ensure_ascii=False)


def _names(language: str, split: str) -> list[str]:
    """Every first-and-last-name pair in a fixed shuffle; the first _HELD_OUT are eval's, the rest train's."""
    world = _WORLD[language]
    join = " " if language == "en" else ""
    names = [f + join + last for f in world["first"] for last in world["last"]]
    random.Random(_SEEDS[language]).shuffle(names)
    return names[:_HELD_OUT] if split == "eval" else names[_HELD_OUT:]


def _person(language: str, name: str, rng: random.Random, with_number: bool | None = None) -> dict:
    """A person's facts and the user turn about them. with_number: True for a phrasing with a second number,
    None for any phrasing."""
    world = _WORLD[language]
    texts = [t for t in world["texts"] if t[1]] if with_number else world["texts"]
    template, number_range = rng.choice(texts)
    facts = {"name": name, "age": rng.randint(18, 79), "city": rng.choice(world["cities"]),
             "job": rng.choice(world["jobs"])}
    number = None
    if number_range:
        number = rng.randint(*number_range)
        while number == facts["age"]:
            number = rng.randint(*number_range)
    article = "an" if facts["job"][0] in "aeiou" else "a"
    text = template.format(**facts, a_job=f"{article} {facts['job']}", d=number)
    return {**facts, "number": number, "user": world["instruction"].format(text=text)}


def _people(language: str, kind: str, split: str) -> list[dict]:
    names = _names(language, split)
    n = _SIZES[kind, split]
    if split == "eval":
        names = names[:n] if kind == "sft" else names[_SIZES["sft", "eval"]:][:n]
    rng = random.Random(_SEEDS[language] + {"sft": 1, "preference": 3}[kind] + (split == "eval"))
    if split == "train":
        names = names[:n] if kind == "sft" else rng.sample(names, n)
    if kind == "sft":
        return [_person(language, name, rng) for name in names]
    return [_person(language, name, rng, with_number=_MISTAKES[i % len(_MISTAKES)] == "other_number")
            for i, name in enumerate(names)]


def _mistake(kind: str, person: dict, language: str, rng: random.Random) -> str:
    """A reply a model might give instead of the house-style one."""
    facts = {k: person[k] for k in KEYS}
    if kind == "age_off":
        return house_json({**facts, "age": facts["age"] + rng.choice([-4, -3, -2, -1, 1, 2, 3, 4])})
    if kind == "other_number":
        return house_json({**facts, "age": person["number"]})
    if kind == "other_city":
        return house_json({**facts, "city": rng.choice([c for c in _WORLD[language]["cities"] if c != facts["city"]])})
    if kind == "prose":
        return rng.choice(_WORLD[language]["prose"]).format(json=house_json(facts), name=facts["name"])
    if kind == "fence":
        return f"```json\n{house_json(facts)}\n```"
    if kind == "key_order":
        order = rng.choice([("age", "city", "job", "name"), ("name", "city", "age", "job"), ("name", "job", "age", "city")])
        return json.dumps({k: facts[k] for k in order}, ensure_ascii=False)
    if kind == "spacing":
        return json.dumps(facts, ensure_ascii=False, indent=rng.choice([2, 4])) if rng.random() < 0.5 else \
            json.dumps(facts, ensure_ascii=False, separators=(",", ":"))
    if kind == "age_string":
        return house_json({**facts, "age": str(facts["age"])})
    raise ValueError(kind)


def extraction(lang: str, split: str) -> list[dict]:
    """Single-turn chats in the `messages` format: 160 per language for train, 24 for eval."""
    return [{"messages": [{"role": "user", "content": p["user"]},
                          {"role": "assistant", "content": house_json(p)}]}
            for p in _people(lang, "sft", split)]


def extraction_preference(lang: str, split: str) -> list[dict]:
    """Prompt / chosen / rejected as message lists: 96 per language for train, 16 for eval."""
    rng = random.Random(_SEEDS[lang] + 5 + (split == "eval"))
    return [{"prompt": [{"role": "user", "content": p["user"]}],
             "chosen": [{"role": "assistant", "content": house_json(p)}],
             "rejected": [{"role": "assistant", "content": _mistake(_MISTAKES[i % len(_MISTAKES)], p, lang, rng)}]}
            for i, p in enumerate(_people(lang, "preference", split))]


def interleave(english: list[dict], chinese: list[dict]) -> list[dict]:
    """English and Chinese records in turn (the two lists are equally long)."""
    return [record for pair in zip(english, chinese, strict=True) for record in pair]
