"""Chat templates. ChatML is the fallback when a tokenizer has none (set explicitly, recorded in the run).

The `{% generation %}` markers let `apply_chat_template(..., return_assistant_tokens_mask=True)` (and so
TRL's `assistant_only_loss`) mark exactly each assistant reply plus its `<|im_end|>`, which is trained
so that a fine-tuned model learns to stop.
"""

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


def ensure_chat_template(tokenizer, force_chatml: bool = False) -> str:
    """Give the tokenizer a chat template; return which one it uses ('own' or 'chatml')."""
    if tokenizer.chat_template and not force_chatml:
        return "own"
    missing = [t for t in (IM_START, IM_END) if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing})
    tokenizer.chat_template = CHATML_TEMPLATE
    return "chatml"
