"""`tunelab bench`'s processes, one per variant: each builds a trainer for the recipe with its variant's
overrides (tunelab's own, as `tunelab train` builds it, or a plain TRL SFTTrainer), trains it in segments that
the parent process releases one at a time, in turn, measures every step, then scores the eval split.

A process of its own gives each variant its own peak memory: ru_maxrss lasts a process's lifetime and
CUDA's peak counters cover every model a process holds, so variants sharing a process could not be told apart.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import datasets
import torch
import transformers
from transformers import PrinterCallback, TrainerCallback
from transformers.pytorch_utils import Conv1D
from transformers.trainer_callback import ProgressCallback
from trl import SFTConfig, SFTTrainer

from tunelab import adapters, method_hooks, own_methods, rundir
from tunelab.config import load_recipe
from tunelab.errors import UserError
from tunelab.evaluation.perplexity import perplexity
from tunelab.families import causal_lm
from tunelab.trainers import SFTTrainerLabelPositions

# What every row trains with besides its variant: a fixed number of steps, the loss of every step, and
# nothing else done during the timed steps (no saving, no evaluation). The Trainer counts the non-padding
# tokens (the attention mask, or non-pad ids of padding-free batches) as it does for `tunelab train`.
HARNESS = {"logging_steps": 1, "save_strategy": "no", "eval_strategy": "no", "report_to": "none",
           "disable_tqdm": True, "include_num_input_tokens_seen": "non_padding"}

# Who builds a row's trainer. TUNELAB: the recipe's arguments (tunelab's defaults, train.bf16 resolved) and
# the SFTTrainer subclass `tunelab train` runs. TRL_DEFAULT: a bare SFTConfig, plain SFTTrainer.
# TRL_SAME_HPARAMS: plain SFTTrainer, SFTConfig's defaults except the recipe's SAME_HPARAMS.
TUNELAB, TRL_DEFAULT, TRL_SAME_HPARAMS = "tunelab", "trl-default", "trl-same-hparams"
# The recipe's optimisation problem: its learning rate over time (rate, schedule, warm-up), tokens per optimizer
# step, and seed (the adapter's initial weights and the data order's randomness): with TRL's own schedule and
# seed, a 20-step row's eval loss differed from tunelab's by more than the speed mechanics could explain. Which
# tokens carry loss comes with the data (tunelab's assistant_masks, which TRL folds into its labels whatever the
# config says), and completion_only_loss, which tunelab sets only for data.loss_on=all.
SAME_HPARAMS = ("learning_rate", "lr_scheduler_type", "warmup_steps", "seed", "per_device_train_batch_size",
                "gradient_accumulation_steps", "max_length", "completion_only_loss")


def flops_per_token(model) -> dict:
    """Nominal training FLOPs per token (the MFU convention), from the model's matmul weights.

    N counts every weight a token is multiplied by: nn.Linear (and GPT-2's Conv1D) weights, the LM head
    and adapter matrices included, the embedding lookup left out; a 4-bit layer at its logical size
    (in_features x out_features). A token costs 2N FLOPs forward and 2N backward for the gradients of the
    activations; the weight gradients, another 2 per weight, only where a weight trains. So full fine-tuning
    is 6N and a frozen base with an adapter 4N + 2 N_trainable. Attention's scores (sequence-squared), norms
    and activations, and any recomputation by activation checkpointing, are left out.
    """
    matmul = trainable = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            size = module.in_features * module.out_features
        elif isinstance(module, Conv1D):
            size = module.weight.numel()
        else:
            continue
        matmul += size
        trainable += size if module.weight.requires_grad else 0
    return {"matmul_params": matmul, "trainable_matmul_params": trainable,
            "flops_per_token": 4 * matmul + 2 * trainable}


# ---------------------------------------------------------------- the parent's side

def run_interleaved(recipe_path: str, jobs: dict[str, tuple[list[str], str]], max_steps: int,
                    pause_after: list[int], eval_samples: int, scratch: str) -> tuple[dict, dict]:
    """Start one process per job, {name: (overrides, who builds its trainer: TUNELAB, TRL_DEFAULT or
    TRL_SAME_HPARAMS)}, which build at once; then release them one segment at a time, in turn; each scores
    the first `eval_samples` eval records after its last segment. ({name: measurements}, {name: why it failed})."""
    context = _process_context(torch.cuda.is_available())
    workers, child_ends = {}, []
    for name, (overrides, kind) in jobs.items():
        parent_end, child_end = context.Pipe()
        process = context.Process(target=_child, daemon=True, args=(
            child_end, recipe_path, overrides, kind, max_steps, pause_after, eval_samples, str(Path(scratch) / name)))
        workers[name] = (process, parent_end)
        child_ends.append(child_end)
    _start_on_one_gpu([process for process, _ in workers.values()])
    for child_end in child_ends:
        child_end.close()  # each child holds its own copy; with ours closed, a dead child reads as EOF
    results, failed = {}, {}
    for name, (process, conn) in list(workers.items()):
        kind, payload = _turn(process, conn, go=False)  # "ready" once built
        if kind == "user_error":  # a recipe mistake only the loaded model shows: every variant would hit it
            for other, _ in workers.values():
                other.terminate()
            raise UserError(payload)
        if kind == "failed":
            failed[name] = payload
            del workers[name]
    rounds = len(pause_after) + 1
    for round_number in range(1, rounds + 1):
        print(f"tunelab bench: round {round_number} of {rounds}", file=sys.stderr, flush=True)
        for name, (process, conn) in list(workers.items()):
            kind, payload = _turn(process, conn, go=True)
            if kind == "paused":
                continue
            (results if kind == "done" else failed)[name] = payload
            process.join()
            del workers[name]
    return results, failed


def _process_context(cuda: bool):
    """Without CUDA, fork every variant from one server process that has imported the stack: each would
    otherwise spend seconds importing torch, transformers and TRL anew. With CUDA, spawn: bitsandbytes
    initialises CUDA on import, and a forked child cannot use CUDA that its parent initialised."""
    if cuda:
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def _turn(process, conn, go: bool) -> tuple[str, object]:
    """Let a worker train its next segment (go) or just hear from it; its message back."""
    try:
        if go:
            conn.send("go")
        return conn.recv()
    except (EOFError, OSError):
        process.join(5)
        return "failed", f"its process ended without a report (exit code {process.exitcode})"


def _start_on_one_gpu(processes) -> None:
    """Start the processes with one GPU visible: with several, the Trainer would wrap the model in
    nn.DataParallel, which SFTTrainer refuses. The variable is read when a child first touches CUDA."""
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = (before or "0").split(",")[0]
    try:
        for process in processes:
            process.start()
    finally:
        if before is None:
            del os.environ["CUDA_VISIBLE_DEVICES"]
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = before


# ---------------------------------------------------------------- a variant's process

def _child(conn, recipe_path: str, overrides: list[str], kind: str, max_steps: int, pause_after: list[int],
           eval_samples: int, output_dir: str) -> None:
    """A variant's process. Messages to the parent: ("ready", None) once built, ("paused", step) at the end of
    each segment, then ("done", measurements); or ("user_error" | "failed", message) at any point."""
    warnings.simplefilter("ignore")  # the stack's deprecation notes, once per variant, would bury the table
    try:
        datasets.disable_progress_bars()
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        trainer, recipe, eval_rows = _build_trainer(recipe_path, overrides, kind, max_steps, eval_samples, output_dir)
        meter = _StepMeter(conn, set(pause_after))
        trainer.add_callback(meter)
        trainer.data_collator = _PaddingCounter(trainer.data_collator, trainer.processing_class.pad_token_id)
        for printer in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(printer)  # logging every step would print every step
        conn.send(("ready", None))
        conn.recv()
        measured = _train_and_measure(trainer, meter)
        conn.send(("done", {**measured, **_eval_loss(trainer, recipe, eval_rows)}))
    except UserError as e:
        conn.send(("user_error", str(e)))
    except Exception as e:  # the parent reports it as this variant's failure and goes on with the others
        conn.send(("failed", f"{type(e).__name__}: {e}".splitlines()[0]))


def _build_trainer(recipe_path: str, overrides: list[str], kind: str, max_steps: int, eval_samples: int,
                   output_dir: str):
    """(trainer, recipe, the eval records every row scores). The model, adapter and data are the recipe's, as
    `tunelab train` builds them (recipes/causal_lm.py); the trainer and its arguments depend on `kind`."""
    recipe = load_recipe(recipe_path, [*overrides, *(f"train.{k}={v}" for k, v in HARNESS.items()),
                                       f"train.max_steps={max_steps}"])
    adapters.check_method(recipe)
    # use_cpu is the one addition a CPU needs in a bare SFTConfig: its default bf16 is refused without it.
    bare = {"output_dir": output_dir, "max_steps": max_steps, "use_cpu": not torch.cuda.is_available(), **HARNESS}
    if kind == TRL_DEFAULT:
        args = SFTConfig(**bare)
    else:
        args = causal_lm.build_args(recipe, "sft", output_dir)  # train.bf16: auto resolved as `tunelab train` does
        if kind == TRL_SAME_HPARAMS:
            args = SFTConfig(**bare, **{key: getattr(args, key) for key in SAME_HPARAMS})
    model, tokenizer, splits = causal_lm.model_and_data(recipe, "sft", args.seed)
    trainer_cls = SFTTrainerLabelPositions if kind == TUNELAB else SFTTrainer
    if kind == TUNELAB:
        causal_lm.set_stop_tokens(model, tokenizer)
    peft_config = adapters.peft_config(recipe, "causal_lm", model)
    trainer = trainer_cls(model=own_methods.apply(model, recipe), args=args,
                          train_dataset=causal_lm.for_trainer(splits.train), processing_class=tokenizer,
                          peft_config=peft_config, callbacks=method_hooks.callbacks(recipe),
                          **method_hooks.trainer_kwargs(recipe, args))
    eval_rows = splits.eval.select(range(min(eval_samples, len(splits.eval)))).to_list()
    return trainer, recipe, eval_rows


def _train_and_measure(trainer, meter: _StepMeter) -> dict:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    timed = meter.step_seconds[1:]  # the first step also builds the optimizer and warms the kernels up
    tokens = meter.tokens_seen[-1] - meter.tokens_seen[0]
    step_tokens = [after - before for before, after in zip(meter.tokens_seen, meter.tokens_seen[1:])]
    # the last segment's mean: one step's loss swings with the batch it drew
    last_pause = max(meter.pause_after, default=1)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e and e["step"] > last_pause]
    trainable, total = rundir.count_params(trainer.model)
    args = trainer.args
    settings = {"trainer": type(trainer).__name__, "batch_size": args.per_device_train_batch_size,
                "gradient_accumulation_steps": args.gradient_accumulation_steps,
                "learning_rate": args.learning_rate,
                "lr_scheduler_type": getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type),
                "warmup_steps": args.warmup_steps, "seed": args.seed,
                "bf16": args.bf16, "activation_checkpointing": args.activation_checkpointing,
                "train_sampling_strategy": args.train_sampling_strategy, "packing": args.packing,
                "padding_free": trainer.padding_free, "max_length": args.max_length,
                "assistant_only_loss": args.assistant_only_loss}
    tokens_per_second = statistics.median(n / t for n, t in zip(step_tokens, timed))
    flops = flops_per_token(trainer.accelerator.unwrap_model(trainer.model))
    return {
        # Medians shrug off a burst of other work on a shared machine, which a mean takes in whole (two rows
        # with the same settings came out 3.5x and 3.1x the baseline by medians, 15x and 4.8x by means).
        "tokens_per_second": tokens_per_second,
        "step_time_ms": 1000 * statistics.median(timed),
        "tokens_per_second_mean": tokens / sum(timed),
        "step_time_ms_mean": 1000 * sum(timed) / len(timed),
        "achieved_gflops": tokens_per_second * flops["flops_per_token"] / 1e9,
        **flops,
        "padding_fraction": trainer.data_collator.padding_fraction(),
        "final_loss": sum(losses) / len(losses),
        "attention": trainer.model.config._attn_implementation,
        "trainable_params": trainable, "total_params": total,
        "step_times_ms": [round(1000 * t, 1) for t in timed], "non_padding_tokens": tokens, "settings": settings,
        **rundir.peak_memory_mb(),
    }


def _eval_loss(trainer, recipe, rows: list[dict]) -> dict:
    """{'eval_loss', 'eval_tokens'}: tunelab's perplexity (the same loss tokens as training and `tunelab eval`)
    on the given eval records after training, model in eval mode, without the bf16 autocast of training."""
    model = trainer.model
    device_type = next(model.parameters()).device.type
    with torch.autocast(device_type, enabled=False):
        scores = perplexity(model, trainer.processing_class, rows, recipe.data.max_length, recipe.eval.batch_size,
                            recipe.data.loss_on)
    return {"eval_loss": scores["eval_loss"], "eval_tokens": scores["eval_tokens"]}


class _StepMeter(TrainerCallback):
    """Times each optimizer step from the end of the previous one (so batch fetching and collation count, a
    pause does not) and pauses after the steps in `pause_after` until the parent says go."""

    def __init__(self, conn, pause_after: set[int]):
        self.conn, self.pause_after = conn, pause_after
        self.step_seconds: list[float] = []
        self.tokens_seen: list[int] = []  # the Trainer's non-padding count after each step
        self.last = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.last = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # kernels are queued asynchronously: wait for the step really to finish
        self.step_seconds.append(time.perf_counter() - self.last)
        self.tokens_seen.append(state.num_input_tokens_seen)
        if state.global_step in self.pause_after:
            self.conn.send(("paused", state.global_step))
            self.conn.recv()
        self.last = time.perf_counter()


class _PaddingCounter:
    """Wraps the trainer's data collator to count padded and real positions in every batch it makes."""

    def __init__(self, collator, pad_token_id: int):
        self.collator, self.pad_token_id = collator, pad_token_id
        self.real = self.positions = 0

    def __call__(self, examples):
        batch = self.collator(examples)
        ids = batch["input_ids"]
        mask = batch.get("attention_mask")
        # padding-free batches carry no mask; the Trainer counts their non-pad ids the same way
        self.real += int(mask.sum()) if mask is not None else int((ids != self.pad_token_id).sum())
        self.positions += ids.numel()
        return batch

    def padding_fraction(self) -> float:
        return 1 - self.real / self.positions if self.positions else 0.0
