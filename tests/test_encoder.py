"""Encoder recipes on the real all-MiniLM-L6-v2: every recipe trains a few steps and saves a loadable run;
eval, predict and merge work on saved runs; subword alignment, label sets and bad input behave."""

import json
import re

import pytest
import torch

from conftest import REPO, assert_user_error, run_cli
from tunelab.cli import main
from tunelab.data.readers import read_records
from tunelab.errors import UserError

BERT = REPO / "recipes" / "bert"
# A few steps on a slice of the data: enough to see the loss move, seconds on a CPU.
QUICK = ["train.max_steps=6", "train.logging_steps=1", "train.save_strategy=no", "data.max_train_samples=96",
         "eval.max_samples=24", "train.per_device_train_batch_size=8"]


def train(out, recipe: str, *overrides: str):
    assert main(["train", str(BERT / f"{recipe}.yaml"), "--output-dir", str(out), *QUICK, *overrides]) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="session")
def classify_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("enc") / "classify_lora"
    train(out, "classify_lora", "train.max_steps=40", "data.max_train_samples=320", "train.warmup_steps=0")
    return out


@pytest.fixture(scope="session")
def tag_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("enc") / "tag_lora"
    train(out, "tag_lora", "train.max_steps=40", "data.max_train_samples=320", "train.warmup_steps=0")
    return out


# ---------------------------------------------------------------- units

@pytest.mark.unit
def test_first_subtoken_carries_the_word_tag():
    from transformers import AutoTokenizer

    from tunelab.checkpoints import resolve
    from tunelab.data.encoder_inputs import IGNORE, align_tags

    tokenizer = AutoTokenizer.from_pretrained(resolve("embedded:all-minilm-l6-v2"))
    enc = tokenizer(["Ship", "to", "Schwarzenegger", "Boulevard"], is_split_into_words=True)
    labels = align_tags(enc.word_ids(), [0, 0, 1, 2])
    pieces = tokenizer.convert_ids_to_tokens(enc["input_ids"])
    assert len([p for p in pieces if p.startswith("##")]) >= 2  # the long name really is split
    carried = [(piece, label) for piece, label in zip(pieces, labels) if label != IGNORE]
    assert carried == [("ship", 0), ("to", 0), (pieces[3], 1), ("boulevard", 2)]
    assert labels[0] == IGNORE and labels[-1] == IGNORE  # [CLS] and [SEP]


@pytest.mark.unit
def test_tagging_eval_loss_is_the_loss_the_head_trains_on():
    """eval_loss (the search's tie-breaker when F1 saturates) equals the model's own token-classification loss,
    which counts each word once, at its first sub-token."""
    from datasets import Dataset
    from transformers import AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification

    from tunelab.checkpoints import resolve
    from tunelab.config import load_recipe
    from tunelab.data.encoder_inputs import encode
    from tunelab.evaluation.encoder import evaluate

    names = ["O", "B-STREET", "I-STREET"]
    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(resolve("embedded:all-minilm-l6-v2"), num_labels=3)
    tokenizer = AutoTokenizer.from_pretrained(resolve("embedded:all-minilm-l6-v2"))
    ds = Dataset.from_dict({"tokens": [["Ship", "to", "Schwarzenegger", "Boulevard"], ["12", "Elm", "Street"]],
                            "tags": [["O", "O", "B-STREET", "I-STREET"], ["O", "B-STREET", "I-STREET"]]})
    scores = evaluate(model, tokenizer, load_recipe(str(BERT / "tag_lora.yaml")), "tag", names, ds)
    enc = encode(tokenizer, "tag", ds[:], None, names)
    inputs = DataCollatorForTokenClassification(tokenizer)([{k: v[i] for k, v in enc.items()} for i in range(len(ds))])
    with torch.no_grad():
        assert scores["eval_loss"] == pytest.approx(model(**inputs).loss.item(), rel=1e-5)


@pytest.mark.unit
def test_words_and_spans():
    from tunelab.evaluation.encoder import spans, split_words

    assert split_words("221 Baker St, Springfield") == ["221", "Baker", "St", ",", "Springfield"]
    assert split_words("深圳市南山区100号") == list("深圳市南山区") + ["100", "号"]
    words = ["221", "Baker", "St", ",", "Springfield"]
    tags = ["B-HOUSE_NUMBER", "B-STREET", "I-STREET", "O", "B-CITY"]
    assert [(s["type"], s["text"]) for s in spans(words, tags)] == [
        ("HOUSE_NUMBER", "221"), ("STREET", "Baker St"), ("CITY", "Springfield")]
    assert spans(list("南山区"), ["B-DISTRICT", "I-DISTRICT", "I-DISTRICT"])[0]["text"] == "南山区"


