"""CLIP recipes on the embedded tiny CLIP: contrastive pretraining builds it, LoRA and full fine-tuning train a few
steps and save loadable runs, a frozen tower stays as it was, eval and predict work on saved runs, and bad image
data is one line and exit 2."""

import json
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, assert_user_error, run_cli
from tunelab.cli import main
from tunelab.data.images import write_builtin

CLIP = REPO / "recipes" / "clip"
QUICK = ["train.max_steps=4", "train.logging_steps=1", "train.save_strategy=no", "data.max_train_samples=128",
         "eval.max_samples=40", "train.per_device_train_batch_size=32"]


def train(out, recipe: str, *overrides: str) -> dict:
    assert main(["train", str(CLIP / f"{recipe}.yaml"), "--output-dir", str(out), *QUICK, *overrides]) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="session")
def lora_run(clip_default, tmp_path_factory):
    out = tmp_path_factory.mktemp("clip") / "finetune_lora"
    train(out, "finetune_lora")
    return out


@pytest.mark.recipe
def test_contrastive_pretraining_builds_a_clip_whose_loss_falls(clip_default):
    from transformers import AutoConfig, AutoTokenizer

    metrics = json.loads((clip_default / "metrics.json").read_text())
    assert metrics["train"]["final_loss"] < metrics["train"]["first_loss"] - 0.5
    config = AutoConfig.from_pretrained(clip_default / "model")
    tokenizer = AutoTokenizer.from_pretrained(clip_default / "model")
    assert config.model_type == "clip" and config.vision_config.image_size == 48
    # CLIP pools the text at the first end-of-text token; id 2 would make transformers pool at the largest id.
    ids = tokenizer("a small red circle")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id == config.text_config.eos_token_id != 2
    assert (clip_default / "model" / "preprocessor_config.json").is_file()


@pytest.mark.recipe
def test_lora_run_saves_an_adapter_that_changes_only_attention_and_loads(lora_run, clip_default):
    from peft import PeftModel
    from transformers import CLIPModel

    metrics = json.loads((lora_run / "metrics.json").read_text())
    assert next(k for k in metrics["eval"] if re.search("recall.*1", k)) == "i2t_recall@1"
    assert 0 <= metrics["eval"]["zero_shot_accuracy"] <= 1 and metrics["eval"]["eval_pairs"] == 40
    weights = load_file(lora_run / "adapter" / "adapter_model.safetensors")
    names = {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in weights}
    assert names == {"q_proj", "k_proj", "v_proj", "out_proj"}
    assert any(k.startswith("base_model.model.vision_model") for k in weights)
    assert any(k.startswith("base_model.model.text_model") for k in weights)
    assert any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)  # B starts at zero: it trained
    base = CLIPModel.from_pretrained(clip_default / "model").eval()
    pixels = torch.rand(1, 3, 48, 48)
    before = base.get_image_features(pixel_values=pixels).pooler_output
    model = PeftModel.from_pretrained(base, lora_run / "adapter").eval()
    assert not torch.allclose(model.get_image_features(pixel_values=pixels).pooler_output, before)


@pytest.mark.recipe
@pytest.mark.parametrize("method", ["lora", "full"])
def test_a_frozen_vision_tower_stays_as_it_was(tmp_path, clip_default, method):
    from transformers import CLIPModel

    out = tmp_path / method
    train(out, f"finetune_{method}", "adapter.freeze=vision")
    base = CLIPModel.from_pretrained(clip_default / "model").state_dict()
    if method == "lora":
        weights = load_file(out / "adapter" / "adapter_model.safetensors")
        assert weights and all(".text_model." in k for k in weights)
        return
    tuned = CLIPModel.from_pretrained(out / "model").state_dict()
    vision = [k for k in base if k.startswith(("vision_model.", "visual_projection."))]
    assert vision and all(torch.equal(base[k], tuned[k]) for k in vision)
    assert not torch.equal(base["text_projection.weight"], tuned["text_projection.weight"])


