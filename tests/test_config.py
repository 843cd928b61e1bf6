"""Recipe schema: overrides, types, unknown keys with hints and line numbers, trainer arguments."""

import pytest
from trl import SFTConfig

from tunelab.config import load_recipe, trainer_args
from tunelab.errors import UserError
from tunelab import shipped

pytestmark = pytest.mark.unit

RECIPE = """recipe: causal_lm.sft
model:
  name_or_path: embedded:tiny-qwen2
adapter:
  method: lora
  r: 8
data:
  train: builtin:sft_train
train:
  learning_rate: 2e-4
"""


@pytest.fixture
def recipe_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE)
    return path


def test_overrides_edit_nested_fields_and_train_args(recipe_file):
    r = load_recipe(recipe_file, ["adapter.r=32", "data.format=alpaca", "train.max_steps=3", "eval.generate.num_beams=4"])
    assert (r.adapter.r, r.data.format, r.train["max_steps"], r.eval.generate.num_beams) == (32, "alpaca", 3, 4)


def test_number_written_as_string_becomes_float(recipe_file):
    # PyYAML reads 2e-4 (no dot) as a string; the trainer must still get a float.
    args = trainer_args(SFTConfig, load_recipe(recipe_file), {"report_to": "none", "bf16": False}, output_dir="/tmp/x")
    assert args.learning_rate == pytest.approx(2e-4)


def test_unknown_key_names_file_line_and_hint(recipe_file):
    recipe_file.write_text(RECIPE.replace("  r: 8", "  rank: 8"))
    with pytest.raises(UserError, match=r"r\.yaml:6: unknown key 'adapter\.rank' \(did you mean 'r'\?\)"):
        load_recipe(recipe_file)


def test_unknown_trainer_argument_is_caught_with_hint(recipe_file):
    recipe = load_recipe(recipe_file, ["train.learning_rat=1e-4"])
    with pytest.raises(UserError, match=r"unknown key 'train\.learning_rat' \(did you mean 'learning_rate'\?\)"):
        trainer_args(SFTConfig, recipe, {}, output_dir="/tmp/x")


def test_wrong_value_type_names_field_and_expected_type(recipe_file):
    with pytest.raises(UserError, match=r"adapter\.r = 'big' should be an integer"):
        load_recipe(recipe_file, ["adapter.r=big"])
    recipe = load_recipe(recipe_file, ["train.max_steps=lots"])
    with pytest.raises(UserError, match=r"train\.max_steps = 'lots' should be an integer"):
        trainer_args(SFTConfig, recipe, {}, output_dir="/tmp/x")


def test_value_outside_choices_lists_them(recipe_file):
    with pytest.raises(UserError, match=r"adapter\.method = 'lorra' should be one of: lora, qlora"):
        load_recipe(recipe_file, ["adapter.method=lorra"])


def test_invalid_yaml_reports_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("recipe: causal_lm.sft\nmodel: {name_or_path: x\n")
    with pytest.raises(UserError, match=r"bad\.yaml:\d+: not valid YAML"):
        load_recipe(bad)


def test_every_shipped_recipe_parses():
    names = shipped.names()
    assert len(names) >= 37 and "qwen2/sft_lora" in names and not any(n.startswith("accelerate/") for n in names)
    for name in names:
        recipe = load_recipe(name)
        assert recipe.description, f"{name} has no description for `tunelab recipes`"


def test_every_shipped_recipe_validates_without_a_deprecation_warning(capsys, smollm2_dir):
    """Schema, trainer arguments, trackers, data and method checks for every shipped recipe, by name, hub ones
    included (offline: their model and data are named, not fetched). A deprecated trainer argument (transformers
    warns with FutureWarning, e.g. gradient_checkpointing) or any other deprecation fails it."""
    import warnings

    from tunelab.cli import main

    names = shipped.names()
    assert any("bert-base-chinese" in n for n in names) and any("flan-t5" in n for n in names)
    assert any("clip-vit-base-patch32" in n for n in names) and any(n.startswith("smollm2/") for n in names)
    for name in names:
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            warnings.simplefilter("error", DeprecationWarning)
            assert main(["validate", name]) == 0, f"{name}: {capsys.readouterr().err}"


def test_a_finished_runs_recipe_is_not_held_to_checks_added_since(tmp_path):
    """Runs of every family once recorded eval.metrics [perplexity, accuracy]; they must still load."""
    import yaml

    from tunelab.config import load_recipe
    from tunelab.errors import UserError

    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"recipe": "seq2seq.text2text", "data": {"train": "builtin:x"},
                                    "eval": {"metrics": ["perplexity", "accuracy"]}}))
    assert load_recipe(path, finished_run=True).eval.metrics == ["perplexity", "accuracy"]
    with pytest.raises(UserError, match=r"unknown metric 'perplexity' for a seq2seq recipe \(have: rouge\)"):
        load_recipe(path)
