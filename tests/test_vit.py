"""ViT recipes (tunelab.families.vit): every shipped non-hub recipe trains two steps on built-in pictures, MAE's
loss falls and it draws its reconstruction, a classifier starts from the MAE encoder and trains (LoRA, full),
DINO's teacher follows its student and k-NN accuracy is scored before and after, eval and predict work on a
saved run, and bad input is one line and exit 2. DINO's loss, the k-NN vote and the MAE -> ViT copy are checked
against numbers worked out by hand or against transformers itself."""

import json
import math
import re

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import REPO, assert_user_error, run_cli
from tunelab.cli import main

VIT = REPO / "recipes" / "vit"
# The embedded MAE default built the real way (child process, cache, lock), with few steps and a small eval.
QUICK_MAE = ["train.max_steps=30", "train.logging_steps=5", "train.save_strategy=no", "eval.max_samples=16"]
TWO_STEPS = ["train.max_steps=2", "train.logging_steps=1", "train.save_strategy=no", "data.max_train_samples=64",
             "eval.max_samples=32", "train.per_device_train_batch_size=16", "eval.batch_size=64"]


@pytest.fixture(scope="session")
def vit_mae_default():
    from tunelab import checkpoints

    return checkpoints.build_embedded(QUICK_MAE, name=checkpoints.EMBEDDED_VIT_MAE).parent


def train(out, recipe: str, *overrides: str) -> dict:
    assert main(["train", str(VIT / f"{recipe}.yaml"), "--output-dir", str(out), *TWO_STEPS, *overrides]) == 0
    return json.loads((out / "metrics.json").read_text())


def losses(run) -> list[float]:
    return [e["loss"] for e in map(json.loads, (run / "train_log.jsonl").read_text().splitlines()) if "loss" in e]


@pytest.fixture(scope="session")
def lora_run(vit_mae_default, tmp_path_factory):
    out = tmp_path_factory.mktemp("vit") / "classify_lora"
    train(out, "classify_lora")
    return out


@pytest.mark.recipe
def test_mae_default_loss_falls_and_it_draws_its_reconstruction(vit_mae_default):
    from transformers import ViTMAEForPreTraining

    metrics = json.loads((vit_mae_default / "metrics.json").read_text())
    assert metrics["train"]["final_loss"] < 0.8 * metrics["train"]["first_loss"], metrics["train"]
    e = metrics["eval"]
    assert 0 < e["reconstruction_loss"] < 1.5 and e["mask_ratio"] == 0.75 and e["eval_pictures"] == 16
    with Image.open(vit_mae_default / e["reconstruction_png"]) as png:
        # 8 pictures across, 3 rows (masked, reconstruction, original) of 48 pixels enlarged 3 times, 1-pixel gaps
        assert png.size == tuple(e["reconstruction_png_size"]) == (3 * (8 * 48 + 7), 3 * (3 * 48 + 2))
    model = ViTMAEForPreTraining.from_pretrained(vit_mae_default / "model")
    assert model.config.mask_ratio == 0.75 and (vit_mae_default / "model" / "preprocessor_config.json").is_file()


@pytest.mark.recipe
def test_mae_recipe_trains_two_steps(tmp_path):
    metrics = train(tmp_path / "mae", "mae_tiny")
    assert metrics["train"]["steps"] == 2 and all(math.isfinite(x) for x in losses(tmp_path / "mae"))
    assert (tmp_path / "mae" / "mae_reconstruction.png").is_file()


