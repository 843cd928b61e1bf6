"""Real chat templates: what SFT trains, what evaluation scores, and that a run on each evaluates.

For each template people fine-tune with (tests/chat_templates.py), put into a copy of the tiny default:
the tokens TRL trains on are exactly the assistant replies with their end-of-turn token, in English and
Chinese across three turns; evaluation scores exactly TRL's labels; perplexity is finite.
"""

import json
import math

import datasets
import pytest
from trl import SFTConfig, SFTTrainer

from chat_templates import CHINESE, ENGLISH, TEMPLATES, tiny_copy
from conftest import RECIPES, assert_user_error, run_cli
from tunelab import checkpoints
from tunelab.families import causal_lm
from tunelab.config import ModelConfig
from tunelab.data.chat import end_of_turn_ids
from tunelab.evaluation.perplexity import loss_tokens, perplexity
from tunelab.families.causal_lm import for_trainer, tokenize_conversations

SFT = RECIPES / "sft_lora.yaml"
# Qwen3's template (TRL's training version) renders an empty thinking block in every reply: it is what
# the model learns to write, so it is trained.
REPLY_PREFIX = {"qwen3": "<think>\n\n</think>\n\n"}


@pytest.fixture(scope="module")
def copies(tmp_path_factory, embedded_cache):
    base = checkpoints.resolve(checkpoints.EMBEDDED_QWEN2)
    root = tmp_path_factory.mktemp("templates")
    return {name: tiny_copy(base, name, root / name) for name in TEMPLATES}


def conversation(name: str, language: str) -> list[dict]:
    messages = ENGLISH if language == "english" else CHINESE
    takes_system = TEMPLATES[name][4]
    return messages if takes_system else messages[1:]  # Gemma refuses a system turn


def trl_labels(model, tokenizer, ds, tmp_path, **args) -> list[int]:
    """The label ids TRL's SFTTrainer trains on for the first record (its own dataset preparation and collator)."""
    config = SFTConfig(output_dir=str(tmp_path), report_to="none", bf16=False, activation_checkpointing=False,
                       max_length=512, use_cpu=True, **args)
    trainer = SFTTrainer(model=model, args=config, train_dataset=ds, processing_class=tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[0]])
    return [i for i, label in zip(batch["input_ids"][0].tolist(), batch["labels"][0].tolist()) if label != -100]


@pytest.mark.unit
@pytest.mark.parametrize("language", ["english", "chinese"])
@pytest.mark.parametrize("name", list(TEMPLATES))
def test_trained_tokens_are_the_replies_and_evaluation_scores_them(copies, tmp_path, name, language):
    model, tokenizer = causal_lm.load_model(ModelConfig(name_or_path=str(copies[name])))
    messages = conversation(name, language)
    ds = tokenize_conversations(datasets.Dataset.from_list([{"messages": messages}]), tokenizer, "assistant",
                                ["test:1"], name)
    labels = trl_labels(model, tokenizer, for_trainer(ds), tmp_path)

    turn_end = TEMPLATES[name][3]
    expected = "".join(REPLY_PREFIX.get(name, "") + m["content"] + turn_end for m in messages if m["role"] == "assistant")
    assert tokenizer.decode(labels) == expected
    ids, mask = loss_tokens(tokenizer, {"messages": messages}, max_length=512)
    assert [i for i, m in zip(ids, mask) if m] == labels
    scores = perplexity(model, tokenizer, [{"messages": messages}], max_length=512)
    assert math.isfinite(scores["perplexity"]) and scores["eval_tokens"] == len(labels)


