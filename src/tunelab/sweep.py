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
from argparse import Namespace
from pathlib import Path

from tunelab import adapters
from tunelab.compare import run_compare
from tunelab.config import AdapterConfig, load_recipe, split_overrides
from tunelab.errors import UserError
from tunelab.recipes import module_of

DEFAULT_METHODS = ("lora", "qlora", "prefix", "prompt", "full")


def run_sweep(args) -> int:
    methods = _method_list(args.methods)
    shared, per_method = _split_overrides(args.overrides, methods)
    out_root = Path(args.output_dir or Path("runs") / f"sweep-{Path(args.recipe).stem}")
    plan, skipped = [], []
    for method in methods:
        overrides = [*shared, *per_method[method], f"adapter.method={method}"]
        refusal = _check(args.recipe, overrides, out_root / method)
        if refusal and args.methods:
            raise UserError(f"--methods {method}: {refusal}")
        if refusal:
            skipped.append(f"{method}: {refusal}")
        else:
            plan.append((method, overrides))
    if not plan:
        raise UserError(f"{args.recipe}: none of the methods fits this recipe:\n  " + "\n  ".join(skipped))
    _check_free([out_root / m for m, _ in plan], args.overwrite)

    print(f"sweep: {', '.join(m for m, _ in plan)} on {args.recipe}, same data and budget, runs in {out_root}/")
    for reason in skipped:
        print(f"  skipped {reason}")
    failed = []
    for method, overrides in plan:
        print(f"\n=== {method} ===", flush=True)
        # A child process per run, as `tunelab train` would be: each run's peak memory is its own
        # (ru_maxrss and the CUDA peak counters only ever grow within a process).
        cmd = [sys.executable, "-m", "tunelab", "train", args.recipe, *overrides, "--output-dir", str(out_root / method)]
        if subprocess.run(cmd + ["--overwrite"] * args.overwrite).returncode != 0:
            failed.append(method)
    finished = [str(out_root / m) for m, _ in plan if m not in failed]
    if finished:
        print()
        run_compare(Namespace(run_dirs=finished, output=str(out_root / "compare.png")))
    if failed:
        print(f"sweep: {', '.join(failed)} failed (see above); the others are compared", file=sys.stderr)
        return 1
    return 0


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
    family, stage = module_of(recipe.recipe, recipe.origin("recipe"))
    family.build_args(recipe, stage, out)
    try:
        getattr(family, "check_method", adapters.check_method)(recipe)
    except UserError as e:
        return str(e)
    return None


def _check_free(outs: list[Path], overwrite: bool) -> None:
    taken = [o for o in outs if o.exists() or o.with_name(o.name + ".partial").exists()]
    if taken and not overwrite:
        raise UserError(f"{', '.join(map(str, taken))}: runs of an earlier sweep are there; pass --overwrite to "
                        f"replace them, or choose another --output-dir")
