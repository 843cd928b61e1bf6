"""The run directory: staged in `<dir>.partial` while training, renamed into place when complete.

A finished run holds recipe.yaml (resolved), adapter/ or model/ (with the tokenizer), metrics.json,
train_log.jsonl, loss.png, README.md (a model card) and checkpoint-*/ for resuming. A crash leaves only
`<dir>.partial`, which `--resume` continues; the final path never holds a half-written run.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from tunelab.errors import UserError


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def check_free(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber a run: decided before anything is written."""
    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other; pick one")
    if overwrite:
        return
    if resume:
        if out.exists() and not partial_path(out).exists():
            _refuse_resume(out)
        return
    if out.exists():
        raise UserError(f"{out}: run directory exists; pass --resume to continue it, --overwrite to replace it, "
                        f"or choose another --output-dir")
    if partial_path(out).exists():
        raise UserError(f"{partial_path(out)}: an interrupted run is there; pass --resume to continue it or "
                        f"--overwrite to start again")


def _refuse_resume(out: Path) -> None:
    """--resume continues `<dir>.partial`; a finished run (or any other directory) has nothing to continue,
    and is left exactly as it is."""
    if (out / "metrics.json").is_file():
        raise UserError(f"{out}: this run is complete (it has metrics.json), so there is nothing to resume; to train "
                        f"it further, start a new run from it (model.name_or_path={out} and another --output-dir), "
                        f"or pass --overwrite instead of --resume to train it again from the start")
    raise UserError(f"{out}: not an interrupted run (there is no {partial_path(out).name}), so there is nothing to "
                    f"resume; pass --overwrite instead of --resume to replace it, or choose another --output-dir")


def stage(out: Path, resume: bool, overwrite: bool, is_main: bool) -> Path:
    """Create (rank 0 only) and return the staging directory the trainer writes into."""
    staging = partial_path(out)
    if not is_main:
        return staging
    if overwrite:
        shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True, exist_ok=True)
    return staging


def last_checkpoint(staging: Path) -> str | None:
    """The newest complete checkpoint: a crash during a save leaves one without trainer_state.json (the
    Trainer writes it last), or with that file cut short. transformers' get_last_checkpoint only checks
    that the folder exists, so it would pick that broken one."""
    checkpoints = sorted((p for p in staging.glob("checkpoint-*") if _complete(p / "trainer_state.json")),
                         key=lambda p: int(p.name.rsplit("-", 1)[1]))
    return str(checkpoints[-1]) if checkpoints else None


def _complete(state: Path) -> bool:
    try:
        json.loads(state.read_text(encoding="utf-8"))
        return True
    except (OSError, ValueError):
        return False


def finalize(staging: Path, out: Path) -> None:
    if out.exists():  # only with --overwrite
        shutil.rmtree(out)
    staging.rename(out)


def write_json(path: Path, data: dict) -> None:
    """Write through a temporary file and rename, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=float) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_metrics(run_dir: Path) -> dict:
    path = Path(run_dir) / "metrics.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def peak_memory_mb() -> dict:
    """Peak resident set of this process (ru_maxrss is in KiB on Linux) and, on CUDA, peak allocated."""
    out = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if torch.cuda.is_available():
        out["peak_cuda_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out["peak_cuda_reserved_mb"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
    return out


class TrainLogCallback(TrainerCallback):
    """Append every trainer log (loss, learning rate, eval loss...) to train_log.jsonl on rank 0."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs}) + "\n")


class RankReportCallback(TrainerCallback):
    """Every rank says what it trained, so a distributed run shows that all ranks took part."""

    def on_train_end(self, args, state, control, **kwargs):
        losses = [e["loss"] for e in state.log_history if "loss" in e]
        last = f"{losses[-1]:.4f}" if losses else "n/a"
        print(f"tunelab: rank {args.process_index}/{args.world_size} trained {state.global_step} steps, "
              f"last logged loss {last}", file=sys.stderr, flush=True)


