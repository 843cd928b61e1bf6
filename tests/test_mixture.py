"""Weighted mixtures of train sources (data.train as a list): how many records each weight or count takes,
the held-out split per source, file:line of repeated records, the mistakes a recipe can make, and the
mixture in metrics.json after a real SFT and DPO run."""

import json
from collections import Counter

import pytest

from conftest import RECIPES, assert_user_error
from tunelab.config import load_recipe
from tunelab.data.loading import load_splits, train_sources
from tunelab.errors import UserError

CHAT = ("messages", "alpaca", "sharegpt", "prompt_completion", "text")
SFT, DPO = str(RECIPES / "sft_lora.yaml"), str(RECIPES / "dpo_lora.yaml")
CLIP = str(RECIPES.parent / "clip" / "finetune_lora.yaml")


def chat_file(path, n: int, tag: str):
    """n distinct one-turn chats, one per line (line k holds "tag k")."""
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"{tag} {k}"},
                                                     {"role": "assistant", "content": "ok"}]}) + "\n"
                            for k in range(1, n + 1)))
    return path


@pytest.fixture
def files(tmp_path):
    return {name: chat_file(tmp_path / f"{name}.jsonl", n, name) for name, n in (("a", 10), ("b", 4), ("c", 5))}


def entries(*items: str) -> str:
    return "".join(f"\n    - {item}" for item in items)


def write_recipe(tmp_path, train: str, data: str = "", fmt: str = "messages"):
    """data.train (what follows `train:`) is on line 4, or later by the lines of `data`."""
    path = tmp_path / "mix.yaml"
    path.write_text(f"recipe: causal_lm.{'dpo' if fmt == 'preference' else 'sft'}\ndata:\n  format: {fmt}\n{data}"
                    f"  train:{train}\n")
    return path


def splits_of(tmp_path, files, train: str, data: str = "", overrides=()):
    """load_splits of a mixture; unless `data` says otherwise, data.eval is given, so every record of a source
    is available to train."""
    data = data or f"  eval: {files['c']}\n"
    return load_splits(load_recipe(write_recipe(tmp_path, train, data), list(overrides)), CHAT)


def per_source(where: list[str]) -> Counter:
    return Counter(w.rpartition(":")[0].rpartition("/")[2].removesuffix(".jsonl") for w in where)


# ---------------------------------------------------------------- counts, determinism, locations

@pytest.mark.unit
def test_weight_below_one_above_one_count_and_default(tmp_path, files, capsys):
    splits = splits_of(tmp_path, files, entries(f"{{path: {files['a']}, weight: 0.5}}", f"{{path: {files['b']}, weight: 2.5}}",
                                                f"{{path: {files['c']}, count: 7}}", f"{{path: {files['a']}}}"))
    where = splits.where["train"]
    assert len(splits.train) == len(where) == 5 + 10 + 7 + 10
    a_lines = Counter(w for w in where if "/a.jsonl" in w)
    assert sum(a_lines.values()) == 15 and set(a_lines.values()) <= {1, 2} and len(a_lines) == 10
    b_lines = Counter(w for w in where if "/b.jsonl" in w)  # 4 whole copies of 2, then 2 of 4 sampled
    assert sorted(b_lines.values()) == [2, 2, 3, 3]
    c_lines = Counter(w for w in where if "/c.jsonl" in w)  # 5 once, then 2 of 5 again
    assert sorted(c_lines.values()) == [1, 1, 1, 2, 2]
    report = splits.report["mixture"]
    assert [(r["records"], r["used"], r["weight"], r["held_out"]) for r in report] == \
        [(10, 5, 0.5, 0), (4, 10, 2.5, 0), (5, 7, 1.4, 0), (10, 10, 1.0, 0)]
    assert report[0]["path"] == str(files["a"]) and splits.report["train_records"] == 32
    out = capsys.readouterr().out
    assert f"tunelab: mixture: {files['b']} 10 of 4 train records (weight 2.5)" in out
    assert out.count("tunelab: mixture:") == 4


