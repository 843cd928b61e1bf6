"""`tunelab compare` over finished runs of any family, and `tunelab sweep` training one task under several methods
on the embedded T5 and ending with compare's table and chart."""

import json
import re

import pytest
import yaml

from conftest import REPO, assert_user_error, run_cli, tunelab

SUMMARIZE = REPO / "recipes" / "t5" / "summarize_lora.yaml"
TINY_BUDGET = ["train.max_steps=2", "data.max_train_samples=32", "eval.max_samples=4", "train.save_strategy=no"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def finished_run(path, recipe: str, method: str, scores: dict, learning_rate=None, **metrics):
    """A run directory as `tunelab train` leaves it, without weights (compare reads only the files)."""
    path.mkdir(parents=True)
    (path / "adapter").mkdir()
    train = {"learning_rate": learning_rate} if learning_rate is not None else {}
    (path / "recipe.yaml").write_text(yaml.safe_dump({"recipe": recipe, "adapter": {"method": method},
                                                      "data": {"train": "builtin:x"}, "train": train}))
    (path / "metrics.json").write_text(json.dumps({
        "recipe": recipe, "method": method, "trainable_params": 1000, "total_params": 100000,
        "train": {"runtime_s": 12.5, "tokens_per_second": 2000.0, "steps": 10}, "eval": scores,
        "peak_rss_mb": 800.0, **metrics}))
    return path


def table_rows(out: str) -> dict[str, list[str]]:
    """First cell -> all cells, for each Markdown table row printed."""
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("|")]
    return {r[0]: r for r in rows if not set(r[0]) <= {"-"}}


@pytest.mark.unit
def test_compare_shows_the_union_of_metrics_across_families(tmp_path, capsys):
    sft = finished_run(tmp_path / "sft", "causal_lm.sft", "lora", {"perplexity": 1.25, "accuracy": 0.5, "n": 20},
                       learning_rate=5e-3)
    t5 = finished_run(tmp_path / "t5", "seq2seq.text2text", "full",
                      {"rougeL": 0.6, "accuracy": 0.25, "samples": [{"x": 1}], "generation": {"num_beams": 1}},
                      learning_rate="1e-3", peak_cuda_allocated_mb=3000.0)  # YAML reads 1e-3 as text
    chart = tmp_path / "out" / "cmp.png"
    code, out, _ = run_cli(capsys, "compare", sft, t5, "--output", chart)
    assert code == 0
    rows = table_rows(out)
    header = rows["run"]
    assert header[header.index("saved") + 1:] == ["perplexity", "accuracy", "rougeL"]  # floats only
    column = {name: header.index(name) for name in header}
    assert rows["sft"][column["perplexity"]] == "1.25" and rows["t5"][column["perplexity"]] == "-"
    assert rows["sft"][column["rougeL"]] == "-" and rows["t5"][column["accuracy"]] == "0.25"
    assert rows["sft"][column["lr"]] == "0.005" and rows["t5"][column["lr"]] == "0.001"
    assert rows["sft"][column["share"]] == "1.00%" and rows["sft"][column["tokens/s"]] == "2,000"
    assert rows["sft"][column["peak memory"]] == "800 MB RSS" and rows["t5"][column["peak memory"]] == "3,000 MB CUDA"
    assert chart.read_bytes().startswith(PNG_MAGIC)
    assert sorted(p.name for p in chart.parent.iterdir()) == ["cmp.json", "cmp.png"]  # no temporary file left
    saved = json.loads((tmp_path / "out" / "cmp.json").read_text())["runs"]
    assert [r["method"] for r in saved] == ["lora", "full"] and saved[1]["metrics"] == {"rougeL": 0.6, "accuracy": 0.25}


@pytest.mark.unit
def test_runs_with_the_same_name_are_told_apart_by_their_parent(tmp_path, capsys):
    first = finished_run(tmp_path / "sweep1" / "lora", "seq2seq.text2text", "lora", {"rougeL": 0.5})
    second = finished_run(tmp_path / "sweep2" / "lora", "seq2seq.text2text", "lora", {"rougeL": 0.6})
    code, out, _ = run_cli(capsys, "compare", first, second, "--output", tmp_path / "c.png")
    rows = table_rows(out)
    assert code == 0 and {"sweep1/lora", "sweep2/lora"} <= set(rows)
    assert rows["sweep1/lora"][rows["run"].index("lr")] == "-"  # the recipe left it to the trainer


