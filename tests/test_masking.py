"""SFT loss masking: exactly the assistant replies plus their end-of-turn token, across turns.

Checked on what TRL actually trains (its prepared dataset and collator), and checked that the
perplexity evaluation picks the same tokens.
"""

import datasets
import pytest
from trl import SFTConfig, SFTTrainer

from tunelab import models
from tunelab.config import ModelConfig
from tunelab.data.chat import IM_END
from tunelab.evaluation.perplexity import loss_tokens

pytestmark = pytest.mark.unit

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


@pytest.fixture(scope="module")
def model_and_tokenizer():
    return models.load_causal_lm(ModelConfig(name_or_path=models.EMBEDDED_QWEN2))


def trained_tokens(model, tokenizer, conversation, tmp_path, **loss_args):
    ds = datasets.Dataset.from_list([{"messages": conversation}])
    args = SFTConfig(output_dir=str(tmp_path), report_to="none", bf16=False, activation_checkpointing=False,
                     max_length=512, **loss_args)
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[0]])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    return [i for i, label in zip(ids, labels) if label != -100]


@pytest.mark.parametrize("conversation", [ENGLISH, CHINESE], ids=["english", "chinese"])
def test_trl_trains_exactly_the_assistant_replies_and_end_tokens(model_and_tokenizer, tmp_path, conversation):
    model, tokenizer = model_and_tokenizer
    got = tokenizer.decode(trained_tokens(model, tokenizer, conversation, tmp_path, assistant_only_loss=True))
    expected = "".join(m["content"] + IM_END for m in conversation if m["role"] == "assistant")
    assert got == expected


@pytest.mark.parametrize("conversation", [ENGLISH, CHINESE], ids=["english", "chinese"])
def test_perplexity_scores_the_same_tokens_as_training(model_and_tokenizer, tmp_path, conversation):
    model, tokenizer = model_and_tokenizer
    trl_ids = trained_tokens(model, tokenizer, conversation, tmp_path, assistant_only_loss=True)
    ids, mask = loss_tokens(tokenizer, {"messages": conversation}, max_length=512)
    assert [i for i, m in zip(ids, mask) if m] == trl_ids


def test_last_assistant_turn_only(model_and_tokenizer, tmp_path):
    from tunelab.data.formats import _last_reply_as_completion

    model, tokenizer = model_and_tokenizer
    row = _last_reply_as_completion({"messages": ENGLISH})
    ds = datasets.Dataset.from_list([row])
    args = SFTConfig(output_dir=str(tmp_path), report_to="none", bf16=False, activation_checkpointing=False)
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[0]])
    got = [i for i, l in zip(batch["input_ids"][0].tolist(), batch["labels"][0].tolist()) if l != -100]
    # TRL's completion is all the template appends after the prompt: ChatML's newline comes along
    assert tokenizer.decode(got) == "You are welcome." + IM_END + "\n"
    ids, mask = loss_tokens(tokenizer, row, max_length=512)
    assert [i for i, m in zip(ids, mask) if m] == got
