"""Built-in English intent classification (6 classes) and intent-pair similarity, generated deterministically.

An utterance is a template filled with slot values. The eval split uses templates that the train split
never shows, filled with slot values of which a third never occur in training, so a model must recognise the intent from wording it has not seen,
not memorise sentences. Pairs: two utterances with the same intent are `same`, otherwise `different`.
"""

from __future__ import annotations

import random

# Per intent: templates; the last three are held out for eval.
_TEMPLATES = {
    "weather": [
        "what's the weather like in {city} {when}", "will it rain in {city} {when}", "do I need an umbrella {when}",
        "how hot is it going to be in {city}", "give me the forecast for {city} {when}", "is it going to snow {when}",
        "how cold will it get tonight in {city}", "should I expect sunshine in {city} {when}",
        "any storms coming to {city} {when}", "what temperature will it be {when}",
    ],
    "play_music": [
        "play {song} by {artist}", "put on some {genre}", "I want to hear {artist}", "can you play some {genre} music",
        "start my {genre} playlist", "queue up {song}", "shuffle songs by {artist}", "turn on {genre} radio",
        "I'm in the mood for {artist}", "let's listen to {song}",
    ],
    "set_alarm": [
        "wake me up at {time} {when}", "set an alarm for {time}", "alarm at {time} please",
        "I need to get up at {time} {when}", "make sure I'm awake by {time}", "set my alarm to {time} {when}",
        "create an alarm for {time} {when}", "ring me at {time} so I don't oversleep",
        "could you buzz me at {time} {when}", "get me out of bed at {time}",
    ],
    "book_restaurant": [
        "book a table for {n} at {restaurant} {when}", "reserve dinner for {n} people {when}",
        "I'd like a reservation at {restaurant}", "get us a table at {restaurant} for {n}",
        "can I book {restaurant} for {n} {when}", "find a free table for {n} {when}",
        "reserve a spot at {restaurant} {when}", "we want to eat at {restaurant} {when}, table for {n}",
        "is there room for {n} at {restaurant} {when}", "hold a table at {restaurant} for {n} guests",
    ],
    "check_balance": [
        "how much money is in my {account} account", "what's my {account} balance",
        "show me the balance of my {account}", "do I have enough money in {account}", "check my {account} funds",
        "how much is left in my {account} account", "tell me what's in my {account}",
        "what is the current amount on my {account} account", "how much cash do I have in {account}",
        "am I overdrawn on my {account} account",
    ],
    "translate": [
        "how do you say {phrase} in {language}", "translate {phrase} into {language}",
        "what is {phrase} in {language}", "say {phrase} in {language} for me", "{phrase} in {language} please",
        "help me translate {phrase} to {language}", "what's the {language} word for {phrase}",
        "how would a {language} speaker say {phrase}", "put {phrase} into {language}",
        "I need {phrase} translated to {language}",
    ],
}
_EVAL_TEMPLATES = 3
# Per slot: values; the last third is never seen in training (eval draws from all of them).
_SLOTS = {
    "city": ["Boston", "Paris", "Tokyo", "Denver", "Madrid", "Chicago", "Lisbon", "Seattle", "Oslo",
             "Berlin", "Austin", "Dublin", "Cairo", "Miami", "Prague"],
    "when": ["today", "tomorrow", "this weekend", "on Monday", "tonight", "next week", "this afternoon",
             "on Friday", "in the morning", "on Sunday", "later today", "this evening", "on Tuesday", "next Saturday",
             "right now"],
    "song": ["Yesterday", "Hey Jude", "Bohemian Rhapsody", "Hotel California", "Imagine", "Wonderwall",
             "Purple Rain", "Hallelujah", "Let It Be", "Superstition", "Respect", "Jolene", "Vogue", "Halo", "Africa"],
    "artist": ["Adele", "the Beatles", "Taylor Swift", "Queen", "Miles Davis", "Beyonce", "Coldplay",
               "Bob Dylan", "Nina Simone", "Drake", "Shakira", "Elvis", "Rihanna", "ABBA", "Prince"],
    "genre": ["jazz", "rock", "classical", "hip hop", "country", "blues", "reggae", "techno", "folk", "soul", "metal", "disco", "punk", "opera", "salsa"],
    "time": ["6 am", "7:30", "five o'clock", "8:15 am", "noon", "6:45", "9 pm", "half past six", "10 am", "5:50", "seven sharp", "11 pm", "4:20 am", "quarter to eight", "midnight"],
    "n": ["two", "four", "3", "six", "5", "eight", "2", "ten", "seven", "twelve", "nine", "4", "three", "6", "five"],
    "restaurant": ["Luigi's", "the Golden Dragon", "Chez Marie", "the Olive Garden", "Sakura", "the Steakhouse",
                   "Blue Lagoon", "the Corner Bistro", "Taj Palace", "Casa Lola", "the Oyster Bar", "Nando's", "the Grill House", "Pho Saigon", "Trattoria Roma"],
    "account": ["checking", "savings", "joint", "business", "credit card", "student", "retirement",
                "holiday", "emergency", "main", "family", "travel", "brokerage", "payroll", "euro"],
    "phrase": ["good morning", "thank you", "where is the station", "I love you", "how much is this",
               "see you later", "excuse me", "good night", "happy birthday", "I am lost", "the bill please", "nice to meet you",
               "where is the toilet", "I don't understand", "welcome home"],
    "language": ["French", "Spanish", "German", "Japanese", "Italian", "Chinese", "Portuguese", "Korean", "Dutch", "Greek", "Swedish", "Polish",
                 "Turkish", "Hindi", "Arabic"],
}
LABELS = list(_TEMPLATES)