@pytest.mark.recipe
def test_lora_classifier_starts_from_the_mae_encoder_and_trains_lora_and_the_head(lora_run, vit_mae_default):
    from transformers import ViTMAEModel

    metrics = json.loads((lora_run / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 2 and all(math.isfinite(x) for x in losses(lora_run))
    e = metrics["eval"]
    assert 0 <= e["accuracy"] <= 1 and 0 <= e["macro_f1"] <= 1 and e["eval_pictures"] == 32
    assert json.loads((lora_run / "labels.json").read_text())["labels"] == sorted(
        ["circle", "square", "triangle", "star", "cross", "diamond"])
    weights = load_file(lora_run / "adapter" / "adapter_model.safetensors")
    assert {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in weights if ".lora_" in k} == {"q_proj", "v_proj"}
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in weights.items())  # B starts at zero: it trained
    assert any("classifier" in k for k in weights)  # the fresh head is saved whole
    from tunelab.families.vit import load_run

    model, _ = load_run(lora_run, merge=True)
    encoder = ViTMAEModel.from_pretrained(vit_mae_default / "model")
    cls = encoder.embeddings.cls_token
    assert torch.equal(model.vit.embeddings.cls_token, cls)  # the MAE encoder's weights, copied
    q = "layers.0.attention.q_proj.weight"
    assert not torch.allclose(model.vit.state_dict()[q], encoder.state_dict()[q])  # LoRA merged in


@pytest.mark.recipe
@pytest.mark.parametrize("recipe", ["classify_full", "classify_scratch"])
def test_full_classifiers_train_every_weight(tmp_path, vit_mae_default, recipe):
    from transformers import ViTForImageClassification

    out = tmp_path / recipe
    metrics = train(out, recipe)
    assert metrics["train"]["steps"] == 2 and metrics["trainable_params"] == metrics["total_params"]
    model = ViTForImageClassification.from_pretrained(out / "model")
    assert model.config.id2label[0] == "circle" and model.config.image_size == 48
    if recipe == "classify_full":
        # The file keeps transformers' checkpoint names (encoder.layer.N.output.dense is the block's fc2).
        start = load_file(vit_mae_default / "model" / "model.safetensors")["vit.encoder.layer.3.output.dense.weight"]
        trained = model.state_dict()["vit.layers.3.mlp.fc2.weight"]
        assert start.shape == trained.shape and not torch.equal(start, trained)


@pytest.mark.recipe
def test_dino_teacher_follows_the_student_and_knn_is_scored_before_and_after(tmp_path):
    from transformers import ViTModel

    from tunelab.vision.dino import teacher_momentum

    out = tmp_path / "dino"
    metrics = train(out, "dino_tiny", "train.save_strategy=steps", "train.save_steps=2", "train.local_crops=2")
    e = metrics["eval"]
    assert all(0 <= e[k] <= 1 for k in ("knn_accuracy", "knn_accuracy_before", "knn_accuracy_teacher"))
    assert e["knn_bank"] == 64 and e["eval_pictures"] == 32 and math.isfinite(metrics["train"]["final_loss"])
    student = ViTModel.from_pretrained(out / "model")  # model/ is the student backbone, a plain ViT
    pair = load_file(out / "checkpoint-2" / "model.safetensors")  # a checkpoint keeps the whole pair for --resume
    key = "layers.0.attention.q_proj.weight"
    s, t = student.state_dict()[key], pair[f"teacher.{key}"]
    assert torch.equal(s, pair[f"student.{key}"]) and not torch.equal(s, t)
    # the teacher moved toward the student by 1 - m per step: m = 0.99 at the first step, 1 at the last
    assert teacher_momentum(0, 2, 0.99) == pytest.approx(0.99) and teacher_momentum(2, 2, 0.99) == 1
    assert pair["center"].abs().sum() > 0  # the center followed the teacher's outputs


@pytest.mark.recipe
def test_eval_reproduces_the_runs_accuracy_and_predict_gives_top_labels(capsys, lora_run, tmp_path):
    before = json.loads((lora_run / "metrics.json").read_text())["eval"]
    code, out, err = run_cli(capsys, "eval", lora_run)
    assert code == 0, err
    after = json.loads((lora_run / "metrics.json").read_text())["eval"]
    assert after["accuracy"] == before["accuracy"] and after["eval_loss"] == pytest.approx(before["eval_loss"], abs=1e-6)
    image = tmp_path / "star.png"
    from tunelab.data.builtin_shapes_labels import labelled_shapes

    labelled_shapes("eval")[0]["image"].save(image)
    code, out, err = run_cli(capsys, "predict", lora_run, "--image", image)
    assert code == 0, err
    lines = out.strip().splitlines()
    probs = [float(line.split()[-1]) for line in lines[1:]]
    assert lines[0].endswith(str(image)) and len(probs) == 5 and sum(probs) <= 1 + 1e-6
    assert probs == sorted(probs, reverse=True)


@pytest.mark.unit
def test_bad_vit_input_is_one_line_and_exit_2(capsys, tmp_path):
    recipe = VIT / "classify_scratch.yaml"
    out = ["--output-dir", tmp_path / "run"]
    Image.new("RGB", (48, 48), "white").save(tmp_path / "a.png")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"image": "a.png", "label": "circle"}) + "\n" + json.dumps({"image": "a.png"}) + "\n")
    assert_user_error(capsys, r"bad\.jsonl:2: record has no 'label'", "train", recipe, *out, f"data.train={bad}")
    bad.write_text(json.dumps({"image": "a.png", "label": "circle"}) + "\n" + json.dumps({"image": "b.png",
                                                                                          "label": "star"}) + "\n")
    assert_user_error(capsys, r"bad\.jsonl:2: image file not found", "train", recipe, *out, f"data.train={bad}")
    assert_user_error(capsys, r"adapter\.method=prefix does not fit a ViT", "train", VIT / "classify_lora.yaml", *out,
                      "adapter.method=prefix")
    assert_user_error(capsys, r"unknown key 'train\.teacher_tmp' \(did you mean 'teacher_temp'\?\)", "train",
                      VIT / "dino_tiny.yaml", *out, "train.teacher_tmp=0.1")
    assert_user_error(capsys, r"train\.teacher_temp = 0\.0 should be > 0", "train", VIT / "dino_tiny.yaml", *out,
                      "train.teacher_temp=0")
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()