@pytest.mark.recipe
def test_eval_baseline_predict_and_merge_on_a_saved_run(capsys, lora_run, tmp_path):
    code, out, err = run_cli(capsys, "eval", lora_run, "--baseline", "--max-samples", "30")
    assert code == 0, err
    assert re.search(r"i2t_recall@1\s+[\d.]+\s+[\d.]+", out) and "zero_shot_accuracy" in out
    metrics = json.loads((lora_run / "metrics.json").read_text())
    assert metrics["baseline"]["eval_pairs"] == 30 and "t2i_recall@5" in metrics["baseline"]

    folder = write_builtin("shifted_eval", tmp_path / "imgs", layout="folder", limit=2)
    image = next(folder.rglob("*.png"))
    code, out, err = run_cli(capsys, "predict", lora_run, "--image", image, "--labels", "red circle, purple star,blue cross")
    assert code == 0, err
    lines = out.strip().splitlines()
    probs = [float(line.split()[-1]) for line in lines[1:]]
    assert lines[0].endswith(str(image)) and len(probs) == 3 and abs(sum(probs) - 1) < 1e-4
    assert probs == sorted(probs, reverse=True)

    merged = tmp_path / "merged"
    code, _, err = run_cli(capsys, "merge", lora_run, merged)
    assert code == 0, err
    from transformers import CLIPModel

    from tunelab.families.clip import load_run

    model, _, _ = load_run(lora_run)
    pixels = torch.rand(2, 3, 48, 48)
    expected = model.get_image_features(pixel_values=pixels).pooler_output
    standalone = CLIPModel.from_pretrained(merged).eval()
    torch.testing.assert_close(standalone.get_image_features(pixel_values=pixels).pooler_output, expected,
                               atol=1e-5, rtol=1e-5)
    assert (merged / "preprocessor_config.json").is_file() and (merged / "tokenizer.json").is_file()


@pytest.mark.recipe
def test_undecodable_images_are_skipped_and_counted_or_stop_the_run(capsys, clip_default, tmp_path):
    captions = write_builtin("shifted_train", tmp_path / "data", limit=40)
    broken = tmp_path / "data" / "images" / "00003.png"
    broken.write_bytes(b"not a png")
    metrics = train(tmp_path / "skip", "finetune_lora", f"data.train={captions}", "data.on_image_error=skip")
    assert metrics["data"]["train_images_skipped"] == 1
    capsys.readouterr()
    # Decoding is lazy, so the bad file stops the run when its batch is built: after training has started.
    code, _, err = run_cli(capsys, "train", CLIP / "finetune_lora.yaml", "--output-dir", tmp_path / "fail", *QUICK,
                           f"data.train={captions}")
    assert code == 2 and re.search(r"captions\.jsonl:4: image .*00003\.png: cannot decode", err.strip().splitlines()[-1])
    assert not (tmp_path / "fail").exists()


@pytest.mark.unit
def test_bad_clip_input_is_one_line_and_exit_2(capsys, clip_default, tmp_path):
    recipe = CLIP / "finetune_lora.yaml"
    out = ["--output-dir", tmp_path / "run"]
    captions = write_builtin("shifted_eval", tmp_path / "data", limit=12)
    lines = captions.read_text().splitlines()

    no_caption = tmp_path / "data" / "no_caption.jsonl"
    no_caption.write_text("\n".join([lines[0], json.dumps({"image": "images/00001.png"})]) + "\n")
    assert_user_error(capsys, r"no_caption\.jsonl:2: record has no 'caption'", "train", recipe, *out,
                      f"data.train={no_caption}")

    missing = tmp_path / "data" / "missing.jsonl"
    missing.write_text(lines[0] + "\n" + json.dumps({"image": "images/nope.png", "caption": "a red circle"}) + "\n")
    assert_user_error(capsys, r"missing\.jsonl:2: image file not found", "train", recipe, *out, f"data.train={missing}")

    one_class = tmp_path / "one_class" / "red circle"
    one_class.mkdir(parents=True)
    shutil.copy(tmp_path / "data" / "images" / "00000.png", one_class / "a.png")
    assert_user_error(capsys, r"1 class folder\(s\).*at least two classes", "train", recipe, *out,
                      f"eval.zero_shot={one_class.parent}")

    assert_user_error(capsys, r"eval set has 12 pairs, too few for recall@20", "train", recipe, *out,
                      f"data.eval={captions}", "eval.recall_k=[1,20]")
    assert_user_error(capsys, r"adapter.method=prefix is not set up for CLIP", "train", recipe, *out, "adapter.method=prefix")
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()
