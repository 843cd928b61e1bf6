"""Built-in address parsing (token tagging, BIO), generated deterministically, in English and Chinese.

English records are words; Chinese records are characters, one tag per character, as Chinese NER data
sets are laid out. Addresses come in several layouts (with and without commas, with a lead-in such as
"ship to", the postal code first or last), and the eval split uses street and city names that train
never shows, so the tagger must learn from the layout and the words around a name.
"""

from __future__ import annotations

import random

EN_TYPES = ("HOUSE_NUMBER", "STREET", "CITY", "STATE", "POSTCODE")
ZH_TYPES = ("PROVINCE", "CITY", "DISTRICT", "STREET", "HOUSE_NUMBER", "POSTCODE")

_EN_STREETS = ["Oak", "Maple", "Baker", "Main", "Park", "Washington", "Lake", "Hill", "Cedar", "Pine", "Elm",
               "Sunset", "River", "Church", "Mill", "Highland", "Martin Luther King", "Spring", "Forest", "Union",
               "Jefferson", "Walnut", "Franklin", "Chestnut", "Lincoln", "Willow", "Madison", "Meadow", "Prospect",
               "Green Valley", "Ocean View", "Liberty", "Harbor", "Cherry", "Birch", "Summit"]
_EN_SUFFIXES = ["Street", "St", "Avenue", "Ave", "Road", "Rd", "Boulevard", "Lane", "Drive", "Court", "Way", "Place"]
_EN_CITIES = ["Springfield", "Portland", "San Jose", "New York", "Austin", "Boston", "Denver", "Salem", "Madison",
              "Fairview", "Georgetown", "Clinton", "Franklin", "Greenville", "Bristol", "Oxford", "Arlington",
              "Lake City", "Santa Fe", "Kansas City", "Ann Arbor", "Baton Rouge", "Palo Alto", "Fort Worth",
              "El Paso", "Des Moines", "Little Rock", "Eugene", "Tacoma", "Reno"]
_EN_STATES = ["CA", "NY", "TX", "MA", "CO", "OR", "WA", "IL", "MI", "FL", "California", "New York", "Texas",
              "Oregon", "Ohio", "North Carolina", "New Mexico", "Iowa", "Nevada", "Georgia"]
_EN_LEADS = [[], [], ["Ship", "to"], ["My", "address", "is"], ["Send", "it", "to"], ["Deliver", "to"],
             ["I", "live", "at"], ["Billing", "address", ":"]]

_ZH_PROVINCES = ["广东省", "浙江省", "江苏省", "四川省", "湖北省", "山东省", "河南省", "福建省", "湖南省", "安徽省",
                 "陕西省", "云南省", "辽宁省", "江西省"]
_ZH_CITIES = ["深圳市", "杭州市", "南京市", "成都市", "武汉市", "青岛市", "郑州市", "厦门市", "长沙市", "合肥市",
              "西安市", "昆明市", "大连市", "南昌市", "苏州市", "宁波市", "绵阳市", "宜昌市", "烟台市", "洛阳市"]
_ZH_DISTRICTS = ["南山区", "西湖区", "鼓楼区", "武侯区", "洪山区", "市南区", "金水区", "思明区", "岳麓区", "蜀山区",
                 "雁塔区", "五华区", "中山区", "东湖区", "福田区", "滨江区", "玄武区", "锦江区"]
_ZH_STREETS = ["科技园路", "文三路", "中山路", "人民南路", "珞喻路", "香港中路", "花园路", "湖滨北路", "麓山南路",
               "长江西路", "长安北路", "学府路", "解放大道", "建设路", "新华街", "和平大街", "光明路", "幸福路",
               "望江路", "滨海大道", "迎宾路", "东风路", "江南大道", "朝阳街"]
_ZH_LEADS = ["", "", "收货地址：", "地址：", "寄到", "我住在", "请送到"]


def _split_names(names: list[str], split: str) -> list[str]:
    cut = len(names) - len(names) // 4  # the last quarter only in eval
    return names[:cut] if split == "train" else names[cut:]


def _entity(words: list[str], kind: str) -> list[tuple[str, str]]:
    return [(w, ("B-" if i == 0 else "I-") + kind) for i, w in enumerate(words)]


def _english(rng: random.Random, split: str) -> dict:
    number = [str(rng.randint(1, 9999))]
    street = rng.choice(_split_names(_EN_STREETS, split)).split() + [rng.choice(_EN_SUFFIXES)]
    city = rng.choice(_split_names(_EN_CITIES, split)).split()
    state = rng.choice(_EN_STATES).split()
    postcode = [f"{rng.randint(1000, 99999):05d}"]
    comma = [(",", "O")] if rng.random() < 0.6 else []
    street_part = _entity(number, "HOUSE_NUMBER") + _entity(street, "STREET")
    place_part = _entity(city, "CITY") + comma + _entity(state, "STATE") + _entity(postcode, "POSTCODE")
    layout = rng.random()
    if layout < 0.7:
        pairs = street_part + comma + place_part
    elif layout < 0.85:
        pairs = street_part + [("in", "O")] + place_part
    else:
        pairs = place_part + [(":", "O")] + street_part
    pairs = [(w, "O") for w in rng.choice(_EN_LEADS)] + pairs
    return {"tokens": [w for w, _ in pairs], "tags": [t for _, t in pairs]}


def _chinese(rng: random.Random, split: str) -> dict:
    parts = [("PROVINCE", rng.choice(_ZH_PROVINCES)), ("CITY", rng.choice(_split_names(_ZH_CITIES, split))),
             ("DISTRICT", rng.choice(_split_names(_ZH_DISTRICTS, split))),
             ("STREET", rng.choice(_split_names(_ZH_STREETS, split))),
             ("HOUSE_NUMBER", f"{rng.randint(1, 999)}号")]
    if rng.random() < 0.3:
        parts = parts[1:]  # the province is often left out
    if rng.random() < 0.5:
        parts += [("O", rng.choice(["，邮编：", "，", "邮编"])), ("POSTCODE", str(rng.randint(100000, 850000)))]
    parts = [("O", rng.choice(_ZH_LEADS))] + parts
    pairs = []
    for kind, text in parts:
        chars = list(text)
        pairs += [(c, "O") for c in chars] if kind == "O" else _entity(chars, kind)
    return {"tokens": [c for c, _ in pairs], "tags": [t for _, t in pairs]}


def addresses(language: str, split: str) -> list[dict]:
    """`{"tokens", "tags"}` records: 800 for train, 200 for eval."""
    rng = random.Random({"en": 51, "zh": 61}[language] + (split == "eval"))
    make = _english if language == "en" else _chinese
    return [make(rng, split) for _ in range(800 if split == "train" else 200)]