def plot_losses(log_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.is_file() else []
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, label in (("loss", "train loss"), ("eval_loss", "eval loss")):
        points = [(e["step"], e[key]) for e in entries if key in e]
        if points:
            ax.plot(*zip(*points), marker="." if key == "eval_loss" else None, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if ax.lines:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


def model_card(recipe_dict: dict, metrics: dict, auto_class: str) -> str:
    from tunelab.adapters import WHOLE_MODEL
    from tunelab.own_methods import OWN

    method = recipe_dict["adapter"]["method"]
    saved = "model/" if method in WHOLE_MODEL else "adapter/"
    rows = "\n".join(f"| {k} | {v:.4g} |" for k, v in metrics.get("eval", {}).items() if isinstance(v, (int, float)))
    peft_class = "AutoPeft" + auto_class.removeprefix("Auto")
    load = (f"from transformers import {auto_class}\nmodel = {auto_class}.from_pretrained('model')"
            if method in WHOLE_MODEL else
            f"# tunelab's own {method}: adapter/ holds only what trained; tunelab eval, generate and merge load it"
            if method in OWN else f"from peft import {peft_class}\nmodel = {peft_class}.from_pretrained('adapter')")
    return (f"# {recipe_dict['recipe']} run\n\n{recipe_dict.get('description', '')}\n\n"
            f"- base model: `{recipe_dict['model']['name_or_path']}`\n- method: {method}\n"
            f"- train data: `{recipe_dict['data']['train']}` ({recipe_dict['data']['format']})\n"
            f"- trainable parameters: {metrics.get('trainable_params', 0):,} of {metrics.get('total_params', 0):,}\n"
            f"- saved in `{saved}`; the resolved recipe is `recipe.yaml`\n\n"
            f"| eval metric | value |\n|---|---|\n{rows}\n\n```python\n{load}\n```\n")


def weights_mb(directory: Path) -> float:
    """Size on disk of the weights a run saved (safetensors and bin files), in MB."""
    files = [*directory.glob("*.safetensors"), *directory.glob("*.bin")]
    return round(sum(f.stat().st_size for f in files) / 2**20, 3)


def trainer_defaults(**family: object) -> dict:
    """tunelab's defaults for every trainer's argument class (a recipe's train: section overrides any),
    plus a recipe family's own. Without CUDA, use_cpu makes ranks started by `accelerate launch` join
    one gloo process group; otherwise each CPU process would train alone and race on the run directory."""
    return {"report_to": "none", "save_strategy": "steps", "save_total_limit": 2, "seed": 0, "disable_tqdm": True,
            "include_num_input_tokens_seen": "non_padding", "use_cpu": not torch.cuda.is_available(), **family}


def count_params(model) -> tuple[int, int]:
    """(trainable, total). peft counts 4-bit weights at their real size."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    return (sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters()))


def train_metrics(trainer, result) -> dict:
    """Loss, steps, time and throughput of a finished Trainer run, from its own state."""
    state = trainer.state
    losses = [e["loss"] for e in state.log_history if "loss" in e]
    runtime = result.metrics.get("train_runtime", 0.0)
    tokens = state.num_input_tokens_seen
    return {
        "final_loss": losses[-1] if losses else result.training_loss,
        "first_loss": losses[0] if losses else None,
        "mean_loss": result.training_loss,
        "steps": state.global_step,
        "runtime_s": round(runtime, 2),
        "non_padding_tokens": tokens,
        "tokens_per_second": round(tokens / runtime, 1) if runtime and tokens else None,
        "device": str(next(trainer.model.parameters()).device) + (f" x{torch.cuda.device_count()}"
                                                                  if torch.cuda.is_available() else ""),
    }


def run_metrics(recipe, trainer, result, scores: dict, report: dict, started: float, **extra) -> dict:
    """metrics.json of a finished run: the same keys in every recipe family (`tunelab compare` reads them)."""
    trainable, total = count_params(trainer.model)
    return {"recipe": recipe.recipe, "method": recipe.adapter.method, "world_size": trainer.args.world_size, **extra,
            "trainable_params": trainable, "total_params": total, "train": train_metrics(trainer, result),
            "eval": scores, "data": report, **peak_memory_mb(), "wall_time_s": round(time.time() - started, 1)}


def portable(name_or_path: str) -> str:
    """Local paths become absolute, so the run still finds its base from any working directory; an
    embedded default is pinned to the build it started from (models.pinned)."""
    from tunelab.checkpoints import pinned

    path = Path(name_or_path)
    return str(path.resolve()) if path.exists() else pinned(name_or_path)


def write_run(staging: Path, out: Path, recipe_dict: dict, metrics: dict, auto_class: str) -> None:
    """The files every run has besides its weights, then the rename that makes the run visible."""
    from tunelab.config import dump_yaml

    recipe_dict["model"]["name_or_path"] = portable(recipe_dict["model"]["name_or_path"])
    (staging / "recipe.yaml").write_text(dump_yaml(recipe_dict), encoding="utf-8")
    write_json(staging / "metrics.json", metrics)
    plot_losses(staging / "train_log.jsonl", staging / "loss.png")
    (staging / "README.md").write_text(model_card(recipe_dict, metrics, auto_class), encoding="utf-8")
    finalize(staging, out)
