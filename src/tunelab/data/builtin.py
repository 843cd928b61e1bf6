"""Built-in data sets, generated deterministically so that every answer can be checked.

Causal LM sets (this file). The world: the 100 single-digit addition facts, few enough for a one-million-parameter model to
learn in about a minute on a 2-core CPU.
- `corpus`: pretraining text that states every fact, in a few phrasings (some as question and answer,
  as web text has FAQ pages), shuffled into documents.
- `sft`: chat conversations asking about the facts; the reply restates the fact and stops. The eval
  split asks about facts no train conversation mentions: a model answers them only by carrying what
  pretraining taught it into the reply style that SFT taught it.
- `preference`: the same questions, chosen = the right reply, rejected = a plausible mistake (an
  off-by-one sum); `unpaired_preference` the same replies one by one, labelled good or bad (KTO).
- `sum_prompts`: the same questions alone, with the reference reply as the answer a verifiable reward checks
  (GRPO, RLOO).
Encoder sets live beside it: builtin_intents (classification, pairs) and builtin_address (tagging);
seq2seq sets in builtin_reports (report headlines in English and Chinese, rewrites, a pretraining corpus).
Chat sets for a real pretrained model in builtin_extract (a person's facts extracted into JSON in a house style,
English and Chinese, SFT and preference).
Every split is a plain list of records in one of the formats of `tunelab.data.formats`.
"""

from __future__ import annotations

import random

from tunelab.data.builtin_address import addresses
from tunelab.data.builtin_extract import extraction, extraction_preference, interleave
from tunelab.data.builtin_intents import intent_pairs, intents
from tunelab.data.builtin_reports import corpus as report_corpus
from tunelab.data.builtin_reports import corpus_eval as report_corpus_eval
from tunelab.data.builtin_reports import reports, rewrites
from tunelab.data.builtin_shapes import shape_captions

SYSTEM_PROMPT = "You are a helpful assistant. Answer in one sentence."

_EVAL_SHARE = 0.2
# Questions and answers laid out at different distances teach the model to find the operands by
# content. Like real base models, it also sees some chat-formatted text, answered tersely ("The answer
# is 7."): SFT's job is the house style (restate the sum, then stop), which exact match checks.
_QA_LAYOUTS = ("Question: {q} Answer: {a}", "Q: {q}\nA: {a}",
               "<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\nThe answer is {v}.<|im_end|>")


def _facts() -> list[dict]:
    """Each fact: the question, the reply that states it, and a wrong reply a model might give."""
    facts = []
    for a in range(10):
        for b in range(10):
            value = a + b
            wrong = value + (1 if (a * b) % 2 else -1) if value > 0 else 1
            facts.append({
                "question": f"What is {a} plus {b}?",
                "answer": f"{a} plus {b} is {value}.",
                "wrong": f"{a} plus {b} is {wrong}.",
                "value": value,
                "statements": [f"{a} plus {b} is {value}.", *(qa.format(q=f"What is {a} plus {b}?", a=f"{a} plus {b} is {value}.", v=value)
                                                              for qa in _QA_LAYOUTS)],
            })
    return facts


def _split() -> tuple[list[dict], list[dict]]:
    facts = _facts()
    order = list(range(len(facts)))
    random.Random(7).shuffle(order)
    n_eval = int(len(facts) * _EVAL_SHARE)
    held_out = set(order[:n_eval])
    return ([f for i, f in enumerate(facts) if i not in held_out], [f for i, f in enumerate(facts) if i in held_out])


def corpus(n_docs: int = 3000, seed: int = 0) -> list[dict]:
    """Pretraining documents: 4 to 8 fact statements each, about every fact (train and eval alike)."""
    rng = random.Random(seed)
    statements = [s for f in _facts() for s in f["statements"]]
    return [{"text": " ".join(rng.choice(statements) for _ in range(rng.randint(4, 8)))} for _ in range(n_docs)]


def _conversation(fact: dict, rng: random.Random) -> list[dict]:
    messages = [{"role": "system", "content": SYSTEM_PROMPT}] if rng.random() < 0.5 else []
    return messages + [{"role": "user", "content": fact["question"]},
                       {"role": "assistant", "content": fact["answer"]}]


def sft(split: str) -> list[dict]:
    """Single-turn chats in the `messages` format; train repeats each question four times (system prompt or not)."""
    train, held_out = _split()
    rng = random.Random(11 if split == "train" else 12)
    facts = train * 4 if split == "train" else held_out
    return [{"messages": _conversation(f, rng)} for f in facts]


def preference(split: str) -> list[dict]:
    """Prompt / chosen / rejected as message lists (the conversational preference format)."""
    train, held_out = _split()
    rng = random.Random(21 if split == "train" else 22)
    records = []
    for fact in train if split == "train" else held_out:
        prompt = _conversation(fact, rng)[:-1]
        records.append({"prompt": prompt,
                        "chosen": [{"role": "assistant", "content": fact["answer"]}],
                        "rejected": [{"role": "assistant", "content": fact["wrong"]}]})
    return records


def unpaired_preference(split: str) -> list[dict]:
    """The preference pairs unpaired for KTO: each pair's chosen reply labelled true, then its rejected one false."""
    return [{"prompt": pair["prompt"], "completion": pair[side], "label": side == "chosen"}
            for pair in preference(split) for side in ("chosen", "rejected")]