@pytest.mark.unit
@pytest.mark.parametrize("name", ["qwen2.5", "qwen3", "llama3", "gemma", "phi3"])
def test_templates_trl_knows_train_what_trl_itself_would(copies, tmp_path, name):
    """TRL left to itself (its own template swap and masks) trains the same tokens, plus at most what a
    model never generates: whitespace around a reply, or what follows its end-of-turn token."""
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(copies[name])
    raw = transformers.AutoTokenizer.from_pretrained(copies[name])
    messages = conversation(name, "english")
    theirs = trl_labels(model, raw, datasets.Dataset.from_list([{"messages": messages}]), tmp_path,
                        assistant_only_loss=True)
    _, tokenizer = causal_lm.load_model(ModelConfig(name_or_path=str(copies[name])))
    ids, mask = loss_tokens(tokenizer, {"messages": messages}, max_length=512)
    ours = [i for i, m in zip(ids, mask) if m]
    assert ours
    left_out, position = [], 0
    for token in theirs:  # ours must be theirs with some tokens left out, in order
        if position < len(ours) and token == ours[position]:
            position += 1
        else:
            left_out.append(token)
    assert position == len(ours), "we train a token TRL would not"
    assert all(not raw.decode([t]).strip() or t == raw.eos_token_id for t in left_out), raw.decode(left_out)


@pytest.mark.unit
@pytest.mark.parametrize("name", list(TEMPLATES))
def test_generation_stops_at_the_templates_end_of_turn(copies, name):
    _, tokenizer = causal_lm.load_model(ModelConfig(name_or_path=str(copies[name])))
    turn_end = tokenizer.convert_tokens_to_ids(TEMPLATES[name][3])
    assert end_of_turn_ids(tokenizer)[0] == turn_end


@pytest.mark.unit
def test_a_base_model_given_chatml_ends_turns_with_im_end(copies, tmp_path):
    import transformers

    base = tmp_path / "base"
    tokenizer = transformers.AutoTokenizer.from_pretrained(copies["unseen"])
    tokenizer.chat_template = None
    tokenizer.eos_token = "<|endoftext|>"
    tokenizer.save_pretrained(base)
    transformers.AutoModelForCausalLM.from_pretrained(copies["unseen"]).save_pretrained(base)
    _, loaded = causal_lm.load_model(ModelConfig(name_or_path=str(base)))
    assert loaded.tunelab_chat_template == "chatml"
    assert loaded.convert_ids_to_tokens(end_of_turn_ids(loaded)) == ["<|im_end|>", "<|endoftext|>"]


@pytest.mark.unit
def test_a_template_file_or_a_template_trl_keeps_is_used(copies, tmp_path):
    path = tmp_path / "mine.jinja"
    path.write_text(TEMPLATES["unseen"][0], encoding="utf-8")
    _, tokenizer = causal_lm.load_model(ModelConfig(name_or_path=str(copies["qwen2.5"]), chat_template=str(path)))
    assert tokenizer.tunelab_chat_template.startswith("file ") and tokenizer.chat_template == TEMPLATES["unseen"][0]
    _, tokenizer = causal_lm.load_model(ModelConfig(name_or_path=str(copies["unseen"]), chat_template="qwen2_5"))
    # the tokenizer keeps the template verbatim (what a saved run carries); training marks it with TRL's version
    assert tokenizer.chat_template == TEMPLATES["qwen2.5"][0]
    assert tokenizer.tunelab_chat_template == "qwen2_5 (TRL's copy), marked as TRL's training version of it"


@pytest.mark.unit
def test_tool_messages_need_a_template_that_renders_them(copies):
    from tunelab.errors import UserError

    messages = [{"role": "user", "content": "Weather in Paris?"}, {"role": "assistant", "content": "Calling it."},
                {"role": "tool", "content": "sunny, 21 C"}, {"role": "assistant", "content": "Sunny, 21 C."}]
    ds = datasets.Dataset.from_list([{"messages": messages}])
    _, chatml = causal_lm.load_model(ModelConfig(name_or_path=str(copies["smollm2-chatml"])))
    row = tokenize_conversations(ds, chatml, "assistant", ["chat.jsonl:1"], "smollm2")[0]
    ids, mask = row["input_ids"], row["assistant_masks"]
    assert "sunny, 21 C" in chatml.decode(ids)
    assert chatml.decode([i for i, m in zip(ids, mask) if m]) == "Calling it.<|im_end|>Sunny, 21 C.<|im_end|>"
    _, phi3 = causal_lm.load_model(ModelConfig(name_or_path=str(copies["phi3"])))
    with pytest.raises(UserError, match=r"chat\.jsonl:1: the chat template of phi3 leaves tool messages "
                                        r"out"):
        tokenize_conversations(ds, phi3, "assistant", ["chat.jsonl:1"], "phi3")


