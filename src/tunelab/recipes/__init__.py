"""Recipe modules. `recipe: causal_lm.sft` in a YAML file names module `causal_lm`, stage `sft`."""

from tunelab.errors import UserError

STAGES = {"causal_lm": ("pretrain", "sft", "dpo")}


def stage_of(name: str, origin: str) -> tuple[str, str]:
    module, _, stage = name.partition(".")
    if module not in STAGES or stage not in STAGES[module]:
        known = ", ".join(f"{m}.{s}" for m, stages in STAGES.items() for s in stages)
        raise UserError(f"{origin}: recipe = {name!r} is not a known recipe (have: {known})")
    return module, stage
