"""`tunelab sweep RECIPE [key=value ...] --methods lora,prefix,...`: one task trained under several methods, then
`tunelab compare` over the runs.

Every method gets the same recipe, data and budget (steps or epochs, batch size) and the same overrides,
learning rate included: `METHOD:key=value` changes one method only (`prompt:train.learning_rate=0.3`).
Everything is checked before the first run starts: each method against the recipe (a method the recipe cannot
use is skipped with its reason when the list is the default one, refused when the user named it), and
existing runs (refused without --overwrite).

`--lr-search 1e-4,1e-3,1e-2`: methods want different learning rates (prompt tuning 0.3, full fine-tuning 1e-5),
so one shared rate favours some. `--lr-search x0.3,x1,x3` searches around each method's own rate instead (the
recipe's, or the one a `METHOD:train.learning_rate=...` override gives it). Each method first trains once per
rate on the train data less a validation
split (data.validation_fraction); the rate with the best validation score is chosen, and the method's run trains
at it on all the train data and is scored on the eval split, which the search never saw. The search's scores and
the choice are in that run's metrics.json under `lr_search`.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tunelab import rundir, training
from tunelab.compare import float_or_none
from tunelab.config import AdapterConfig, load_recipe, split_overrides
from tunelab.errors import UserError
from tunelab.families import family_of

DEFAULT_METHODS = ("lora", "qlora", "prefix", "prompt", "full")
# How a search run is scored, best first: the first of these its eval metrics have; True where higher is better.
SELECTION = (("eval_loss", False), ("accuracy", True), ("f1", True), ("rougeL", True))
SEARCH_DIR = "lr-search"


@dataclass
class SweepPlan:
    """The runs of a sweep, checked: one per method that fits, each with its overrides."""
    recipe: str
    out_root: Path
    runs: dict[str, list[str]]  # method -> its overrides
    skipped: list[str] = field(default_factory=list)  # "method: why it cannot train this recipe"
    overwrite: bool = False
    learning_rates: list[str] = field(default_factory=list)  # --lr-search: rates, or xF multiples of a method's own
    validation_fraction: float = 0.1
    search_edits: list[str] = field(default_factory=list)  # what every search run adds to its method's overrides

    def rates(self, method: str) -> list[float]:
        """The method's candidate learning rates: as given, or multiples of its own rate."""
        own = None
        if any(r.startswith("x") for r in self.learning_rates):
            own = float_or_none(load_recipe(self.recipe, self.runs[method]).train.get("learning_rate"))
            if own is None:
                raise UserError(f"--lr-search {','.join(self.learning_rates)}: {method} has no train.learning_rate "
                                f"to multiply; give one in the recipe or as {method}:train.learning_rate=...")
        return [float(f"{own * float(r[1:]):.3g}") if r.startswith("x") else float(r) for r in self.learning_rates]

    def search_dir(self, method: str, rate: float) -> Path:
        return self.out_root / SEARCH_DIR / method / f"lr{rate:g}"


def plan_sweep(recipe: str, overrides: list[str], methods: str | None, output_dir: str | None,
               overwrite: bool, lr_search: str | None = None, validation_fraction: float = 0.1) -> SweepPlan:
    """Check every method against the recipe and the run directories before anything trains. Methods the user
    named must fit; of the default list, those that do not are skipped with their reason."""
    chosen = _method_list(methods)
    rates = _rates(lr_search)
    if rates and not 0 < validation_fraction < 1:
        raise UserError(f"--validation-fraction {validation_fraction:g}: should be between 0 and 1")
    shared, per_method = _split_overrides(overrides, chosen)
    absolute = any(not r.startswith("x") for r in rates)
    if absolute and any(e.partition("=")[0].rpartition(":")[2] == "train.learning_rate" for e in overrides):
        raise UserError("--lr-search with rates chooses train.learning_rate itself; drop the learning-rate override "
                        "(or search around it: --lr-search x0.3,x1,x3)")
    out_root = Path(output_dir or Path("runs") / f"sweep-{Path(recipe).stem}")
    runs, skipped = {}, []
    for method in chosen:
        edits = [*shared, *per_method[method], f"adapter.method={method}"]
        refusal = _check(recipe, edits, out_root / method)
        if refusal and methods and methods != "all":
            raise UserError(f"--methods {method}: {refusal}")
        if refusal:
            skipped.append(f"{method}: {refusal}")
        else:
            runs[method] = edits
    if not runs:
        raise UserError(f"{recipe}: none of the methods fits this recipe:\n  " + "\n  ".join(skipped))
    plan = SweepPlan(recipe, out_root, runs, skipped, overwrite, rates, validation_fraction,
                     _search_edits(recipe, shared))
    _check_free([out_root / m for m in runs] + [plan.search_dir(m, r) for m in runs for r in plan.rates(m)],
                overwrite)
    return plan


