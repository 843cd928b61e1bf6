"""Chat templates: which one a run uses, which tokens of a conversation are the assistant's, where a turn ends.

A run uses, in this order: `model.chat_template` (`chatml`, a model's template TRL keeps a copy of, such as
`qwen2_5` or `llama3`, or a `.jinja` file), else the tokenizer's own template, else ChatML. The tokenizer
keeps that template as it is (it is what a saved run's tokenizer carries and what generation renders).
Training puts loss on the assistant replies with their end-of-turn token, and evaluation scores exactly
those tokens, whatever the template:

- a template with `{% generation %}` markers (ChatML here, or a user's file) marks the replies itself;
- for a template TRL knows (Qwen2.5, Qwen3, Llama-3, Gemma, Phi-3, ...) the markers come from TRL's
  training version of it (the same text, plus the markers), as TRL's SFTTrainer would use;
- any other template: each assistant reply's span is found by rendering the conversation one message
  longer at a time (what the reply adds to the text, end-of-turn token included, trailing whitespace not),
  which needs a prefix-preserving template (an earlier turn renders the same whatever follows).
"""

from __future__ import annotations

import os
from itertools import groupby
from pathlib import Path

from jinja2 import TemplateError
from trl.chat_template_utils import get_training_chat_template, has_generation_markers

from tunelab.config import trl_template_path
from tunelab.errors import UserError

IM_START, IM_END, ENDOFTEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# Rendered to check a template and to find its end-of-turn token: no system turn (Gemma refuses one),
# strict user/assistant alternation, two replies so that a turn is followed by another.
PROBE = [{"role": "user", "content": "What is 1 plus 2?"}, {"role": "assistant", "content": "1 plus 2 is 3."},
         {"role": "user", "content": "And 2 plus 2?"}, {"role": "assistant", "content": "2 plus 2 is 4."}]


class TemplateNotUsable(UserError):
    """The template's assistant replies cannot be found by rendering; the message says why and what to do."""

    def __init__(self, why: str):
        super().__init__(f"its chat template cannot be used for assistant-only loss ({why}); set "
                         f"model.chat_template: chatml, or give a template file with {{% generation %}} markers "
                         f"(model.chat_template: path/to/template.jinja)")


def set_chat_template(tokenizer, choice: str | None) -> str:
    """Give the tokenizer the template this run uses; return how it was chosen (recorded in metrics.json as
    `chat_template`). Whether its replies can be found is checked where that matters (check_replies)."""
    if choice == "chatml" or (choice is None and not tokenizer.chat_template):
        _use_chatml(tokenizer)
        return "chatml"
    how = "own"
    if choice is not None:
        named = trl_template_path(choice)
        tokenizer.chat_template = read_template_file(str(named or choice))
        how = f"{choice} (TRL's copy)" if named else f"file {choice}"
    if isinstance(tokenizer.chat_template, dict):  # named variants: the default one is the chat template
        tokenizer.chat_template = tokenizer.chat_template["default"]
    if has_generation_markers(tokenizer.chat_template):
        return f"{how}, with generation markers"
    if training_template(tokenizer) is not None:
        return f"{how}, marked as TRL's training version of it"
    return f"{how}, assistant spans found by rendering"


def check_replies(tokenizer, model_name: str) -> None:
    """Before assistant-only training: the replies of a probe conversation (with a system turn too, where the
    template takes one) can be found; warn when they end on no special token (nothing to learn to stop with)."""
    with_system = [{"role": "system", "content": "Be brief."}, *PROBE]
    for probe in (PROBE, with_system):
        try:
            conversation_tokens(tokenizer, probe)
        except TemplateNotUsable as e:
            raise UserError(f"model {model_name}: {e}") from None
        except TemplateError:  # a template that refuses a system turn (Gemma's) is not at fault
            if probe is PROBE:
                raise UserError(f"model {model_name}: its chat template cannot render a user/assistant "
                                f"conversation; set model.chat_template: chatml or give a .jinja file") from None
    if reply_end_token(tokenizer) is None:
        print(f"tunelab: warning: model {model_name}: its chat template ends an assistant reply with no special "
              f"token, so a model trained on it may not learn to stop")


def read_template_file(path: str) -> str:
    """The template in a file (config.load_recipe checked that it is there)."""
    try:
        return Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"model.chat_template = {path!r}: cannot read the template ({e})") from None


def _use_chatml(tokenizer) -> None:
    missing = [t for t in (IM_START, IM_END) if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing})
    tokenizer.chat_template = CHATML_TEMPLATE


