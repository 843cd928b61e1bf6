"""The recipes that ship with tunelab, by name: `qwen2/sft_lora` is recipes/qwen2/sft_lora.yaml.

In a checkout they are the YAML files under recipes/ at the repository root; an installed tunelab carries
the same files as its package data, tunelab/recipes/ (setup.py maps one onto the other, so there is one copy).
"""

from __future__ import annotations

import difflib
from pathlib import Path

from tunelab.errors import UserError

_PACKAGE = Path(__file__).resolve().parent
ACCELERATE = "accelerate"  # launch configs for `accelerate launch --config_file`, not recipes


def recipes_dir() -> Path:
    """tunelab/recipes/ in an installed package, else recipes/ of the source checkout this file lies in."""
    packaged = _PACKAGE / "recipes"
    if any(packaged.glob("*/*.yaml")):
        return packaged
    return _PACKAGE.parents[1] / "recipes"


def names(launch_configs: bool = False) -> list[str]:
    """Every shipped recipe as family/name, sorted; with `launch_configs`, the accelerate configs instead
    (accelerate/cpu_2proc, ...), which are not recipes but may be copied like them."""
    root = recipes_dir()
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.glob("*/*.yaml")
                  if (p.parent.name == ACCELERATE) == launch_configs)


def path_of(name: str) -> Path:
    """The file of a shipped recipe or launch config (`qwen2/sft_lora`, `accelerate/cpu_2proc`, with or without
    .yaml), or a UserError with the nearest names."""
    stem = name.removesuffix(".yaml")
    known = names() + names(launch_configs=True)
    if stem in known:
        return recipes_dir() / f"{stem}.yaml"
    near = difflib.get_close_matches(stem, known, n=3)
    hint = f"; did you mean {' or '.join(near)}?" if near else ""
    raise UserError(f"{name}: neither a recipe file nor a shipped recipe name{hint} (`tunelab recipes` lists them)")


def resolve(recipe: str | Path) -> Path:
    """What `tunelab train RECIPE` reads: an existing file as it is, else the shipped recipe of that name; the
    README's `recipes/qwen2/sft_lora.yaml` also names the shipped one where no such file is (an installed tunelab)."""
    path = Path(recipe)
    if path.is_file():
        return path
    stem = str(recipe).removeprefix("recipes/").removesuffix(".yaml")
    if stem in names():
        return recipes_dir() / f"{stem}.yaml"
    if path.suffix in (".yaml", ".yml"):
        return path  # meant as a file: the loader says it is not there
    return path_of(str(recipe))


def copy(name: str, dest: str | Path) -> Path:
    """Write a shipped recipe to `dest` to edit; an existing file is never overwritten."""
    source, dest = path_of(name), Path(dest)
    if dest.is_dir():
        dest = dest / source.name
    if dest.exists():
        raise UserError(f"{dest}: exists; choose another name (tunelab never overwrites a recipe you may have edited)")
    if not dest.parent.is_dir():
        raise UserError(f"{dest.parent}: no such directory")
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_bytes(source.read_bytes())
    tmp.rename(dest)
    return dest