def prompts(split: str) -> list[dict]:
    """The SFT questions without their replies; the answer a verifiable reward checks is the whole reference reply.
    Checking the sum alone would pay "1 plus 3 is 4." for "What is 0 plus 4?", the very copying mistake an early
    SFT model makes, and GRPO then never unlearns it."""
    train, held_out = _split()
    rng = random.Random(31 if split == "train" else 32)
    return [{"prompt": _conversation(fact, rng)[:-1], "answer": fact["answer"]}
            for fact in (train if split == "train" else held_out)]


def corpus_eval() -> list[dict]:
    return corpus(n_docs=200, seed=1)


# name -> (generator, format it produces)
def _shapes_qa():
    from tunelab.data import builtin_shapes_qa  # imported on use: drawing pictures is for image recipes only

    return builtin_shapes_qa


def _shapes_labels():
    from tunelab.data import builtin_shapes_labels

    return builtin_shapes_labels


DATASETS = {
    "intents_train": (lambda: intents("train"), "classification"),
    "intents_eval": (lambda: intents("eval"), "classification"),
    "intent_pairs_train": (lambda: intent_pairs("train"), "pair"),
    "intent_pairs_eval": (lambda: intent_pairs("eval"), "pair"),
    "address_en_train": (lambda: addresses("en", "train"), "tagging"),
    "address_en_eval": (lambda: addresses("en", "eval"), "tagging"),
    "address_zh_train": (lambda: addresses("zh", "train"), "tagging"),
    "address_zh_eval": (lambda: addresses("zh", "eval"), "tagging"),
    "reports_corpus": (lambda: report_corpus("en") + report_corpus("zh"), "text"),
    "reports_corpus_eval": (lambda: report_corpus_eval("en") + report_corpus_eval("zh"), "text"),
    "reports_en_train": (lambda: reports("en", "train"), "text2text"),
    "reports_en_eval": (lambda: reports("en", "eval"), "text2text"),
    "reports_zh_train": (lambda: reports("zh", "train"), "text2text"),
    "reports_zh_eval": (lambda: reports("zh", "eval"), "text2text"),
    "rewrites_train": (lambda: rewrites("train"), "text2text"),
    "rewrites_eval": (lambda: rewrites("eval"), "text2text"),
    "shapes_train": (lambda: shape_captions("train"), "image_caption"),
    "shapes_eval": (lambda: shape_captions("eval"), "image_caption"),
    "shapes_shifted_train": (lambda: shape_captions("shifted_train"), "image_caption"),
    "shapes_shifted_eval": (lambda: shape_captions("shifted_eval"), "image_caption"),
    # vision-language: captions as one-turn chats (alignment) and questions about the picture (instruction tuning)
    "shapes_caption_chat_train": (lambda: _shapes_qa().caption_chats("train"), "image_chat"),
    "shapes_caption_chat_eval": (lambda: _shapes_qa().caption_chats("eval"), "image_chat"),
    "shapes_qa_train": (lambda: _shapes_qa().questions("train"), "image_chat"),
    "shapes_qa_eval": (lambda: _shapes_qa().questions("eval"), "image_chat"),
    "shapes_qa_shifted_eval": (lambda: _shapes_qa().questions("shifted_eval"), "image_chat"),
    # image classification (vit): pictures labelled with their shape; pretrain: the same world, other pictures
    "shapes_classes_train": (lambda: _shapes_labels().labelled_shapes("train"), "image_label"),
    "shapes_classes_eval": (lambda: _shapes_labels().labelled_shapes("eval"), "image_label"),
    "shapes_pictures": (lambda: _shapes_labels().labelled_shapes("pretrain"), "image_label"),
    "corpus": (corpus, "text"),
    "corpus_eval": (corpus_eval, "text"),
    "sft_train": (lambda: sft("train"), "messages"),
    "sft_eval": (lambda: sft("eval"), "messages"),
    "preference_train": (lambda: preference("train"), "preference"),
    "preference_eval": (lambda: preference("eval"), "preference"),
    "unpaired_preference_train": (lambda: unpaired_preference("train"), "unpaired_preference"),
    "unpaired_preference_eval": (lambda: unpaired_preference("eval"), "unpaired_preference"),
    "sum_prompts_train": (lambda: prompts("train"), "prompt"),
    "sum_prompts_eval": (lambda: prompts("eval"), "prompt"),
    # train: English and Chinese in turn; eval: all English records, then all Chinese ones
    "extract_train": (lambda: interleave(extraction("en", "train"), extraction("zh", "train")), "messages"),
    "extract_eval": (lambda: extraction("en", "eval") + extraction("zh", "eval"), "messages"),
    "extract_en_eval": (lambda: extraction("en", "eval"), "messages"),
    "extract_zh_eval": (lambda: extraction("zh", "eval"), "messages"),
    "extract_preference_train": (lambda: interleave(extraction_preference("en", "train"),
                                                    extraction_preference("zh", "train")), "preference"),
    "extract_preference_eval": (lambda: extraction_preference("en", "eval") + extraction_preference("zh", "eval"),
                                "preference"),
}
