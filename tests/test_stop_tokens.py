"""A fine-tuned model stops where its template ends a turn: in tunelab's generate, and in transformers'
own generate() on the merged model, also when the pad token is the eos token (as SmolLM2 ships it)."""

import json

import pytest
import torch
import transformers

from chat_templates import tiny_copy
from conftest import RECIPES, run_cli
from tunelab import checkpoints
from tunelab.families import causal_lm
from tunelab.config import GenerateConfig
from tunelab.evaluation.generation import generate

pytestmark = pytest.mark.recipe
QUESTION = [{"role": "user", "content": "What is 2 plus 3?"}]
MAX_NEW = 40


@pytest.fixture(scope="module")
def pad_is_eos_run(tmp_path_factory, embedded_cache):
    """A LoRA SFT run on a copy of the tiny default with SmolLM2's template and pad = eos = <|im_end|>."""
    root = tmp_path_factory.mktemp("stops")
    copy = tiny_copy(checkpoints.resolve(checkpoints.EMBEDDED_QWEN2), "smollm2-chatml", root / "base")
    tokenizer = transformers.AutoTokenizer.from_pretrained(copy)
    tokenizer.pad_token = tokenizer.eos_token = "<|im_end|>"
    tokenizer.save_pretrained(copy)
    from tunelab.cli import main

    out = root / "run"
    assert main(["train", str(RECIPES / "sft_lora.yaml"), f"model.name_or_path={copy}", "train.max_steps=30",
                 "eval.max_samples=4", "--output-dir", str(out)]) == 0
    return out


def new_tokens(model, tokenizer, **kwargs) -> list[int]:
    prompt = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=MAX_NEW, do_sample=False, **kwargs)
    return out[0, prompt["input_ids"].shape[1]:].tolist()


def test_the_run_saves_its_end_of_turn_and_generate_stops_there(pad_is_eos_run):
    model, tokenizer = causal_lm.load_run(pad_is_eos_run)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.pad_token_id == im_end
    saved = json.loads((pad_is_eos_run / "adapter" / "generation_config.json").read_text())
    assert im_end in saved["eos_token_id"]
    tokens = new_tokens(model, tokenizer)  # the saved generation_config alone, no eos passed in
    assert im_end in tokens and tokens.index(im_end) == len(tokens) - 1, tokenizer.decode(tokens)
    reply = generate(model, tokenizer, [QUESTION], GenerateConfig(max_new_tokens=MAX_NEW))[0]
    assert reply == tokenizer.decode(tokens[:-1]).strip()


def test_the_merged_model_stops_with_transformers_alone(pad_is_eos_run, tmp_path, capsys):
    merged = tmp_path / "merged"
    code, _, err = run_cli(capsys, "merge", pad_is_eos_run, merged)
    assert code == 0, err
    model = transformers.AutoModelForCausalLM.from_pretrained(merged)
    tokenizer = transformers.AutoTokenizer.from_pretrained(merged)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in model.generation_config.eos_token_id
    tokens = new_tokens(model, tokenizer)
    assert im_end in tokens and tokens.index(im_end) == len(tokens) - 1, tokenizer.decode(tokens)
    # without the end of turn in its generation_config it would have run on to MAX_NEW tokens
    model.generation_config.eos_token_id = None
    assert len(new_tokens(model, tokenizer)) == MAX_NEW
