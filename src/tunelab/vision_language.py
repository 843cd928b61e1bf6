"""A LLaVA-style vision-language model from parts: a CLIP vision tower, a projector, a causal LM.

LLaVA (Liu et al. 2023, https://arxiv.org/abs/2304.08485) and minimind-V feed the image to the language model as
tokens: the vision tower turns a picture into one feature per patch, a small MLP (the projector) maps each into
the LM's embedding space, and those vectors take the place of `<image>` placeholder tokens in the prompt.
transformers' LlavaForConditionalGeneration does exactly this, so the assembled model is one of its instances and
a finished run loads with transformers alone (LlavaForConditionalGeneration + LlavaProcessor).

What is written here, and why transformers has no function for it: building a LlavaConfig from two separately
trained checkpoints and copying their weights in; turning a chat into token ids with the picture's placeholders
expanded and loss only on the replies (LlavaProcessor expands placeholders but knows no chat roles).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers
from transformers import AddedToken, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

from tunelab.data.chat import end_of_turn_ids, render

IMAGE_TOKEN = "<image>"
# LLaVA's choices: features of the vision tower's second-to-last layer (the last one is shaped by the contrastive
# objective at the class token), the class token dropped, a two-layer MLP with GELU as the projector.
FEATURE_LAYER, FEATURE_STRATEGY, PROJECTOR_ACT = -2, "default", "gelu"


def assemble(language_model, tokenizer, clip_model, image_processor) -> tuple:
    """(LlavaForConditionalGeneration, LlavaProcessor) holding the LM's and the CLIP vision tower's weights and a
    freshly initialised projector. The tokenizer gains the `<image>` token (and the LM an embedding row for it)."""
    tokenizer.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
    language_model.resize_token_embeddings(len(tokenizer))
    text_config = language_model.config
    config = LlavaConfig(vision_config=clip_model.config.vision_config, text_config=text_config,
                         image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), projector_hidden_act=PROJECTOR_ACT,
                         vision_feature_layer=FEATURE_LAYER, vision_feature_select_strategy=FEATURE_STRATEGY,
                         tie_word_embeddings=text_config.tie_word_embeddings)
    model = LlavaForConditionalGeneration(config)
    model.model.vision_tower.load_state_dict(clip_model.vision_model.state_dict())
    model.model.language_model.load_state_dict(language_model.get_decoder().state_dict())
    model.lm_head.load_state_dict(language_model.get_output_embeddings().state_dict())
    # The projector's output layer starts at zero, as LoRA's B does: the LM first sees blank image tokens instead of
    # features that swamp its own embeddings (the tiny CLIP's, projected at random, have 17x their norm: 13.1 vs
    # 0.75), and learns to read the picture as the layer grows.
    torch.nn.init.zeros_(model.model.multi_modal_projector.linear_2.weight)
    model.generation_config = language_model.generation_config
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                               patch_size=config.vision_config.patch_size, num_additional_image_tokens=1,
                               vision_feature_select_strategy=FEATURE_STRATEGY, chat_template=tokenizer.chat_template)
    return model, processor


def load(path: str | Path) -> tuple:
    """(model, processor) of a saved vision-language model."""
    return LlavaForConditionalGeneration.from_pretrained(path), load_processor(path)


def load_processor(path: str | Path) -> LlavaProcessor:
    """The saved processor, built from its parts so that the image processor runs on Pillow: transformers' default
    back end needs torchvision, which tunelab does not install."""
    settings = json.loads((Path(path) / "processor_config.json").read_text())
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    return LlavaProcessor(image_processor=transformers.AutoImageProcessor.from_pretrained(path, backend="pil"),
                          tokenizer=tokenizer, patch_size=settings["patch_size"],
                          num_additional_image_tokens=settings["num_additional_image_tokens"],
                          vision_feature_select_strategy=settings["vision_feature_select_strategy"],
                          chat_template=tokenizer.chat_template)


def image_token_count(processor) -> int:
    """How many placeholders one picture becomes: one per patch (the class token is dropped)."""
    size = processor.image_processor.crop_size
    return (size["height"] // processor.patch_size) * (size["width"] // processor.patch_size)


def with_image(messages: list[dict]) -> list[dict]:
    """The chat with the picture's placeholder at the start of the first user message, unless one is there."""
    if any(IMAGE_TOKEN in m["content"] for m in messages):
        return messages
    first_user = next(i for i, m in enumerate(messages) if m["role"] == "user")
    marked = dict(messages[first_user], content=f"{IMAGE_TOKEN}\n{messages[first_user]['content']}")
    return [*messages[:first_user], marked, *messages[first_user + 1:]]


def _expanded(processor, text: str) -> str:
    return text.replace(IMAGE_TOKEN, IMAGE_TOKEN * image_token_count(processor))


def encode_chat(processor, messages: list[dict]) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of a chat about one picture: labels are -100 except on each assistant reply and its
    end-of-turn token (the newline a template writes after that token carries no loss, as in TRL)."""
    tokenizer, messages = processor.tokenizer, with_image(messages)
    text = _expanded(processor, render(tokenizer, messages))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, labels = encoded["input_ids"], [-100] * len(encoded["input_ids"])
    turn_ends = set(end_of_turn_ids(tokenizer))
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_expanded(processor, render(tokenizer, messages[:i], add_generation_prompt=True)))
        end = len(_expanded(processor, render(tokenizer, messages[:i + 1])))
        reply = [t for t, (a, _) in enumerate(encoded["offset_mapping"]) if start <= a < end]
        last = max((t for t in reply if ids[t] in turn_ends), default=reply[-1] if reply else None)
        for t in reply:
            if t <= last:
                labels[t] = ids[t]
    return ids, labels


def prompt_ids(processor, messages: list[dict]) -> list[int]:
    """Token ids of a chat up to the assistant's turn, ready to generate from."""
    text = _expanded(processor, render(processor.tokenizer, with_image(messages), add_generation_prompt=True))
    return processor.tokenizer(text, add_special_tokens=False)["input_ids"]


def pixels(processor, images: list) -> torch.Tensor:
    return processor.image_processor(images=images, return_tensors="pt")["pixel_values"]


@torch.no_grad()
def answer(model, processor, chats: list[list[dict]], images: list, generate_kwargs: dict) -> list[str]:
    """One reply per (chat, picture), generated after left-padded prompts; special tokens dropped."""
    tokenizer = processor.tokenizer
    prompts = [prompt_ids(processor, chat) for chat in chats]
    width = max(map(len, prompts))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    model.eval()
    device = next(model.parameters()).device
    out = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                         pixel_values=pixels(processor, images).to(device, model.dtype),
                         **{**generate_kwargs, "pad_token_id": pad})
    return [t.strip() for t in tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)]
