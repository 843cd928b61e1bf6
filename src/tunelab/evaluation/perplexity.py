"""Perplexity: exp of the token-weighted mean NLL over the loss-bearing tokens of a data set.

Token-weighted, not a mean of per-batch means: a batch of long replies counts for more tokens than a
batch of short ones. The loss-bearing tokens are chosen exactly as in training (see `loss_tokens`;
tests/test_masking.py checks they equal TRL's labels).
"""

from __future__ import annotations

import math

import torch
from trl.data_utils import common_prefix_length

from tunelab.data.chat import conversation_tokens


def loss_tokens(tokenizer, row: dict, max_length: int, loss_on: str = "assistant") -> tuple[list[int], list[int]]:
    """(input_ids, mask) of one converted record; mask is 1 where the token carries loss.

    messages: the assistant replies with their end-of-turn token (data.chat.conversation_tokens);
    prompt/completion and preference (prompt + chosen): the completion and what the template closes it with;
    text: every token, with the end-of-sequence token appended as TRL does. loss_on=all: every token of
    messages and prompt/completion records, as SFT trains them then.
    """
    if "messages" in row:
        ids, mask = conversation_tokens(tokenizer, row["messages"])
        if loss_on == "all":
            mask = [1] * len(ids)
    elif "text" in row:
        ids = tokenizer(row["text"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        mask = [1] * len(ids)
    else:
        prompt, completion = row["prompt"], row.get("completion", row.get("chosen"))
        if isinstance(prompt, list):
            prompt_ids = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True,
                                                       return_dict=True)["input_ids"]
            # As TRL does, the completion is everything the template adds after the prompt (with ChatML
            # that includes the newline after <|im_end|>), from where the two token lists part.
            ids = tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)["input_ids"]
            prompt_ids = prompt_ids[:common_prefix_length(prompt_ids, ids)]
        else:
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            ids = prompt_ids + tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        trained_prompt = loss_on == "all" and "completion" in row  # as TRL with completion_only_loss=False
        mask = [int(trained_prompt)] * len(prompt_ids) + [1] * (len(ids) - len(prompt_ids))
    return list(ids[:max_length]), list(mask[:max_length])


@torch.no_grad()
def perplexity(model, tokenizer, rows: list[dict], max_length: int, batch_size: int = 32,
               loss_on: str = "assistant") -> dict:
    """{'eval_loss', 'perplexity', 'eval_tokens'} over the loss-bearing tokens of `rows`."""
    model.eval()
    device = next(model.parameters()).device
    encoded = sorted((loss_tokens(tokenizer, r, max_length, loss_on) for r in rows), key=lambda e: len(e[0]))
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(encoded), batch_size):
        batch = encoded[start:start + batch_size]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        for i, (ids, mask) in enumerate(batch):  # right padding
            input_ids[i, :len(ids)] = torch.tensor(ids)
            attention[i, :len(ids)] = 1
            labels[i, :len(ids)] = torch.tensor([t if m else -100 for t, m in zip(ids, mask)])
        logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits.float()
        shift_logits, shift_labels = logits[:, :-1], labels[:, 1:].to(device)
        # Prompt-learning adapters prepend virtual tokens to the logits: keep the last positions only.
        shift_logits = shift_logits[:, -shift_labels.shape[1]:]
        nll = torch.nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]),
                                                shift_labels.reshape(-1), ignore_index=-100, reduction="sum")
        total_nll += nll.item()
        total_tokens += int((shift_labels != -100).sum())
    if total_tokens == 0:
        return {"eval_loss": float("nan"), "perplexity": float("nan"), "eval_tokens": 0}
    mean = total_nll / total_tokens
    return {"eval_loss": mean, "perplexity": math.exp(mean), "eval_tokens": total_tokens}
