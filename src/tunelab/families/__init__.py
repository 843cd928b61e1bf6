"""Recipe families: `recipe: causal_lm.sft` in a YAML file names family `causal_lm`, stage `sft`.

A family is one module in this package that satisfies `Family`: it says which stages it has and which data
formats each reads (FORMATS), checks a recipe, builds the trainer's arguments, prepares a run (model, data,
trainer class, evaluation: a `Job`), and loads, evaluates, generates with or predicts with a finished run.
The training scaffold (tunelab.training) does the rest the same way for every family: checks, staging,
callbacks, the trainer, training, saving, the run directory. Adding a family means adding its module, its
entry in FAMILIES and its recipes under recipes/<family>/; tests/test_families.py checks the contract.
docs/families.md says the same at more length, with an example.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

from transformers import Trainer

from tunelab.config import GenerateConfig, Recipe
from tunelab.errors import UserError

FAMILIES = ("causal_lm", "encoder", "seq2seq", "clip", "vlm", "vit")


@dataclass
class Job:
    """What a family hands the training scaffold for one run."""
    model: Any  # ready to train: PEFT-wrapped already, or with trainer_kwargs["peft_config"] for TRL to wrap
    train_dataset: Any
    eval_dataset: Any  # in the trainer's input shape; the trainer gets it when train.eval_strategy asks
    evaluate: Callable[[Any, Path], dict]  # (trained model, staged run directory for plots) -> the run's scores
    auto_class: str  # the class the model card loads the saved weights with
    trainer_cls: type = Trainer
    trainer_kwargs: dict = field(default_factory=dict)  # data_collator, processing_class, peft_config...
    processors: tuple = ()  # saved beside the weights: tokenizer, image processor, generation config
    files: dict = field(default_factory=dict)  # more JSON files of the run directory: name -> content
    report: dict = field(default_factory=dict)  # the data report (metrics.json "data")
    metrics: dict = field(default_factory=dict)  # family facts at the top of metrics.json (chat_template...)
    collective_scores: Callable[[Any], dict] | None = None  # trainer -> scores every rank must compute together
    train_facts: Callable[[Any], dict] | None = None  # trained model -> more of metrics.json "train"


@dataclass
class PredictRequest:
    """`tunelab predict`: texts for an encoder run, images and candidate labels for a CLIP run."""
    texts: list[str] = field(default_factory=list)
    text_pairs: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    labels: str | None = None  # comma-separated candidates
    template: str | None = None
    top: int = 5


@runtime_checkable
class Family(Protocol):
    """What every module in FAMILIES provides (module-level names; `self` is the module)."""

    FORMATS: dict[str, tuple[str, ...]]  # stage -> the data formats it reads; its keys are the family's stages
    GENERATES: bool  # its runs write text (`tunelab generate`); the others label inputs (`tunelab predict`)
    CHAT: bool  # its runs hold conversations (generate --chat and --system)

    def check(self, recipe: Recipe, stage: str) -> None:
        """Refuse what cannot run (method, generation settings...) before anything is read or written."""

    def build_args(self, recipe: Recipe, stage: str, output_dir: Path) -> Any:
        """The trainer's own argument dataclass, from the recipe's train: section and the family's defaults."""

    def data_report(self, recipe: Recipe, stage: str) -> dict:
        """Read and check the data without loading a model: {"train_records", "eval_records"} or {"hub": True}."""

    def prepare(self, recipe: Recipe, stage: str, args: Any) -> Job:
        """Model, data and evaluation of one run; nothing written yet."""

    def load_run(self, run_dir: str | Path, merge: bool = False) -> tuple:
        """(model, *processors) of a finished run, in eval mode; with merge, a LoRA adapter folded in."""

    def base_model_of(self, run_dir: str | Path) -> tuple:
        """(model, *processors) the run started from, for --baseline."""

    def evaluate_run(self, run_dir: Path, recipe: Recipe, stage: str, data: str | None, fmt: str | None,
                     baseline: bool) -> dict:
        """{"model": scores, "baseline": scores of the base model (with baseline)} on the eval split or `data`."""

    def generate(self, loaded: tuple, recipe: Recipe, prompts: list, settings: GenerateConfig, raw: bool) -> list[str]:
        """One output per prompt (a text, or a conversation for CHAT families); a UserError if it does not generate."""

    def predict(self, run_dir: Path, recipe: Recipe, stage: str, request: PredictRequest) -> list[dict]:
        """One result per input; a UserError if the family does not predict labels."""


def stage_of(name: str, origin: str) -> tuple[str, str]:
    """(family name, stage) of a recipe name such as encoder.tag."""
    family, _, stage = name.partition(".")
    if family not in FAMILIES or stage not in family_module(family).FORMATS:
        known = ", ".join(f"{f}.{s}" for f in FAMILIES for s in family_module(f).FORMATS)
        raise UserError(f"{origin}: recipe = {name!r} is not a known recipe (have: {known})")
    return family, stage


def family_module(name: str) -> Family:
    return importlib.import_module(f"tunelab.families.{name}")


def family_of(name: str, origin: str) -> tuple[Family, str]:
    """(family module, stage) for a recipe name such as encoder.tag; `origin` locates it for an error."""
    family, stage = stage_of(name, origin)
    return family_module(family), stage


def split_report(recipe: Recipe, formats: tuple[str, ...]) -> dict:
    """data_report for the families that read their data through tunelab.data.loading."""
    from tunelab.data.loading import load_splits, train_sources
    from tunelab.data.readers import is_hub_data

    if any(is_hub_data(path) for path in train_sources(recipe.data)):
        return {"hub": True}
    return load_splits(recipe, formats).report
