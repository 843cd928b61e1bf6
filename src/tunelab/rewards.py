"""What scores a sampled reply in GRPO and RLOO: a recipe's `rewards:` list, each entry one of
- `exact_answer`: 1 when the reply's answer equals the record's `answer` (its last number, for a number; else its
  whole text, ignoring case and end punctuation), 0 when not; no score for a record without an answer;
- `format`: 1 when the reply is one line that ends like a sentence (the house style of a short answer), else 0;
- the directory of a `causal_lm.reward` run: its reward model's score of prompt + reply;
- `module:function`: a function of yours, looked up from the current directory too.
TRL calls each as f(prompts=..., completions=..., completion_ids=..., **record_fields) and sums their outputs
(weights: train.reward_weights); a completion is a string, or a one-message list for conversational prompts.
"""

from __future__ import annotations

import functools
import importlib
import re
import sys
from pathlib import Path
from typing import Callable

import torch

from tunelab.config import Recipe
from tunelab.errors import UserError

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_SENTENCE_END = (".", "!", "?", "。", "！", "？")


def reply_text(completion) -> str:
    """The text of a completion as TRL hands it over: a string, or [{"role": "assistant", "content": ...}]."""
    return completion[-1]["content"] if isinstance(completion, list) else completion


def answer_matches(reply: str, answer: str) -> bool:
    if _NUMBER.fullmatch(answer):
        found = _NUMBER.findall(reply)
        return bool(found) and float(found[-1]) == float(answer)
    def bare(text: str) -> str:
        return text.strip().rstrip("".join(_SENTENCE_END)).strip().casefold()
    return bare(reply) == bare(answer)


def exact_answer(completions, answer=None, **_) -> list[float | None]:
    answers = answer if answer is not None else [None] * len(completions)
    return [None if a is None else float(answer_matches(reply_text(c), a)) for c, a in zip(completions, answers)]


def format_reward(completions, **_) -> list[float]:
    texts = [reply_text(c).strip() for c in completions]
    return [float(bool(t) and "\n" not in t and t.endswith(_SENTENCE_END)) for t in texts]


BUILTIN = {"exact_answer": exact_answer, "format": format_reward}


def resolve(recipe: Recipe, load_reward_run: Callable) -> tuple[list, list]:
    """(reward_funcs, reward_processing_classes) for TRL from the recipe's `rewards:` list."""
    at = recipe.origin("rewards")
    if not recipe.rewards:
        raise UserError(f"{at}: a {recipe.recipe} recipe needs `rewards:` (e.g. [exact_answer, format], a "
                        f"causal_lm.reward run directory, or module:function)")
    funcs, processors = [], []
    for entry in recipe.rewards:
        if entry in BUILTIN:
            funcs.append(BUILTIN[entry])
            processors.append(None)
        elif Path(entry).expanduser().is_dir():
            model, tokenizer = load_reward_run(Path(entry).expanduser(), at)
            funcs.append(model)
            processors.append(tokenizer)
        elif ":" in entry:
            funcs.append(checked(user_function(entry, at), entry, at))
            processors.append(None)
        else:
            raise UserError(f"{at}: rewards entry {entry!r} is not a built-in ({', '.join(BUILTIN)}), a run "
                            f"directory, or module:function")
    return funcs, processors


def user_function(entry: str, at: str) -> Callable:
    module_name, _, name = entry.partition(":")
    # A console script does not put the current directory on sys.path; a user's rewards.py lives there.
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any failure of the user's module is theirs to fix
        raise UserError(f"{at}: rewards entry {entry!r}: cannot import module {module_name!r} "
                        f"({type(e).__name__}: {e})") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise UserError(f"{at}: rewards entry {entry!r}: module {module_name!r} has no function {name!r}")
    return function


def checked(function: Callable, entry: str, at: str) -> Callable:
    """The user's function, with its output checked: one number (or None, no score) per completion."""
    @functools.wraps(function)
    def call(prompts=None, completions=None, **kwargs):
        out = function(prompts=prompts, completions=completions, **kwargs)
        ok = isinstance(out, (list, tuple)) and len(out) == len(completions) and all(
            v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in out)
        if not ok:
            shown = f"{type(out).__name__} of {len(out)}" if isinstance(out, (list, tuple)) else repr(out)[:60]
            raise UserError(f"{at}: rewards entry {entry!r} returned {shown}; it should return a list of "
                            f"{len(completions)} numbers (or None for no score), one per completion")
        return [None if v is None else float(v) for v in out]
    return call


def probe(funcs: list, rows: list[dict]) -> None:
    """Call each reward function once on two records (their answer, or their prompt's text, as the reply), so
    that a function that fails or returns the wrong shape stops the run before anything is written."""
    rows = rows[:2]
    prompts = [r["prompt"] for r in rows]
    completions = [[{"role": "assistant", "content": r.get("answer") or ""}] if isinstance(r["prompt"], list)
                   else r.get("answer") or "" for r in rows]
    columns = {k: [r.get(k) for r in rows] for k in rows[0] if k != "prompt"} if rows else {}
    for f in funcs:
        if callable(f) and not isinstance(f, torch.nn.Module):
            f(prompts=prompts, completions=completions, completion_ids=[[] for _ in rows], **columns)


def sequence_scores(model, tokenizer, conversations: list, batch_size: int = 16) -> list[float]:
    """A reward model's score of each conversation (a message list, rendered by the chat template as TRL's
    RewardTrainer renders it) or text, read at its last non-pad token."""
    texts = [tokenizer.apply_chat_template(c, tokenize=False) if isinstance(c, list) else c for c in conversations]
    scores = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(texts[i:i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            scores += model(**batch).logits[:, 0].float().tolist()  # (B,) the score head has one output
    return scores


def pair_scores(model, tokenizer, rows: list[dict]) -> dict:
    """Reward accuracy (chosen scored above rejected) and mean margin on preference pairs."""
    # prompt + reply: two message lists joined into one conversation, or two strings into one text
    chosen = sequence_scores(model, tokenizer, [r["prompt"] + r["chosen"] for r in rows])
    rejected = sequence_scores(model, tokenizer, [r["prompt"] + r["rejected"] for r in rows])
    margins = [c - r for c, r in zip(chosen, rejected)]
    return {"accuracy": sum(m > 0 for m in margins) / len(margins), "margin": sum(margins) / len(margins),
            "mean_reward": (sum(chosen) + sum(rejected)) / (2 * len(margins)), "pairs": len(margins)}
