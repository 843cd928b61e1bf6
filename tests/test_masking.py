"""SFT loss masking with loss_on=last_assistant: TRL's prompt-completion path, and the perplexity evaluation
picking the same tokens. Assistant-only loss across turns, per chat template: tests/test_templates.py."""

import datasets
import pytest
from trl import SFTConfig, SFTTrainer

from chat_templates import ENGLISH
from tunelab import checkpoints
from tunelab.families import causal_lm
from tunelab.config import ModelConfig
from tunelab.data.chat import IM_END
from tunelab.evaluation.perplexity import loss_tokens

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def model_and_tokenizer():
    return causal_lm.load_model(ModelConfig(name_or_path=checkpoints.EMBEDDED_QWEN2))


def test_last_assistant_turn_only(model_and_tokenizer, tmp_path):
    from tunelab.data.formats import _last_reply_as_completion

    model, tokenizer = model_and_tokenizer
    row = _last_reply_as_completion({"messages": ENGLISH})
    ds = datasets.Dataset.from_list([row])
    args = SFTConfig(output_dir=str(tmp_path), report_to="none", bf16=False, activation_checkpointing=False)
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[0]])
    got = [i for i, l in zip(batch["input_ids"][0].tolist(), batch["labels"][0].tolist()) if l != -100]
    # TRL's completion is all the template appends after the prompt: Qwen2.5's newline comes along
    assert tokenizer.decode(got) == "You are welcome." + IM_END + "\n"
    ids, mask = loss_tokens(tokenizer, row, max_length=512)
    assert [i for i, m in zip(ids, mask) if m] == got