def train_one(plan: SweepPlan, method: str, extra: tuple[str, ...] = (), out: Path | None = None) -> bool:
    """Train one method's run as `tunelab train` would, in a child process, so that each run's peak memory is
    its own (ru_maxrss and the CUDA peak counters only ever grow within a process). True if it finished."""
    cmd = [sys.executable, "-m", "tunelab", "train", plan.recipe, *plan.runs[method], *extra,
           "--output-dir", str(out or plan.out_root / method), *["--overwrite"] * plan.overwrite]
    return subprocess.run(cmd).returncode == 0


def search_rate(plan: SweepPlan, method: str) -> dict | None:
    """Train the method once per candidate rate on the train data less the validation split; the scores and
    the chosen rate, or None if no search run finished."""
    scores = {}
    for rate in plan.rates(method):
        out = plan.search_dir(method, rate)
        if train_one(plan, method, (f"train.learning_rate={rate}", f"data.validation_fraction="
                                    f"{plan.validation_fraction}", *plan.search_edits), out):
            scores[rate] = rundir.read_metrics(out).get("eval", {})
    metric = next(((name, higher) for name, higher in SELECTION
                   if scores and all(_finite(s.get(name)) for s in scores.values())), None)
    if metric is None:
        return None
    name, higher = metric
    chosen = (max if higher else min)(scores, key=lambda rate: scores[rate][name])
    return {"metric": name, "higher_is_better": higher, "validation_fraction": plan.validation_fraction,
            "scores": {f"{rate:g}": scores[rate][name] for rate in scores}, "chosen": chosen}


def record_search(run: Path, search: dict) -> None:
    metrics = rundir.read_metrics(run)
    metrics["lr_search"] = search
    rundir.write_json(run / "metrics.json", metrics)


def _search_edits(recipe_path: str, overrides: list[str]) -> list[str]:
    """A causal LM's search runs are chosen by eval_loss, which every SFT eval has: they skip generating replies
    for exact match and ROUGE, which on SmolLM2 took a fifth of a search run and would not decide anything."""
    recipe = load_recipe(recipe_path, overrides)
    if recipe.recipe == "causal_lm.sft" and "perplexity" in recipe.eval.metrics:
        return ["eval.metrics=[perplexity]"]
    return []


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _rates(text: str | None) -> list[str]:
    """The --lr-search items, checked: positive numbers, or xF multiples of each method's own rate."""
    if not text:
        return []
    items = list(dict.fromkeys(r.strip() for r in text.split(",") if r.strip()))
    values = [float_or_none(r.removeprefix("x")) for r in items]
    if any(v is None for v in values):
        raise UserError(f"--lr-search {text}: expected comma-separated learning rates (1e-4,1e-3,1e-2) or multiples "
                        f"of each method's own rate (x0.3,x1,x3)")
    if len(items) < 2 or any(not 0 < v < math.inf for v in values):
        raise UserError(f"--lr-search {text}: give two or more positive learning rates, e.g. 1e-4,1e-3,1e-2")
    return items



def _method_list(text: str | None) -> list[str]:
    """The methods in the order given, once each; `all`: every method."""
    known = next(f for f in dataclasses.fields(AdapterConfig) if f.name == "method").metadata["choices"]
    text = ",".join(known) if text == "all" else text
    methods = list(dict.fromkeys(m.strip() for m in (text or ",".join(DEFAULT_METHODS)).split(",") if m.strip()))
    unknown = [m for m in methods if m not in known]
    if unknown or not methods:
        raise UserError(f"--methods {text}: {', '.join(unknown) or 'no method'} (the methods: {', '.join(known)})")
    return methods


def _split_overrides(overrides: list[str], methods: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Shared `key=value` edits, and `METHOD:key=value` edits for one method each."""
    for text in overrides:
        if text.partition("=")[0].rpartition(":")[2].strip() == "adapter.method":
            raise UserError(f"{text}: a sweep sets adapter.method itself; choose the methods with --methods")
    return split_overrides(overrides, methods, "swept methods")


def _check(recipe_path: str, overrides: list[str], out: Path) -> str | None:
    """What `tunelab validate` checks, short of reading the data. A mistake in the recipe or the overrides is
    raised; the reason the method cannot train this recipe (qlora on a T5, say) is returned."""
    recipe = load_recipe(recipe_path, overrides)
    family, stage = family_of(recipe.recipe, recipe.origin("recipe"))
    training.trainer_arguments(family, recipe, stage, out)
    try:
        family.check(recipe, stage)
    except UserError as e:
        return str(e)
    return None


def _check_free(outs: list[Path], overwrite: bool) -> None:
    taken = [o for o in outs if o.exists() or o.with_name(o.name + ".partial").exists()]
    if taken and not overwrite:
        raise UserError(f"{', '.join(map(str, taken))}: runs of an earlier sweep are there; pass --overwrite to "
                        f"replace them, or choose another --output-dir")