@pytest.mark.unit
def test_same_seed_same_mixture_other_seed_other_sample(tmp_path, files):
    train = entries(f"{{path: {files['a']}, weight: 0.5}}", f"{{path: {files['b']}, weight: 1.5}}")
    first, again = (splits_of(tmp_path, files, train) for _ in range(2))
    assert first.where == again.where and first.train.to_list() == again.train.to_list()
    other = splits_of(tmp_path, files, train, overrides=["data.seed=1"])
    assert Counter(other.where["train"]) != Counter(first.where["train"])


@pytest.mark.unit
def test_locations_of_repeated_records_name_their_own_lines(tmp_path, files):
    splits = splits_of(tmp_path, files, entries(f"{{path: {files['b']}, weight: 3}}", f"{{path: {files['a']}, count: 4}}"))
    for row, where in zip(splits.train, splits.where["train"]):
        path, _, line = where.rpartition(":")
        with open(path) as f:
            assert json.loads(f.read().splitlines()[int(line) - 1])["messages"] == row["messages"]
    assert per_source(splits.where["train"]) == {"b": 12, "a": 4}


@pytest.mark.unit
def test_held_out_split_per_source_before_upsampling(tmp_path, files):
    a, b = chat_file(tmp_path / "big.jsonl", 40, "big"), chat_file(tmp_path / "small.jsonl", 20, "small")
    splits = splits_of(tmp_path, files, entries(f"{{path: {a}, weight: 3}}", f"{{path: {b}, weight: 0.5}}"),
                       data="  eval_fraction: 0.25\n")
    train, held = set(splits.where["train"]), splits.where["eval"]
    assert not train & set(held) and len(held) == len(set(held)) == 10 + 5  # unweighted: each held-out record once
    assert not {r["messages"][0]["content"] for r in splits.train} & {r["messages"][0]["content"] for r in splits.eval}
    assert per_source(held) == {"big": 10, "small": 5}
    assert [(r["records"], r["held_out"], r["used"]) for r in splits.report["mixture"]] == [(30, 10, 90), (15, 5, 8)]
    assert splits.report["eval_records"] == 15


@pytest.mark.unit
def test_max_train_samples_caps_the_mixed_set_from_every_source(tmp_path, files):
    splits = splits_of(tmp_path, files, entries(f"{{path: {files['a']}, weight: 2}}", f"{{path: {files['b']}, weight: 5}}"),
                       overrides=["data.max_train_samples=12"])
    assert len(splits.train) == 12 and set(per_source(splits.where["train"])) == {"a", "b"}
    assert [r["used"] for r in splits.report["mixture"]] == [20, 20]


@pytest.mark.unit
def test_entries_in_other_formats_that_become_messages(tmp_path, files):
    alpaca = tmp_path / "alpaca.jsonl"
    alpaca.write_text("".join(json.dumps({"instruction": f"Say {k}.", "output": str(k)}) + "\n" for k in range(6)))
    splits = splits_of(tmp_path, files, entries(f"{{path: {alpaca}, format: alpaca}}", f"{{path: {files['b']}}}"))
    assert splits.train.column_names == ["messages"] and per_source(splits.where["train"]) == {"alpaca": 6, "b": 4}


@pytest.mark.unit
def test_encoder_labels_come_from_every_source(tmp_path):
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    one.write_text("".join(json.dumps({"text": f"hello {k}", "label": "greet"}) + "\n" for k in range(4)))
    two.write_text("".join(json.dumps({"text": f"bye {k}", "label": label}) + "\n"
                           for k, label in enumerate(["leave", "leave", "thank", "thank"])))
    path = tmp_path / "enc.yaml"
    path.write_text(f"recipe: encoder.classify\ndata:\n  format: classification\n  eval: {two}\n  train:"
                    + entries(f"{{path: {one}, weight: 0.5}}", f"{{path: {two}}}"))
    splits = load_splits(load_recipe(path), ("classification",))
    assert splits.labels == ["greet", "leave", "thank"] and len(splits.train) == 6


@pytest.mark.unit
def test_override_replaces_the_list_with_a_string(tmp_path, files):
    path = write_recipe(tmp_path, entries(f"{{path: {files['a']}, weight: 0.5}}", f"{{path: {files['b']}}}"))
    assert train_sources(load_recipe(path).data) == [str(files["a"]), str(files["b"])]
    recipe = load_recipe(path, [f"data.train={files['c']}"])
    assert recipe.data.train == str(files["c"]) and train_sources(recipe.data) == [str(files["c"])]
    assert "mixture" not in load_splits(recipe, CHAT).report