@pytest.mark.unit
def test_compare_names_what_is_not_a_finished_run(tmp_path, capsys):
    good = finished_run(tmp_path / "good", "seq2seq.text2text", "lora", {"rougeL": 0.5})
    (tmp_path / "half").mkdir()
    assert_user_error(capsys, re.escape(str(tmp_path / "half")) + ": not a finished run directory",
                      "compare", good, tmp_path / "half", "--output", tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()


@pytest.fixture(scope="module")
def sweep(t5_default, tmp_path_factory):
    """Prompt tuning on the T5 summarization recipe, choosing its learning rate on a validation split (one
    method: each searched rate is a run of its own, and a run here costs ~12 s, mostly a child process starting)."""
    out = tmp_path_factory.mktemp("sweep") / "t5"
    result = tunelab("sweep", str(SUMMARIZE), "--output-dir", str(out), "--methods", "prompt",
                     "--lr-search", "3e-3,0.3", *TINY_BUDGET)
    return out, result


@pytest.mark.recipe
def test_sweep_chooses_each_methods_rate_on_validation_and_ends_with_the_table(sweep):
    out, result = sweep
    assert sorted(p.name for p in out.iterdir()) == ["compare.json", "compare.png", "lr-search", "prompt"]
    rows = table_rows(result.stdout)
    assert list(rows) == ["run", "prompt"] and "rougeL" in rows["run"] and "saved" in rows["run"]
    runs = {r["method"]: r for r in json.loads((out / "compare.json").read_text())["runs"]}
    for method in runs:
        metrics = json.loads((out / method / "metrics.json").read_text())
        search = metrics["lr_search"]
        # a text2text eval has no loss: its ROUGE-L decides, higher is better
        assert search["metric"] == "rougeL" and search["higher_is_better"] and set(search["scores"]) == {"0.003", "0.3"}
        assert search["chosen"] == float(max(search["scores"], key=search["scores"].get))
        assert runs[method]["learning_rate"] == search["chosen"] and metrics["train"]["steps"] == 2  # same budget
        searched = json.loads((out / "lr-search" / method / "lr0.3" / "metrics.json").read_text())["data"]
        assert searched["evaluated_on"].startswith("validation: 0.1 of the train records")
        assert "evaluated_on" not in metrics["data"]  # the chosen run is scored on the eval split, unseen before
        assert searched["train_records"] + searched["eval_records"] == metrics["data"]["train_records"]
    assert 0 < runs["prompt"]["trainable_percent"] < 1
    assert (out / "compare.png").read_bytes().startswith(PNG_MAGIC)


@pytest.mark.unit
def test_sweep_skips_the_default_methods_a_recipe_cannot_use(tmp_path):
    from tunelab.sweep import plan_sweep

    plan = plan_sweep(str(SUMMARIZE), TINY_BUDGET, None, str(tmp_path / "sweep"), False)
    assert list(plan.runs) == ["lora", "prefix", "prompt", "full"]
    assert len(plan.skipped) == 1 and re.match(r"qlora: .*causal LMs only", plan.skipped[0])


@pytest.mark.unit
def test_a_causal_lm_search_scores_its_runs_on_loss_without_generating(tmp_path):
    from tunelab.sweep import plan_sweep

    sft = plan_sweep(str(REPO / "recipes" / "qwen2" / "sft_lora.yaml"), ["eval.metrics=[perplexity,rouge]"],
                     "lora,ia3", str(tmp_path / "sft"), False, "x1,x3")
    assert sft.search_edits == ["eval.metrics=[perplexity]"]
    # a recipe that asks for no perplexity has no loss to choose on: its search runs score what it asks for
    assert plan_sweep(str(REPO / "recipes" / "qwen2" / "sft_lora.yaml"), ["eval.metrics=[accuracy]"], "lora",
                      str(tmp_path / "acc"), False, "x1,x3").search_edits == []


@pytest.mark.recipe
def test_a_second_sweep_into_the_same_runs_is_refused_before_training(sweep, capsys):
    out, _ = sweep
    before = (out / "prompt" / "metrics.json").stat().st_mtime_ns
    assert_user_error(capsys, r"prompt.*runs of an earlier sweep are there; pass --overwrite",
                      "sweep", SUMMARIZE, "--output-dir", out, *TINY_BUDGET)
    assert (out / "prompt" / "metrics.json").stat().st_mtime_ns == before


@pytest.mark.unit
@pytest.mark.parametrize("args, error", [
    (["--methods", "lora,qlora"], r"--methods qlora: .*causal LMs only"),  # named, so refused rather than skipped
    (["--methods", "lora,lorra"], r"--methods lora,lorra: lorra \(the methods: lora, qlora"),
    (["full:train.learning_rate=1e-3", "--methods", "lora,prefix"], r"'full' is not one of the swept methods"),
    (["adapter.method=full"], r"sweep sets adapter.method itself"),
    (["train.no_such_option=1"], r"unknown key 'train.no_such_option'"),
    (["--lr-search", "1e-3"], r"--lr-search 1e-3: give two or more positive learning rates"),
    (["--lr-search", "1e-3,fast"], r"--lr-search 1e-3,fast: expected comma-separated learning rates"),
    (["--lr-search", "1e-3,1e-2", "train.learning_rate=1e-3"], r"--lr-search with rates chooses train.learning_rate"),
])
def test_sweep_mistakes_are_refused_before_anything_trains(args, error, tmp_path, capsys):
    assert_user_error(capsys, error, "sweep", SUMMARIZE, "--output-dir", tmp_path / "sweep", *args)
    assert not (tmp_path / "sweep").exists()