NOT_PREFIX_PRESERVING = ("{{ messages | length }} messages\n{% for m in messages %}{{ m['role'] + ': ' + m['content'] "
                         "+ eos_token + '\n' }}{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")


# Mistral-v0.3's habit: the system prompt goes into the last user message, so an earlier turn renders
# differently once a later one follows; only a conversation with a system turn shows it.
SYSTEM_IN_LAST_USER = (
    "{%- set system = messages[0]['content'] if messages[0]['role'] == 'system' else '' %}"
    "{%- set ns = namespace(last=0) %}{%- for m in messages %}{% if m['role'] == 'user' %}"
    "{% set ns.last = loop.index0 %}{% endif %}{% endfor %}"
    "{%- for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + (system + '\n\n' if loop.index0 == ns.last "
    "and system else '') + m['content'] + ' [/INST]' }}{% elif m['role'] == 'assistant' %}"
    "{{ m['content'] + eos_token }}{% endif %}{% endfor %}")


@pytest.mark.unit
@pytest.mark.parametrize("template", [NOT_PREFIX_PRESERVING, SYSTEM_IN_LAST_USER], ids=["counting", "mistral-like"])
def test_a_template_that_cannot_be_split_is_one_error_line(copies, tmp_path, capsys, template):
    path = tmp_path / "counting.jinja"
    path.write_text(template, encoding="utf-8")
    out = tmp_path / "run"
    assert_user_error(capsys, r"model .*unseen.*not prefix-preserving.*model\.chat_template: chatml",
                      "train", SFT, f"model.name_or_path={copies['unseen']}", f"model.chat_template={path}",
                      "--output-dir", out)
    assert not out.exists() and not out.with_name("run.partial").exists()
    assert_user_error(capsys, r"model\.chat_template = 'nothing\.txt': expected chatml, a model's template TRL keeps \(.*\), or an "
                      r"existing \.jinja",
                      "train", SFT, "model.chat_template=nothing.txt", "--output-dir", out)


def without_system(split: str, tmp_path) -> str:
    from tunelab.data.readers import read_records

    path = tmp_path / f"{split}.jsonl"
    rows = read_records(f"builtin:sft_{split}").rows
    path.write_text("".join(json.dumps({"messages": [m for m in r["messages"] if m["role"] != "system"]}) + "\n"
                            for r in rows), encoding="utf-8")
    return str(path)


@pytest.mark.recipe
@pytest.mark.parametrize("name", list(TEMPLATES))
def test_sft_run_on_each_template_evaluates(copies, tmp_path, capsys, name):
    out = tmp_path / "run"
    data = []
    if not TEMPLATES[name][4]:  # the built-in chats have system turns, which Gemma's template refuses
        assert_user_error(capsys, r"builtin:sft_train \(record \d+\): the chat template .* cannot render this "
                                  r"conversation: System role not supported",
                          "train", SFT, f"model.name_or_path={copies[name]}", "--output-dir", out)
        data = [f"data.{split}={without_system(split, tmp_path)}" for split in ("train", "eval")]
    code, _, err = run_cli(capsys, "train", SFT, f"model.name_or_path={copies[name]}", "train.max_steps=2",
                           "eval.max_samples=4", "eval.generate.max_new_tokens=4", *data, "--output-dir", out)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(metrics["eval"]["perplexity"]) and metrics["eval"]["eval_tokens"] > 0