# ---------------------------------------------------------------- mistakes

@pytest.mark.unit
@pytest.mark.parametrize("train, pattern", [
    (" []", r"mix\.yaml:4: data\.train is an empty list"),
    (entries("{path: builtin:sft_train, weight: 0}"), r"mix\.yaml:5: data\.train\[0\]\.weight = 0 should be a finite number > 0"),
    (entries("{path: builtin:sft_train}", "{path: builtin:sft_eval, weight: -1}"),
     r"mix\.yaml:6: data\.train\[1\]\.weight = -1 should be a finite number > 0"),
    (entries("path: builtin:sft_train\n      weight: 0.5\n      count: 3"),
     r"mix\.yaml:7: data\.train\[0\] gives both weight and count; give one"),
    (entries("{weight: 2}"), r"mix\.yaml:5: data\.train\[0\] has no path"),
    (entries("{path: builtin:sft_train, weigth: 2}"),
     r"mix\.yaml:5: unknown key 'data\.train\[0\]\.weigth' \(did you mean 'weight'\?\)"),
    (entries("{path: builtin:sft_train, count: 0}"), r"mix\.yaml:5: data\.train\[0\]\.count = 0 should be >= 1"),
    (entries("{path: builtin:sft_train, weight: lots}"), r"mix\.yaml:5: data\.train\[0\]\.weight = 'lots' should be float"),
    (entries("{path: builtin:sft_train, format: chat}"), r"mix\.yaml:5: data\.train\[0\]\.format = 'chat' should be one of"),
    (entries("builtin:sft_train"), r"mix\.yaml:5: data\.train\[0\] = 'builtin:sft_train' should be a mapping with the "
                                   r"keys path, weight, count, format"),
    (" 5", r"mix\.yaml:4: data\.train = 5 should be str or list of mappings \(path, weight, count, format\)"),
])
def test_recipe_mistakes_are_one_line_with_file_line_entry_and_field(tmp_path, capsys, train, pattern):
    assert_user_error(capsys, pattern, "validate", write_recipe(tmp_path, train))


@pytest.mark.unit
def test_override_mistake_names_the_override(capsys):
    assert_user_error(capsys, r"override 'data\.train=\[\{path: builtin:sft_train, count: 2, weight: 1\}\]': "
                      r"data\.train\[0\] gives both", "validate", SFT,
                      "data.train=[{path: builtin:sft_train, count: 2, weight: 1}]")


@pytest.mark.unit
def test_clip_refuses_a_list(capsys):
    assert_user_error(capsys, r"override 'data\.train=.*': data\.train is a list \(a mixture of sources\), but a "
                      r"clip\.\w+ recipe reads one source", "validate", CLIP,
                      "data.train=[{path: builtin:shapes_train}, {path: builtin:shapes_shifted_train}]")


@pytest.mark.unit
@pytest.mark.parametrize("train, pattern", [
    (entries("{path: builtin:sft_train, weight: 0.001}"),
     r"mix\.yaml:6: data\.train\[0\]\.weight = 0\.001 takes none of the 288 train records of builtin:sft_train"),
    (entries("{path: builtin:sft_train}", "{path: builtin:sft_eval, format: prompt_completion}"),
     r"builtin:sft_eval: this built-in set is in the 'messages' format, but data\.format is 'prompt_completion' "
     r"\(data\.train\[1\], \S*mix\.yaml:7\)"),
    (entries("{path: builtin:sft_train}", "{path: builtin:preference_train, format: preference}"),
     r"mix\.yaml:7: data\.train\[1\]\.format = 'preference' does not fit causal_lm\.sft"),
])
def test_data_mistakes_name_the_entry(tmp_path, train, pattern):
    with pytest.raises(UserError, match=pattern):
        load_splits(load_recipe(write_recipe(tmp_path, train, "  eval_fraction: 0.1\n")), CHAT)


