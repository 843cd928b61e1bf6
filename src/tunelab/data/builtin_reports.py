"""Built-in text-to-text sets for T5 (headlines for reports, active-to-passive rewrites), generated deterministically.

The world: monthly figures of stores, museums, plants and libraries in forty cities, in English and in Chinese.
- `reports`: a document of 2 to 4 sentences. One states how a figure moved ("In March, sales at the Denver store
  rose from 120 to 150 units."); the others are distractors: staff, opening year, the manager's explanation, last
  year's figure, another city, another month. The target is a headline made of that sentence's facts,
  "Denver store sales up to 150 in March" ("深圳门店三月销量升至150件"): the direction follows from the verb
  (rose, dipped, 增加到, 回落到) or, in one phrasing, from comparing the two figures; no arithmetic.
- `rewrites` (English): an active sentence and its passive ("Ana Ruiz sold the Denver store last year." ->
  "The Denver store was sold by Ana Ruiz last year."): was or were, the participle, the agent moved behind "by".
The eval splits use the last ten cities, which no train record names, and other random figures.
- `corpus`: pretraining documents: fresh reports about the train cities, each under its headline; short notes
  (staff, opening year, a quiet month) about all forty cities, so the pretrained model knows the held-out names too;
  in English, active and passive sentences about the train cities. No report, headline or rewrite about a held-out
  city occurs in it. `corpus_eval`: headed reports about the held-out cities.
"""

from __future__ import annotations

import random