@pytest.mark.unit
def test_dino_loss_and_knn_vote_match_the_numbers_worked_by_hand():
    from tunelab.evaluation.vit import knn_accuracy
    from tunelab.vision.dino import dino_loss

    teacher, center = torch.tensor([[2.0, 0.0], [2.0, 0.0]]), torch.zeros(1, 2)
    uniform = dino_loss(torch.zeros(2, 2), teacher, center, 1.0, 1.0, n_crops=2)
    matching = dino_loss(teacher.clone(), teacher, center, 1.0, 1.0, n_crops=2)
    assert uniform.item() == pytest.approx(math.log(2), abs=1e-4) and matching.item() == pytest.approx(0.3653, abs=1e-4)
    bank = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]), dim=-1)
    query = torch.nn.functional.normalize(torch.tensor([[0.9, 0.3]]), dim=-1)  # nearest: the first two
    assert knn_accuracy(bank, ["a", "b", "b"], query, ["a"], k=2, temperature=0.1) == 1.0


@pytest.mark.parity
def test_the_copied_vit_computes_what_the_mae_encoder_computes_without_masking():
    """With mask_ratio 0 and noise in patch order, MAE's encoder keeps every patch in place: the ViT built from
    its weights must give the same hidden states."""
    from transformers import ViTMAEConfig, ViTMAEModel

    from tunelab.vision.backbones import vit_from_mae

    torch.manual_seed(0)
    config = ViTMAEConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=64, mask_ratio=0.0)
    encoder = ViTMAEModel(config).eval()
    vit = vit_from_mae(encoder).eval()
    pixels = torch.randn(2, 3, 16, 16)
    in_order = torch.arange(16, dtype=torch.float).expand(2, 16)
    with torch.no_grad():
        torch.testing.assert_close(vit(pixels).last_hidden_state,
                                   encoder(pixels, noise=in_order).last_hidden_state, atol=1e-5, rtol=1e-5)


@pytest.mark.unit
def test_multi_crop_batches_hold_every_crop_crop_major():
    from tunelab.data.builtin_shapes_labels import labelled_shapes
    from tunelab.vision.backbones import scratch_processor
    from tunelab.vision.crops import MultiCrop
    from tunelab.vision.pictures import MultiCropCollator

    rows = labelled_shapes("train")[:3]
    collate = MultiCropCollator(scratch_processor(48), MultiCrop(48, 24, 4, (0.4, 1.0), (0.1, 0.4), 0.5, seed=0), "fail")
    batch = collate([(row, f"record {i}") for i, row in enumerate(rows)])
    assert batch["global_crops"].shape == (6, 3, 48, 48) and batch["local_crops"].shape == (12, 3, 24, 24)
    assert batch["global_crops"].min() >= -1 and batch["global_crops"].max() <= 1
    assert not torch.equal(batch["global_crops"][0], batch["global_crops"][3])  # two different views of one picture


def test_an_mae_built_from_a_config_knows_where_its_patches_are(vit_mae_default):
    """transformers 5.23 builds ViTMAEForPreTraining with zero position tables that never train; vit.mae fills
    them with MAE's sin-cos, equal to the lab's independent table and to the decoder's own initialize_weights,
    and the embedded default carries them in its file."""
    from transformers import ViTMAEForPreTraining

    from tunelab.config import load_recipe
    from tunelab.scratch.mae import sincos_positions_2d
    from tunelab.vision import backbones

    mae, _ = backbones.scratch(load_recipe(VIT / "mae_tiny.yaml"), "mae")
    assert torch.equal(mae.vit.embeddings.position_embeddings[0], sincos_positions_2d(6, 128))
    reference = ViTMAEForPreTraining(mae.config)
    assert reference.decoder.decoder_pos_embed.abs().max() == 0  # the upstream behaviour this works around
    reference.decoder.initialize_weights(36)
    assert torch.equal(mae.decoder.decoder_pos_embed, reference.decoder.decoder_pos_embed)
    saved = load_file(vit_mae_default / "model" / "model.safetensors")
    assert torch.equal(saved["vit.embeddings.position_embeddings"][0], sincos_positions_2d(6, 128))
