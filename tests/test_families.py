"""The family contract (tunelab.families.Family, docs/families.md): every family provides it, every shipped
recipe names a family stage, and the one training scaffold gives every family its eval set when
train.eval_strategy asks for one."""

from __future__ import annotations

import dataclasses
import inspect
import json

import pytest

from tunelab import shipped
from tunelab.config import DataConfig, load_recipe
from tunelab.families import FAMILIES, Family, family_module, stage_of

FORMAT_CHOICES = next(f for f in dataclasses.fields(DataConfig) if f.name == "format").metadata["choices"]


@pytest.mark.unit
@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_provides_the_contract(name):
    module = family_module(name)
    assert isinstance(module, Family), f"tunelab.families.{name} lacks part of the Family contract"
    for member, wanted in inspect.getmembers(Family, inspect.isfunction):
        if member.startswith("_"):
            continue
        expected = [p for p in inspect.signature(wanted).parameters if p != "self"]
        found = inspect.signature(getattr(module, member)).parameters
        # The contract's parameters, in its order; a family may take more, if they have defaults.
        assert list(found)[:len(expected)] == expected, f"{name}.{member}{inspect.signature(getattr(module, member))}"
        assert all(p.default is not p.empty for p in list(found.values())[len(expected):]), f"{name}.{member}"
    assert module.FORMATS and all(set(formats) <= set(FORMAT_CHOICES) for formats in module.FORMATS.values())
    assert isinstance(module.GENERATES, bool) and isinstance(module.CHAT, bool) and module.GENERATES >= module.CHAT


@pytest.mark.unit
def test_every_shipped_recipe_names_a_family_stage_and_every_family_has_recipes():
    used = {stage_of(load_recipe(name).recipe, name)[0] for name in shipped.names()}
    assert used == set(FAMILIES)


EVAL_EVERY_STEP = ["train.max_steps=2", "train.eval_strategy=steps", "train.eval_steps=1", "train.save_strategy=no",
                   "train.logging_steps=1", "eval.max_samples=4"]


@pytest.mark.recipe
@pytest.mark.parametrize("recipe, more", [
    ("qwen2/sft_lora", []),
    ("bert/classify_lora", ["data.max_train_samples=32"]),
    ("t5/summarize_lora", ["data.max_train_samples=32", "data.max_eval_samples=8"]),
    ("clip/finetune_lora", ["data.max_train_samples=32", "eval.recall_k=[1]"]),
])
def test_every_family_evaluates_during_training_when_asked(recipe, more, tmp_path, t5_default, clip_default):
    from tunelab.cli import main

    out = tmp_path / "run"
    assert main(["train", recipe, "--output-dir", str(out), *EVAL_EVERY_STEP, *more]) == 0
    logged = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in logged if "eval_loss" in e] == [1, 2], logged