_HELD_OUT = 10  # the last cities of each list: eval only (and the corpus's profiles)
_WORLD = {
    "en": {
        "cities": ["Denver", "Boston", "Austin", "Seattle", "Chicago", "Dallas", "Phoenix", "Atlanta", "Miami",
                   "Portland", "Omaha", "Tucson", "Fresno", "Raleigh", "Memphis", "Boise", "Tampa", "Orlando",
                   "Spokane", "Richmond", "Buffalo", "Toledo", "Lubbock", "Madison", "Reno", "Eugene", "Wichita",
                   "Houston", "Dayton", "Savannah",
                   "Tulsa", "Albany", "Norfolk", "Akron", "Laredo", "Provo", "Duluth", "Fargo", "Helena", "Topeka"],
        "months": ["January", "February", "March", "April", "May", "June", "July", "August", "September",
                   "October", "November", "December"],
        "places": [("store", "sales", "units"), ("museum", "attendance", "visitors"), ("plant", "output", "tonnes"),
                   ("library", "loans", "books")],
        "people": ["Ana Ruiz", "Tom Baker", "Priya Shah", "Li Wei", "Sara Cohen", "Omar Haddad", "Emma Clark",
                   "Jon Park", "Maya Singh", "Ken Ito"],
        # (past, noun, infinitive)
        "moves": {"up": [("rose", "a rise", "rise"), ("climbed", "a climb", "climb"), ("grew", "growth", "grow"),
                         ("increased", "an increase", "increase"), ("jumped", "a jump", "jump")],
                  "down": [("fell", "a fall", "fall"), ("dropped", "a drop", "drop"), ("dipped", "a dip", "dip"),
                           ("declined", "a decline", "decline"), ("decreased", "a decrease", "decrease")]},
        "stated": ["In {month}, {metric} at the {city} {place} {past} from {a} to {b} {unit}.",
                   "{metric} at the {city} {place} {past} from {a} to {b} {unit} in {month}.",
                   "The {city} {place} saw {metric} {inf} from {a} to {b} {unit} in {month}.",
                   "{month} brought {noun} in {metric} at the {city} {place}, from {a} to {b} {unit}."],
        "compared": "{metric} at the {city} {place} reached {b} {unit} in {month}, against {a} the month before.",
        "whys": {"up": ["credited a new display", "credited the warm weather", "credited a local festival",
                        "credited longer opening hours", "credited the school holidays"],
                 "down": ["blamed road works nearby", "blamed heavy rain", "blamed a rival opening",
                          "blamed staff shortages", "blamed a broken lift"]},
        "follow": ["The {place} manager, {person}, {why}.", "A year earlier, the same figure stood at {c} {unit}."],
        "asides": ["The {city} {place} employs {n} people.", "The {city} {place} opened in {year}.",
                   "The {other} {place}, by contrast, reported little change.",
                   "{person} expects a similar result in {month2}, when the next figures are due."],
        "headline": "{city} {place} {metric} {dir} to {b} in {month}",
        "dirs": {"up": "up", "down": "down"},
        "join": " ",
    },
    "zh": {
        "cities": ["深圳", "杭州", "南京", "成都", "武汉", "青岛", "郑州", "厦门", "长沙", "合肥", "西安", "昆明", "大连",
                   "南昌", "苏州", "宁波", "绵阳", "宜昌", "烟台", "洛阳", "无锡", "佛山", "东莞", "济南", "沈阳",
                   "哈尔滨", "福州", "南宁", "贵阳", "太原",
                   "兰州", "银川", "西宁", "海口", "珠海", "温州", "泉州", "桂林", "唐山", "保定"],
        "months": ["一月", "二月", "三月", "四月", "五月", "六月", "七月", "八月", "九月", "十月", "十一月", "十二月"],
        "places": [("门店", "销量", "件"), ("博物馆", "参观人数", "人次"), ("工厂", "产量", "吨"), ("图书馆", "借阅量", "册")],
        "people": ["张伟", "李娜", "王芳", "刘洋", "陈静", "杨磊", "赵敏", "黄勇", "周婷", "吴强"],
        # (past, noun)
        "moves": {"up": [("增加到", "增长"), ("上升到", "上升"), ("增长到", "增长"), ("提高到", "回升"), ("升至", "上涨")],
                  "down": [("减少到", "下降"), ("下降到", "下滑"), ("降至", "减少"), ("回落到", "回落"), ("跌至", "下跌")]},
        "stated": ["{month}份，{city}{place}的{metric}从{a}{unit}{past}{b}{unit}。",
                   "{city}{place}{month}的{metric}由{a}{unit}{past}{b}{unit}。",
                   "{month}，{city}{place}的{metric}出现{noun}，从{a}{unit}变为{b}{unit}。",
                   "据统计，{city}{place}的{metric}在{month}{past}{b}{unit}，此前为{a}{unit}。"],
        "compared": "与上月的{a}{unit}相比，{city}{place}{month}的{metric}为{b}{unit}。",
        "whys": {"up": ["认为这主要得益于新的陈列方式", "认为这主要得益于天气转暖", "认为这主要得益于本地节日活动",
                        "认为这主要得益于延长营业时间", "认为这主要得益于学校放假"],
                 "down": ["认为附近道路施工是主要原因", "认为连续降雨是主要原因", "认为竞争对手开业是主要原因",
                          "认为人手不足是主要原因", "认为设备检修是主要原因"]},
        "follow": ["负责人{person}{why}。", "去年同期，这一数字为{c}{unit}。"],
        "asides": ["{city}{place}目前共有{n}名员工。", "{city}{place}于{year}年开业。", "同期，{other}{place}的情况则变化不大。",
                   "{person}预计{month2}的情况将与此相近。"],
        "headline": "{city}{place}{month}{metric}{dir}{b}{unit}",
        "dirs": {"up": "升至", "down": "降至"},
        "join": "",
    },
}
# Rewrites: (past, participle) of verbs whose object is a building.
_VERBS = [("opened", "opened"), ("closed", "closed"), ("inspected", "inspected"), ("visited", "visited"),
          ("renovated", "renovated"), ("designed", "designed"), ("expanded", "expanded"), ("sold", "sold"),
          ("bought", "bought"), ("built", "built"), ("rebuilt", "rebuilt"), ("ran", "run"), ("shut", "shut"),
          ("took over", "taken over")]
_AGENTS = _WORLD["en"]["people"] + ["the council", "a local firm", "the new owners", "the bank", "an investor"]
_WHENS = ["last year", "last week", "on Monday", "in 2019", "in {month}"]
_BUILDINGS = ["store", "museum", "plant", "warehouse", "hotel", "depot"]


def _cities(world: dict, split: str) -> list[str]:
    return world["cities"][:-_HELD_OUT] if split == "train" else world["cities"][-_HELD_OUT:]