def _slot_values(split: str) -> dict[str, list[str]]:
    cut = {name: len(values) - len(values) // 3 for name, values in _SLOTS.items()}
    return {name: values[:cut[name]] if split == "train" else values for name, values in _SLOTS.items()}


def _fill(template: str, values: dict[str, list[str]], rng: random.Random) -> str:
    names = [name for name in _SLOTS if "{" + name + "}" in template]
    return template.format(**{name: rng.choice(values[name]) for name in names})


def intents(split: str, per_class: int | None = None) -> list[dict]:
    """`{"text", "label"}` records: 100 per intent for train, 20 for eval, in a shuffled order."""
    per_class = per_class or (100 if split == "train" else 20)
    rng = random.Random(31 if split == "train" else 32)
    values = _slot_values(split)
    records = []
    for label, templates in _TEMPLATES.items():
        pool = templates[:-_EVAL_TEMPLATES] if split == "train" else templates[-_EVAL_TEMPLATES:]
        seen: set[str] = set()
        for _ in range(per_class * 20):
            if len(seen) == per_class:
                break
            text = _fill(rng.choice(pool), values, rng)
            if text not in seen:
                seen.add(text)
                records.append({"text": text, "label": label})
    rng.shuffle(records)
    return records


def intent_pairs(split: str) -> list[dict]:
    """`{"text", "text_pair", "label"}`: half `same` (one intent), half `different`."""
    rng = random.Random(41 if split == "train" else 42)
    by_label: dict[str, list[str]] = {}
    for r in intents(split):
        by_label.setdefault(r["label"], []).append(r["text"])
    n = 600 if split == "train" else 180
    records = []
    for i in range(n):
        if i % 2 == 0:
            label = rng.choice(LABELS)
            text, text_pair = rng.sample(by_label[label], 2)
            records.append({"text": text, "text_pair": text_pair, "label": "same"})
        else:
            a, b = rng.sample(LABELS, 2)
            records.append({"text": rng.choice(by_label[a]), "text_pair": rng.choice(by_label[b]), "label": "different"})
    return records