@pytest.mark.unit
def test_sources_that_end_in_other_columns_or_value_types(tmp_path, files):
    pc = tmp_path / "pc.jsonl"
    pc.write_text("".join(json.dumps({"prompt": f"Say {k}.", "completion": str(k)}) + "\n" for k in range(3)))
    with pytest.raises(UserError, match=r"mix\.yaml:7: data\.train\[1\] \(\S*pc\.jsonl\) becomes the columns prompt, "
                                        r"completion, but data\.train\[0\] \(\S*a\.jsonl\) becomes messages"):
        splits_of(tmp_path, files, entries(f"{{path: {files['a']}}}", f"{{path: {pc}, format: prompt_completion}}"))
    as_text, as_messages = tmp_path / "text.jsonl", tmp_path / "chat.jsonl"
    as_text.write_text(json.dumps({"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go."}) + "\n")
    as_messages.write_text(json.dumps({"prompt": [{"role": "user", "content": "Hi?"}],
                                       "chosen": [{"role": "assistant", "content": "Hello."}],
                                       "rejected": [{"role": "assistant", "content": "Go."}]}) + "\n")
    with pytest.raises(UserError, match=r"mix\.yaml:7: data\.train\[1\] \(\S*chat\.jsonl\): its 'prompt' holds "
                                        r"List\(.*\), but data\.train\[0\]'s holds Value\('string'\)"):
        load_splits(load_recipe(write_recipe(tmp_path, entries(f"{{path: {as_text}}}", f"{{path: {as_messages}}}"),
                                             f"  eval: {as_text}\n", "preference")), ("preference",))


# ---------------------------------------------------------------- real runs

@pytest.mark.recipe
def test_sft_run_records_the_mixture_in_metrics(tmp_path, capsys):
    from tunelab.cli import main

    out = tmp_path / "sft"
    assert main(["train", SFT, "--output-dir", str(out), "train.max_steps=2", "eval.max_samples=4", "data.eval=null",
                 "data.train=[{path: builtin:sft_train, weight: 0.5}, {path: builtin:extract_train, count: 40}]"]) == 0
    assert "tunelab: mixture: builtin:sft_train 144 of 288 train records (weight 0.5, 32 held out for eval)" in \
        capsys.readouterr().out
    data = json.loads((out / "metrics.json").read_text())["data"]
    assert data["mixture"] == [
        {"path": "builtin:sft_train", "records": 288, "held_out": 32, "used": 144, "weight": 0.5},
        {"path": "builtin:extract_train", "records": 288, "held_out": 32, "used": 40, "weight": round(40 / 288, 4)}]
    assert data["train_records"] == 184 and data["eval_records"] == 64


@pytest.mark.recipe
def test_dpo_run_records_the_mixture_in_metrics(tmp_path):
    from tunelab.cli import main

    out = tmp_path / "dpo"
    assert main(["train", DPO, "--output-dir", str(out), "train.max_steps=2", "eval.max_samples=4",
                 "data.train=[{path: builtin:preference_train, weight: 2}, "
                 "{path: builtin:extract_preference_train, weight: 0.25}]"]) == 0
    data = json.loads((out / "metrics.json").read_text())["data"]
    assert [(m["path"], m["records"], m["used"], m["held_out"]) for m in data["mixture"]] == \
        [("builtin:preference_train", 80, 160, 0), ("builtin:extract_preference_train", 192, 48, 0)]
    assert data["train_records"] == 208 and data["eval_records"] == 20


# ---------------------------------------------------------------- a validation split for choosing settings

@pytest.mark.unit
def test_validation_split_comes_from_train_and_leaves_eval_alone(tmp_path, files):
    """data.validation_fraction (sweep --lr-search): scored on part of train; the eval split is not read into it."""
    recipe = write_recipe(tmp_path, f" {files['a']}", f"  eval: {files['c']}\n")
    plain = load_splits(load_recipe(recipe), CHAT)
    searched = load_splits(load_recipe(recipe, ["data.validation_fraction=0.3"]), CHAT)
    assert (len(searched.train), len(searched.eval)) == (7, 3) and len(plain.eval) == 5
    assert per_source(searched.where["eval"]) == {"a": 3}  # none of data.eval's records
    assert set(searched.where["train"]).isdisjoint(searched.where["eval"])
    assert searched.report["evaluated_on"].startswith("validation: 0.3 of the train records")
    with pytest.raises(UserError, match=r"data\.validation_fraction must be between 0 and 1 \(got 1\.5\)"):
        load_splits(load_recipe(recipe, ["data.validation_fraction=1.5"]), CHAT)