@pytest.mark.unit
def test_label_sets_from_names_ids_and_tags(tmp_path):
    from tunelab.config import DataConfig
    from tunelab.data.labels import label_names, use_names

    path = tmp_path / "ids.jsonl"
    path.write_text("\n".join(json.dumps({"text": t, "label": i}) for t, i in [("a", 1), ("b", 0), ("c", 1)]))
    records = read_records(str(path))
    given = DataConfig(format="classification", labels=["neg", "pos"])
    use_names(records, "classification", label_names(records, given), True, "data.labels")
    assert [r["label"] for r in records.rows] == ["pos", "neg", "pos"]
    assert label_names(read_records(str(path)), DataConfig(format="classification")) == ["0", "1"]
    from tunelab.data.formats import check

    for name, fmt in (("intents.csv", "classification"), ("pairs.csv", "pair"), ("zh_reviews_train.jsonl", "classification")):
        check(read_records(str(REPO / "examples" / "data" / name)), fmt)  # the README's examples are valid
    conll = read_records(str(REPO / "examples" / "data" / "address.conll"))
    assert conll.lines == [3, 14] and conll.rows[1]["tokens"][:2] == ["1600", "Pennsylvania"]
    tag_names = label_names(conll, DataConfig(format="tagging"))
    assert tag_names[0] == "O" and "I-CITY" in tag_names  # every prefix of a seen type, though I-CITY never occurs
    with pytest.raises(UserError, match=r"zh\.jsonl:1: label 'maybe' never occurs in the train data"):
        bad = tmp_path / "zh.jsonl"
        bad.write_text(json.dumps({"text": "也许", "label": "maybe"}) + "\n")
        use_names(read_records(str(bad)), "classification", ["neg", "pos"], False, "the train data")


# ---------------------------------------------------------------- recipes

@pytest.mark.recipe
@pytest.mark.parametrize("recipe", ["classify_full", "classify_prefix", "classify_prompt", "pair_lora", "tag_full"])
def test_recipe_trains_and_saves_a_loadable_run(tmp_path, recipe):
    from tunelab.families.encoder import load_run

    out = tmp_path / recipe
    metrics = train(out, recipe)
    losses = [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(losses)))
    assert metrics["trainable_params"] > 0
    saved = out / ("model" if recipe.endswith("full") else "adapter")
    assert (saved / ("config.json" if recipe.endswith("full") else "adapter_config.json")).is_file()
    model, _ = load_run(out)
    labels = json.loads((out / "labels.json").read_text())["labels"]
    assert model.config.id2label[0] == labels[0] and len(model.config.id2label) == len(labels)
    key = "f1" if recipe.startswith("tag") else "accuracy"
    assert 0 <= metrics["eval"][key] <= 1


@pytest.mark.recipe
def test_lora_classification_learns(classify_run):
    """40 steps on 320 records: the loss falls and the held-out accuracy clears chance (1/6) by far."""
    metrics = json.loads((classify_run / "metrics.json").read_text())
    assert metrics["train"]["final_loss"] < metrics["train"]["first_loss"] * 0.7
    assert metrics["eval"]["accuracy"] > 0.5
    assert (classify_run / "confusion.png").is_file()
    assert set(metrics["eval"]["per_class"]) == set(json.loads((classify_run / "labels.json").read_text())["labels"])


@pytest.mark.recipe
def test_lora_tagging_learns_and_changes_the_adapter(tag_run):
    from safetensors.torch import load_file

    metrics = json.loads((tag_run / "metrics.json").read_text())
    assert metrics["train"]["final_loss"] < metrics["train"]["first_loss"] * 0.5
    assert metrics["eval"]["f1"] > 0.3 and set(metrics["eval"]["per_type"]) <= {
        "HOUSE_NUMBER", "STREET", "CITY", "STATE", "POSTCODE"}
    weights = load_file(tag_run / "adapter" / "adapter_model.safetensors")
    lora_b = [w for k, w in weights.items() if "lora_B" in k]
    assert lora_b and all(w.abs().max() > 0 for w in lora_b)  # B starts at zero: nonzero means it trained
    assert any("classifier" in k for k in weights)  # the fresh head is saved with the adapter


# ---------------------------------------------------------------- eval, predict, merge

@pytest.mark.recipe
def test_eval_with_baseline_compares_with_a_fresh_head(capsys, classify_run):
    trained = json.loads((classify_run / "metrics.json").read_text())["eval"]
    code, out, _ = run_cli(capsys, "eval", classify_run, "--baseline")
    assert code == 0 and "macro_f1" in out and "difference" in out
    metrics = json.loads((classify_run / "metrics.json").read_text())
    assert metrics["eval"]["accuracy"] == trained["accuracy"]  # the reloaded run scores what training scored
    assert metrics["eval"]["per_class"] == trained["per_class"]
    assert metrics["baseline"]["accuracy"] < metrics["eval"]["accuracy"]
    assert (classify_run / "baseline_confusion.png").is_file()


