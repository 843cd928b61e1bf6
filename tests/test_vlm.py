"""The vlm family: a LLaVA-style model assembled from the tiny CLIP and the tiny Qwen2, aligned (projector only),
then instruction-tuned (projector + LoRA, or the whole LM), evaluated, asked about a picture, and loaded back with
transformers alone."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import REPO, assert_user_error, run_cli

from tunelab import vision_language as vl
from tunelab.data import builtin_shapes_qa

VLM = REPO / "recipes" / "vlm"
QUICK_VLM_PRETRAIN = ["train.max_steps=30", "train.save_strategy=no", "eval.max_samples=8"]


@pytest.fixture(scope="session")
def vlm_default(clip_default) -> Path:
    """The model directory of embedded:tiny-vlm, built the real way (child process, cache), on the session's quick CLIP and Qwen2."""
    from tunelab import checkpoints

    return checkpoints.build_embedded(QUICK_VLM_PRETRAIN, name=checkpoints.EMBEDDED_VLM)


@pytest.fixture(scope="session")
def sft_lora_run(vlm_default, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vlm") / "sft_lora"
    from tunelab.cli import main

    assert main(["train", str(VLM / "sft_lora.yaml"), "--output-dir", str(out), "train.max_steps=8",
                 "train.warmup_steps=0", "train.learning_rate=5e-3", "train.logging_steps=1", "eval.max_samples=8",
                 "train.per_device_train_batch_size=8"]) == 0
    return out


def _losses(run: Path) -> list[float]:
    """The logged training losses, in order."""
    return [row["loss"] for row in map(json.loads, (run / "train_log.jsonl").read_text().splitlines()) if "loss" in row]


@pytest.mark.recipe
def test_pretrain_trains_the_projector_alone_and_keeps_both_towers(vlm_default, clip_default):
    """The alignment stage: only multi_modal_projector changed; the vision tower equals the CLIP run's, the LM
    the tiny Qwen2's (its <image> row aside); the saved model loads with transformers alone."""
    from transformers import AutoModelForCausalLM, CLIPModel, LlavaForConditionalGeneration

    from tunelab import checkpoints

    run = vlm_default.parent  # the default's run directory, its model/ is vlm_default
    metrics = json.loads((run / "metrics.json").read_text())
    model = LlavaForConditionalGeneration.from_pretrained(vlm_default)
    projector = sum(p.numel() for p in model.model.multi_modal_projector.parameters())
    assert metrics["trainable_params"] == projector
    clip = CLIPModel.from_pretrained(clip_default / "model")
    assert torch.equal(model.model.vision_tower.embeddings.patch_embedding.weight,
                       clip.vision_model.embeddings.patch_embedding.weight)
    lm = AutoModelForCausalLM.from_pretrained(checkpoints.resolve(checkpoints.EMBEDDED_QWEN2))
    assert torch.equal(model.model.language_model.layers[0].mlp.up_proj.weight, lm.model.layers[0].mlp.up_proj.weight)
    assert metrics["image_tokens"] == 36  # a 48-pixel picture in patches of 8, the class token dropped


@pytest.mark.unit
def test_encode_chat_puts_loss_on_the_reply_and_its_end_of_turn_only(vlm_default):
    _, processor = vl.load(vlm_default)
    row = builtin_shapes_qa.questions("eval")[1]
    ids, labels = vl.encode_chat(processor, row["messages"])
    image_id = processor.tokenizer.convert_tokens_to_ids(vl.IMAGE_TOKEN)
    assert ids.count(image_id) == 36
    learned = processor.tokenizer.decode([i for i, label in zip(ids, labels) if label != -100])
    assert learned == row["messages"][1]["content"] + "<|im_end|>"


@pytest.mark.recipe
def test_sft_lora_learns_and_its_run_evaluates_and_answers_about_a_picture(sft_lora_run, capsys, tmp_path):
    losses = torch.tensor(_losses(sft_lora_run))
    assert torch.isfinite(losses).all() and losses[-2:].mean() < losses[:2].mean()
    metrics = json.loads((sft_lora_run / "metrics.json").read_text())
    assert 0 <= metrics["eval"]["accuracy"] <= 1 and metrics["eval"]["accuracy_n"] == 8
    saved = (sft_lora_run / "adapter" / "adapter_config.json").read_text()
    assert "multi_modal_projector" in saved  # trained whole, saved with the LoRA

    code, out, _ = run_cli(capsys, "eval", sft_lora_run, "--max-samples", "8")
    printed = re.search(r"^accuracy\s+([\d.]+)", out, re.M)
    assert code == 0 and float(printed.group(1)) == pytest.approx(metrics["eval"]["accuracy"], abs=1e-4)

    picture = tmp_path / "red.png"
    builtin_shapes_qa.questions("eval")[0]["image"].save(picture)
    code, out, _ = run_cli(capsys, "generate", sft_lora_run, "--image", picture, "--prompt", "What colour is the shape?",
                           "--max-new-tokens", "4")
    assert code == 0 and out.strip()


@pytest.mark.recipe
def test_sft_full_trains_the_lm_and_never_the_vision_tower(vlm_default, tmp_path):
    from transformers import LlavaForConditionalGeneration

    from tunelab.cli import main

    out = tmp_path / "full"
    assert main(["train", str(VLM / "sft_full.yaml"), "--output-dir", str(out), "train.max_steps=2",
                 "eval.max_samples=4", "train.per_device_train_batch_size=4"]) == 0
    before, after = (LlavaForConditionalGeneration.from_pretrained(p) for p in (vlm_default, out / "model"))
    assert torch.equal(before.model.vision_tower.encoder.layers[0].mlp.fc1.weight,
                       after.model.vision_tower.encoder.layers[0].mlp.fc1.weight)
    assert not torch.equal(before.model.language_model.layers[0].mlp.up_proj.weight,
                           after.model.language_model.layers[0].mlp.up_proj.weight)


@pytest.mark.unit
def test_image_chat_mistakes_name_their_line(tmp_path, capsys):
    data = tmp_path / "chats.jsonl"
    good = {"messages": [{"role": "user", "content": "Colour?"}, {"role": "assistant", "content": "red"}],
            "image": "red.png"}
    data.write_text(json.dumps(good) + "\n" + json.dumps({"messages": good["messages"]}) + "\n")
    builtin_shapes_qa.questions("eval")[0]["image"].save(tmp_path / "red.png")
    recipe = ["validate", str(VLM / "sft_lora.yaml"), f"data.train={data}", f"data.eval={data}"]
    assert_user_error(capsys, r"chats\.jsonl:2: record has no 'image' field", *recipe)
    data.write_text(json.dumps({**good, "image": "blue.png"}) + "\n")
    assert_user_error(capsys, r"chats\.jsonl:1: image 'blue.png' not found", *recipe)


@pytest.mark.unit
def test_generate_asks_for_a_picture_exactly_where_one_is_read(sft_lora_run, sft_run, capsys):
    assert_user_error(capsys, r"give --image PATH", "generate", sft_lora_run, "--prompt", "What colour?")
    assert_user_error(capsys, r"--image is for vision-language runs", "generate", sft_run, "--image", "x.png",
                      "--prompt", "hi")


@pytest.mark.unit
def test_pretrain_refuses_a_lora_and_a_missing_vision_tower(capsys):
    assert_user_error(capsys, r"adapter.method=lora does not fit vlm.pretrain.*use adapter.method: full",
                      "validate", str(VLM / "pretrain_tiny.yaml"), "adapter.method=lora")
    assert_user_error(capsys, r"vlm.pretrain needs model.vision_tower", "validate", str(VLM / "pretrain_tiny.yaml"),
                      "model.vision_tower=null")


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["pretrain_smollm2.yaml", "sft_smollm2_lora.yaml"])
def test_the_real_smollm2_learns_to_see(recipe, smollm2_dir, clip_default, tmp_path, capsys):
    """SmolLM2-135M-Instruct behind the tiny CLIP, as shipped (bf16), two steps: the assembled model trains and its
    run answers about a picture through `tunelab generate`."""
    out = tmp_path / recipe
    code, _, err = run_cli(capsys, "train", VLM / recipe, "--output-dir", out, "train.max_steps=2",
                           "eval.max_samples=2")
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["image_tokens"] == 36 and torch.isfinite(torch.tensor(metrics["train"]["final_loss"]))
    picture = tmp_path / "shape.png"
    builtin_shapes_qa.questions("eval")[0]["image"].save(picture)
    code, reply, _ = run_cli(capsys, "generate", out, "--image", picture, "--prompt", "How many shapes are there?",
                             "--max-new-tokens", "4")
    assert code == 0 and reply.strip()