def _cap(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def _facts(world: dict, cities: list[str], rng: random.Random) -> dict:
    """Everything a report or profile may mention; `a` -> `b` is the move the headline is about."""
    city, other = rng.sample(cities, 2)
    place, metric, unit = rng.choice(world["places"])
    direction = rng.choice(["up", "down"])
    low, step = rng.randint(30, 700), rng.randint(10, 200)
    a, b = (low, low + step) if direction == "up" else (low + step, low)
    month, month2 = rng.sample(world["months"], 2)
    move = dict(zip(("past", "noun", "inf"), rng.choice(world["moves"][direction])))
    return {"city": city, "other": other, "place": place, "metric": metric, "unit": unit, "a": a, "b": b,
            "month": month, "month2": month2, "dir": world["dirs"][direction],
            "why": rng.choice(world["whys"][direction]), "person": rng.choice(world["people"]),
            "c": rng.randint(30, 900), "n": rng.randint(5, 80), "year": rng.randint(1960, 2020), **move}


def _report(world: dict, cities: list[str], rng: random.Random) -> dict:
    facts = _facts(world, cities, rng)
    main = world["compared"] if rng.random() < 0.2 else rng.choice(world["stated"])
    picks = rng.sample(world["follow"] + world["asides"], rng.randint(1, 3))
    sentences = [_cap(t.format(**facts)) for t in picks if t in world["asides"]]
    position = rng.randint(0, len(sentences))  # the explanation and last year's figure follow the move
    after = [main] + [t for t in picks if t in world["follow"]]
    sentences[position:position] = [_cap(t.format(**facts)) for t in after]
    return {"source": world["join"].join(sentences), "target": world["headline"].format(**facts)}


def _unique(make, n: int) -> list[dict]:
    records, seen = [], set()
    while len(records) < n:
        record = make()
        if record["source"] not in seen:
            seen.add(record["source"])
            records.append(record)
    return records


def reports(language: str, split: str) -> list[dict]:
    """`{"source", "target"}`: a report and its headline; 1500 for train, 150 for eval."""
    world = _WORLD[language]
    rng = random.Random({"en": 71, "zh": 81}[language] + (split == "eval"))
    return _unique(lambda: _report(world, _cities(world, split), rng), 1500 if split == "train" else 150)


def _rewrite(cities: list[str], rng: random.Random) -> dict:
    city, building = rng.choice(cities), rng.choice(_BUILDINGS)
    plural = rng.random() < 0.3
    thing = f"the two {city} {building}s" if plural else f"the {city} {building}"
    past, participle = rng.choice(_VERBS)
    agent = rng.choice(_AGENTS)
    when = rng.choice(_WHENS).format(month=rng.choice(_WORLD["en"]["months"]))
    active, passive = f"{agent} {past} {thing}", f"{thing} {'were' if plural else 'was'} {participle} by {agent}"
    if rng.random() < 0.4:
        return {"source": f"{_cap(when)}, {active}.", "target": f"{_cap(when)}, {passive}."}
    return {"source": f"{_cap(active)} {when}.", "target": f"{_cap(passive)} {when}."}


def rewrites(split: str) -> list[dict]:
    """`{"source", "target"}`: an English active sentence and its passive; 800 for train, 100 for eval."""
    rng = random.Random(75 + (split == "eval"))
    return _unique(lambda: _rewrite(_cities(_WORLD["en"], split), rng), 800 if split == "train" else 100)


def _headed(record: dict) -> str:
    return record["target"] + "\n" + record["source"]


def corpus(language: str) -> list[dict]:
    """`{"text"}` pretraining documents, shuffled: 3000 headed reports and 500 city profiles, and in English 600
    documents of active and passive sentences."""
    world = _WORLD[language]
    rng = random.Random({"en": 91, "zh": 101}[language])
    train = _cities(world, "train")
    docs = [_headed(_report(world, train, rng)) for _ in range(3000)]
    docs += [world["join"].join(_cap(t.format(**_facts(world, world["cities"], rng)))
                                for t in rng.sample(world["asides"], rng.randint(2, 3))) for _ in range(500)]
    if language == "en":
        docs += [" ".join(rng.choice(list(_rewrite(train, rng).values())) for _ in range(rng.randint(2, 4)))
                 for _ in range(600)]
    rng.shuffle(docs)
    return [{"text": doc} for doc in docs]


def corpus_eval(language: str) -> list[dict]:
    """`{"text"}`: 200 headed reports about the held-out cities."""
    world = _WORLD[language]
    rng = random.Random({"en": 92, "zh": 102}[language])
    return [{"text": _headed(_report(world, _cities(world, "eval"), rng))} for _ in range(200)]
