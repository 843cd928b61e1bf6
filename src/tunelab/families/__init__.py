"""Recipe modules. `recipe: causal_lm.sft` in a YAML file names module `causal_lm`, stage `sft`.

Each module has FORMATS (stage -> data formats), build_args, train, load_run, base_model_of and evaluate_run;
encoder and clip runs also predict, and clip reads its image data itself (read_data, check_method).
"""

import importlib

from tunelab.errors import UserError

STAGES = {"causal_lm": ("pretrain", "sft", "dpo"), "encoder": ("classify", "pair", "tag"),
          "seq2seq": ("pretrain", "text2text"), "clip": ("pretrain", "finetune")}


def stage_of(name: str, origin: str) -> tuple[str, str]:
    module, _, stage = name.partition(".")
    if module not in STAGES or stage not in STAGES[module]:
        known = ", ".join(f"{m}.{s}" for m, stages in STAGES.items() for s in stages)
        raise UserError(f"{origin}: recipe = {name!r} is not a known recipe (have: {known})")
    return module, stage


def module_of(name: str, origin: str):
    """(recipe module, stage) for a recipe name such as encoder.tag."""
    module, stage = stage_of(name, origin)
    return importlib.import_module(f"tunelab.families.{module}"), stage