@pytest.mark.recipe
@pytest.mark.parametrize("name", ["llama3", "smollm2-chatml", "unseen"])
def test_dpo_generate_and_merge_on_a_template(copies, tmp_path, capsys, name):
    """The other stages on a template TRL knows and on two it does not."""
    dpo, merged = tmp_path / "dpo", tmp_path / "merged"
    code, _, err = run_cli(capsys, "train", RECIPES / "dpo_lora.yaml", f"model.name_or_path={copies[name]}",
                           "train.max_steps=2", "eval.max_samples=4", "eval.generate.max_new_tokens=4",
                           "--output-dir", dpo)
    assert code == 0, err
    metrics = json.loads((dpo / "metrics.json").read_text())["eval"]
    assert math.isfinite(metrics["perplexity"]) and math.isfinite(metrics["rewards/margins"])
    code, out, err = run_cli(capsys, "generate", dpo, "--prompt", "What is 2 plus 3?", "--max-new-tokens", "6")
    assert code == 0 and out.strip(), err
    code, _, err = run_cli(capsys, "merge", dpo, merged)
    assert code == 0, err
    saved = json.loads((merged / "generation_config.json").read_text())["eos_token_id"]
    assert saved[0] == causal_lm.load_run(dpo)[1].convert_tokens_to_ids(TEMPLATES[name][3])


@pytest.mark.unit
def test_a_thinking_models_reasoning_block_is_not_scored():
    from tunelab.evaluation.generation import answer_of

    assert answer_of("<think>\n\n</think>\n\n1 plus 2 is 3.") == "1 plus 2 is 3."
    assert answer_of("<think>3 it is</think>1 plus 2 is 3.") == "1 plus 2 is 3."
    assert answer_of("1 plus 2 is 3. </think> 4") == "1 plus 2 is 3. </think> 4"  # no block opened first


@pytest.mark.unit
def test_a_conversation_that_opens_with_a_reply_trains_the_reply_only(copies):
    _, tokenizer = causal_lm.load_model(ModelConfig(name_or_path=str(copies["smollm2-chatml"])))
    messages = [{"role": "assistant", "content": "Hello, how can I help?"}, *ENGLISH[1:3]]
    ids, mask = loss_tokens(tokenizer, {"messages": messages}, max_length=512)
    assert tokenizer.decode([i for i, m in zip(ids, mask) if m]) == \
        "Hello, how can I help?<|im_end|>1 plus 2 is 3.<|im_end|>"


@pytest.mark.unit
def test_loss_on_all_scores_every_token_of_a_prompt_completion_record(copies):
    _, tokenizer = causal_lm.load_model(ModelConfig(name_or_path=str(copies["qwen2.5"])))
    row = {"prompt": ENGLISH[:2], "completion": ENGLISH[2:3]}
    assert 0 in loss_tokens(tokenizer, row, 512)[1]
    assert set(loss_tokens(tokenizer, row, 512, loss_on="all")[1]) == {1}


@pytest.mark.recipe
def test_a_run_outlives_its_template_file(copies, tmp_path, capsys):
    """The run's saved tokenizer carries the template: eval, --baseline and generate work once the file is gone."""
    path, out = tmp_path / "mine.jinja", tmp_path / "run"
    path.write_text(TEMPLATES["unseen"][0], encoding="utf-8")
    code, _, err = run_cli(capsys, "train", SFT, f"model.name_or_path={copies['unseen']}", f"model.chat_template={path}",
                           "train.max_steps=2", "eval.max_samples=2", "eval.generate.max_new_tokens=4", "--output-dir", out)
    assert code == 0, err
    path.unlink()
    code, _, err = run_cli(capsys, "eval", out, "--baseline", "--max-samples", "2")
    assert code == 0, err
    base, tokenizer = causal_lm.base_model_of(out)
    assert tokenizer.chat_template == TEMPLATES["unseen"][0]
