"""`tunelab sweep RECIPE [key=value ...] --methods lora,prefix,...`: one task trained under several methods, then
`tunelab compare` over the runs.

Every method gets the same recipe, data and budget (steps or epochs, batch size) and the same overrides,
learning rate included: `METHOD:key=value` changes one method only (`prompt:train.learning_rate=0.3`).
Everything is checked before the first run starts: each method against the recipe (a method the recipe cannot
use is skipped with its reason when the list is the default one, refused when the user named it), and
existing runs (refused without --overwrite).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tunelab import training
from tunelab.config import AdapterConfig, load_recipe, split_overrides
from tunelab.errors import UserError
from tunelab.families import family_of

DEFAULT_METHODS = ("lora", "qlora", "prefix", "prompt", "full")


@dataclass
class SweepPlan:
    """The runs of a sweep, checked: one per method that fits, each with its overrides."""
    recipe: str
    out_root: Path
    runs: dict[str, list[str]]  # method -> its overrides
    skipped: list[str] = field(default_factory=list)  # "method: why it cannot train this recipe"
    overwrite: bool = False


def plan_sweep(recipe: str, overrides: list[str], methods: str | None, output_dir: str | None,
               overwrite: bool) -> SweepPlan:
    """Check every method against the recipe and the run directories before anything trains. Methods the user
    named must fit; of the default list, those that do not are skipped with their reason."""
    chosen = _method_list(methods)
    shared, per_method = _split_overrides(overrides, chosen)
    out_root = Path(output_dir or Path("runs") / f"sweep-{Path(recipe).stem}")
    runs, skipped = {}, []
    for method in chosen:
        edits = [*shared, *per_method[method], f"adapter.method={method}"]
        refusal = _check(recipe, edits, out_root / method)
        if refusal and methods:
            raise UserError(f"--methods {method}: {refusal}")
        if refusal:
            skipped.append(f"{method}: {refusal}")
        else:
            runs[method] = edits
    if not runs:
        raise UserError(f"{recipe}: none of the methods fits this recipe:\n  " + "\n  ".join(skipped))
    _check_free([out_root / m for m in runs], overwrite)
    return SweepPlan(recipe, out_root, runs, skipped, overwrite)


def train_one(plan: SweepPlan, method: str) -> bool:
    """Train one method's run as `tunelab train` would, in a child process, so that each run's peak memory is
    its own (ru_maxrss and the CUDA peak counters only ever grow within a process). True if it finished."""
    cmd = [sys.executable, "-m", "tunelab", "train", plan.recipe, *plan.runs[method],
           "--output-dir", str(plan.out_root / method), *["--overwrite"] * plan.overwrite]
    return subprocess.run(cmd).returncode == 0


def _method_list(text: str | None) -> list[str]:
    """The methods in the order given, once each."""
    methods = list(dict.fromkeys(m.strip() for m in (text or ",".join(DEFAULT_METHODS)).split(",") if m.strip()))
    known = next(f for f in dataclasses.fields(AdapterConfig) if f.name == "method").metadata["choices"]
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