@pytest.mark.recipe
def test_predict_prints_labels_and_spans(capsys, classify_run, tag_run):
    code, out, _ = run_cli(capsys, "predict", classify_run, "--text", "what's the weather in Rome tomorrow", "--top", "2")
    lines = out.strip().splitlines()
    assert code == 0 and lines[0].split("\t")[0] in json.loads((classify_run / "labels.json").read_text())["labels"]
    probs = [float(line.split()[-1]) for line in lines[1:]]
    assert len(probs) == 2 and probs[0] >= probs[1]
    code, out, _ = run_cli(capsys, "predict", tag_run, "--text", "Ship to 12 Oak Street, Boston, MA 02118")
    assert code == 0 and re.search(r"^\s+[A-Z_]+\s+\S", out, re.M)


@pytest.mark.recipe
def test_merged_lora_run_predicts_the_same(tmp_path, classify_run):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tunelab.families.encoder import load_run

    merged = tmp_path / "merged"
    assert main(["merge", str(classify_run), str(merged)]) == 0
    standalone = AutoModelForSequenceClassification.from_pretrained(merged).eval()
    adapter_model, _ = load_run(classify_run)
    batch = AutoTokenizer.from_pretrained(merged)(["set an alarm for 7", "translate hello into French"],
                                                  padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(standalone(**batch).logits, adapter_model(**batch).logits, atol=1e-4, rtol=1e-4)
    assert standalone.config.id2label == adapter_model.config.id2label


# ---------------------------------------------------------------- bad input

@pytest.mark.unit
def test_bad_encoder_input_is_one_line_and_exit_2(capsys, tmp_path):
    out = tmp_path / "run"
    classify, tag = BERT / "classify_lora.yaml", BERT / "tag_lora.yaml"
    unseen = tmp_path / "eval.jsonl"
    unseen.write_text(json.dumps({"text": "order a pizza", "label": "weather"}) + "\n"
                      + json.dumps({"text": "order a taxi", "label": "order_taxi"}) + "\n")
    assert_user_error(capsys, r"eval\.jsonl:2: label 'order_taxi' never occurs in the train data",
                      "train", classify, "--output-dir", out, f"data.eval={unseen}")
    uneven = tmp_path / "uneven.jsonl"
    uneven.write_text(json.dumps({"tokens": ["12", "Oak", "St"], "tags": ["B-HOUSE_NUMBER", "B-STREET"]}) + "\n")
    assert_user_error(capsys, r"uneven\.jsonl:1: 3 tokens but 2 tags", "train", tag, "--output-dir", out,
                      f"data.train={uneven}")
    assert_user_error(capsys, r"tag_scheme = 'IOBX' should be one of: BIO, BIOES",
                      "train", tag, "--output-dir", out, "data.tag_scheme=IOBX")
    bioes = tmp_path / "bioes.jsonl"
    bioes.write_text(json.dumps({"tokens": ["Oslo"], "tags": ["S-CITY"]}) + "\n")
    assert_user_error(capsys, r"bioes\.jsonl:1: tag 'S-CITY' does not fit the BIO tag scheme",
                      "train", tag, "--output-dir", out, f"data.train={bioes}")
    empty = tmp_path / "empty_text.csv"
    empty.write_text("text,label\nhello,greet\n  ,greet\n")
    assert_user_error(capsys, r"empty_text\.csv:3: field 'text' is empty", "train", classify, "--output-dir", out,
                      f"data.train={empty}")
    assert_user_error(capsys, r"builtin:address_en_train: this built-in set is in the 'tagging' format",
                      "train", classify, "--output-dir", out, "data.train=builtin:address_en_train")
    tagging_file = tmp_path / "tags.jsonl"
    tagging_file.write_text(json.dumps({"tokens": ["Oslo"], "tags": ["B-CITY"]}) + "\n")
    assert_user_error(capsys, r"tags\.jsonl:1: record has no 'text' field .* looks like 'tagging' data",
                      "train", classify, "--output-dir", out, f"data.train={tagging_file}")
    assert_user_error(capsys, r"address\.conll: this file is in the 'tagging' format",
                      "train", classify, "--output-dir", out, f"data.train={REPO / 'examples/data/address.conll'}")
    assert_user_error(capsys, r"prompt does not fit token tagging", "train", tag, "--output-dir", out,
                      "adapter.method=prompt")
    assert_user_error(capsys, r"data\.labels applies to classification and pair data only",
                      "train", tag, "--output-dir", out, "data.labels=[O, B-CITY]")
    extra = tmp_path / "extra.csv"
    extra.write_text("text,label\nhello, world,greet\n")
    assert_user_error(capsys, r"extra\.csv:2: more fields than the header has", "train", classify, "--output-dir", out,
                      f"data.train={extra}")
    assert not out.exists() and not out.with_name("run.partial").exists()