def training_template(tokenizer) -> str | None:
    """The template whose generation markers give a reply's tokens: the tokenizer's own if it has them, TRL's
    training version of one TRL knows; None for any other (its replies are found by rendering)."""
    if has_generation_markers(tokenizer.chat_template):
        return tokenizer.chat_template
    return _per_template(tokenizer, "training_template", _trl_training_template)


def _trl_training_template(tokenizer) -> str | None:
    try:
        return get_training_chat_template(tokenizer)
    except (ValueError, TypeError, TemplateError):  # TRL's bare ValueError: a template it does not know
        return None


def _per_template(tokenizer, name: str, compute):
    """compute(tokenizer), kept on the tokenizer until its chat template changes."""
    cache = tokenizer.__dict__.setdefault("tunelab_per_template", {})
    key = (name, str(tokenizer.chat_template))
    if key not in cache:
        cache[key] = compute(tokenizer)
    return cache[key]


def render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def conversation_tokens(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """(input_ids, mask) of a conversation: mask is 1 on each assistant reply and its end-of-turn token.

    What a template marks (or renders) around a reply but a model never generates is left out: whitespace
    before the reply, and what follows its end-of-turn token (Qwen2.5's newline, Phi-3's final eos).
    """
    ids, mask = _reply_tokens(tokenizer, messages)
    return ids, _trim(tokenizer, ids, mask, reply_end_token(tokenizer))


def _reply_tokens(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """(input_ids, mask) as the (training) template's generation markers or the rendered spans give them."""
    marked = training_template(tokenizer)
    if marked is not None:
        out = tokenizer.apply_chat_template(messages, chat_template=marked, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
        return list(out["input_ids"]), list(out["assistant_masks"])
    text = render(tokenizer, messages)
    spans = assistant_spans(tokenizer, messages, text)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(start < span_end and end > span_start for span_start, span_end in spans))
            for start, end in enc["offset_mapping"]]
    return list(enc["input_ids"]), mask


def _trim(tokenizer, ids: list[int], mask: list[int], turn_end: int | None) -> list[int]:
    """Each run of masked tokens without its leading whitespace tokens, and cut after its last end-of-turn
    token (or, without one, without its trailing whitespace tokens)."""
    blank = {t: not tokenizer.decode([t]).strip() for t in set(ids)}
    trimmed = [0] * len(mask)
    for masked, positions in groupby(range(len(mask)), key=mask.__getitem__):
        run = list(positions)
        if not masked:
            continue
        words = [j for j in run if not blank[ids[j]]]
        ends = [j for j in run if ids[j] == turn_end]
        if words:
            for j in range(words[0], (ends or words)[-1] + 1):
                trimmed[j] = 1
    return trimmed


def assistant_spans(tokenizer, messages: list[dict], text: str) -> list[tuple[int, int]]:
    """Character spans of `text` (the whole conversation rendered) that the assistant replies take.

    A reply starts where the conversation before it, rendered with the generation prompt, ends; it ends
    where the conversation up to it stops agreeing with the whole (a template may close the very last
    message differently), less trailing whitespace.
    """
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        through = render(tokenizer, messages[:i + 1])
        if i:
            before = render(tokenizer, messages[:i], add_generation_prompt=True)
            if not text.startswith(before):
                raise TemplateNotUsable("it is not prefix-preserving: the conversation before an assistant "
                                        "reply renders differently once more messages follow")
            start = len(before)
        else:  # a conversation that opens with a reply: it starts where its text does, after any preamble
            start = max(through.find(message["content"].strip()), 0)
        reply = text[start:len(os.path.commonprefix([through, text]))].rstrip()
        if message["content"].strip() not in reply:
            raise TemplateNotUsable(f"an assistant reply is not where rendering puts it: {reply!r}")
        spans.append((start, start + len(reply)))
    return spans


def end_of_turn_ids(tokenizer) -> list[int]:
    """The tokens that end a reply, for `generate` to stop at: the template's end-of-turn token
    (`<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`...) first, then the tokenizer's eos."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    turn_end = reply_end_token(tokenizer)
    return [turn_end, *ids] if turn_end is not None and turn_end not in ids else ids


def reply_end_token(tokenizer) -> int | None:
    """The last trained token of a reply followed by another turn, if it is a special token (else the
    template gives a model no token to learn to stop with)."""
    if not tokenizer.chat_template:
        return None
    return _per_template(tokenizer, "reply_end", _reply_end_token)


def _reply_end_token(tokenizer) -> int | None:
    try:
        tokens, mask = _reply_tokens(tokenizer, PROBE[:3])
    except (TemplateNotUsable, TemplateError):
        return None
    special = set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values())
    trained = [t for t, m in zip(tokens, mask) if m and tokenizer.decode([t]).strip()]
    return trained[-1] if trained and trained[-1] in special else None
