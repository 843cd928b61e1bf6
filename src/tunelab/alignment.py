"""The causal family's alignment stages beyond SFT and DPO, each handed to its TRL trainer:

| stage  | data                            | trainer (TRL 1.16)                        | reference model |
|--------|---------------------------------|-------------------------------------------|-----------------|
| reward | preference pairs                | RewardTrainer (Bradley-Terry)             | none            |
| grpo   | prompts (+ answers)             | GRPOTrainer (group-relative advantages)   | only if beta > 0 |
| rloo   | prompts (+ answers)             | RLOOTrainer (leave-one-out baseline)      | beta > 0 (0.05) |
| kto    | unpaired replies, good or bad   | KTOTrainer                                | the base        |
| orpo   | preference pairs                | trl.experimental ORPOTrainer              | none            |
| simpo  | preference pairs                | trl.experimental CPOTrainer, loss simpo   | none            |

With a PEFT adapter the reference model is the same weights with the adapter switched off. A reward model is a
sequence-classification head (one score) on the decoder: `sequence_classifier` builds it from the causal LM
tunelab loads (a run directory is merged first), so any base or SFT run can become one.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import transformers
from trl import maybe_apply_chat_template, maybe_extract_prompt
from trl import GRPOConfig, GRPOTrainer, KTOConfig, KTOTrainer, RewardConfig, RewardTrainer, RLOOConfig, RLOOTrainer

from tunelab import adapters, checkpoints, own_methods, rewards
from tunelab.config import Recipe, trainer_args
from tunelab.errors import UserError

# ORPO and CPO (SimPO) live in trl.experimental, whose import warns once per process that their API may change;
# tunelab's README says so where it lists the stages.
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
from trl.experimental.cpo import CPOConfig, CPOTrainer  # noqa: E402
from trl.experimental.orpo import ORPOConfig, ORPOTrainer  # noqa: E402

FORMATS = {"reward": ("preference",), "grpo": ("prompt",), "rloo": ("prompt",),
           "kto": ("unpaired_preference",), "orpo": ("preference",), "simpo": ("preference",)}
TRAINERS = {"reward": (RewardConfig, RewardTrainer), "grpo": (GRPOConfig, GRPOTrainer),
            "rloo": (RLOOConfig, RLOOTrainer), "kto": (KTOConfig, KTOTrainer), "orpo": (ORPOConfig, ORPOTrainer),
            "simpo": (CPOConfig, CPOTrainer)}
ONLINE = ("grpo", "rloo")  # they generate their own replies; the others read replies from the data
PREFERENCE_LOGS = ("dpo", "kto", "orpo", "simpo")  # trainers that log rewards/* and logps/* at evaluate()
# SimPO is CPO's simpo loss without CPO's NLL term (cpo_alpha 0): a length-normalised margin, no reference.
STAGE_DEFAULTS = {"simpo": {"loss_type": "simpo", "cpo_alpha": 0.0}}
# Virtual tokens shift every position TRL reads log-probs at; AdaLoRA's orthogonality penalty rides on a loss
# these trainers do not compute. The reward model trains a fresh score head, which tunelab's own methods do not.
REFUSED = (*adapters.PROMPT_LEARNING, "adalora")
REWARD_METHODS = (*adapters.LORA_LIKE, "full")


def check(recipe: Recipe, stage: str) -> None:
    method, at = recipe.adapter.method, recipe.origin("adapter.method")
    if stage == "reward" and method not in REWARD_METHODS:
        raise UserError(f"{at}: adapter.method={method} does not fit causal_lm.reward (its new score head must "
                        f"train whole beside the method); use {', '.join(REWARD_METHODS)}")
    if method in REFUSED:
        why = ("its orthogonality penalty rides on the model's own loss, which this trainer does not compute"
               if method == "adalora" else "its virtual tokens shift the positions this trainer reads log-probs at")
        fits = [m for m in (*adapters.PEFT_METHODS, *adapters.WHOLE_MODEL, *own_methods.OWN) if m not in REFUSED]
        raise UserError(f"{at}: adapter.method={method} does not fit causal_lm.{stage} ({why}); "
                        f"use {', '.join(fits)}")


def build_args(recipe: Recipe, stage: str, defaults: dict, output_dir: Path):
    config_cls, _ = TRAINERS[stage]
    fixed = {"output_dir": str(output_dir)}
    if stage not in ONLINE:
        fixed["max_length"] = recipe.data.max_length
    args = trainer_args(config_cls, recipe, {**defaults, **STAGE_DEFAULTS.get(stage, {})}, **fixed)
    if stage in (*ONLINE, "kto") and args.beta > 0 and recipe.adapter.method in adapters.WHOLE_MODEL \
            and checkpoints.is_run_dir(recipe.model.name_or_path):
        # TRL reloads the reference from the model's own path: the run's base, not the run.
        raise UserError(f"{recipe.origin('train.beta')}: full fine-tuning with beta > 0 reloads the reference "
                        f"model from its path; run `tunelab merge {recipe.model.name_or_path} OUT` and point "
                        f"model.name_or_path at OUT, or use adapter.method=lora")
    return args


def sequence_classifier(causal_lm, tokenizer):
    """A reward model: the causal LM's backbone (weights copied) under a fresh one-score head."""
    config = copy.deepcopy(causal_lm.config)
    config.num_labels, config.pad_token_id = 1, tokenizer.pad_token_id
    model = transformers.AutoModelForSequenceClassification.from_config(config)
    backbone = getattr(model, model.base_model_prefix)
    backbone.load_state_dict(getattr(causal_lm, causal_lm.base_model_prefix).state_dict())
    return model.to(causal_lm.dtype)


def load_reward_run(run_dir: Path, at: str = "", merge: bool = True):
    """(reward model, tokenizer) of a finished causal_lm.reward run, in eval mode."""
    from tunelab.families import causal_lm

    recipe = checkpoints.run_recipe(run_dir)
    if recipe.recipe != "causal_lm.reward":
        raise UserError(f"{at or run_dir}: {run_dir} is a {recipe.recipe} run, not a reward model "
                        f"(train one with recipes/qwen2/reward_lora.yaml)")
    tokenizer = transformers.AutoTokenizer.from_pretrained(run_dir / ("model" if (run_dir / "model").is_dir()
                                                                      else "adapter"))
    if (run_dir / "model").is_dir():
        model = transformers.AutoModelForSequenceClassification.from_pretrained(run_dir / "model")
    else:
        base, _ = causal_lm.load_model(causal_lm.base_config(recipe.model))
        model = checkpoints.attach_adapter(sequence_classifier(base, tokenizer), run_dir, recipe.adapter.method, merge)
    return model.eval(), tokenizer


def reward_funcs(recipe: Recipe) -> tuple[list, list]:
    return rewards.resolve(recipe, load_reward_run)


def reward_names(recipe: Recipe) -> list[str]:
    return [Path(e).name if Path(e).expanduser().is_dir() else e for e in recipe.rewards]


def reply_rewards(model, tokenizer, recipe: Recipe, rows: list[dict], funcs: list, processors: list) -> dict:
    """Greedy replies to the eval prompts, scored by each of the recipe's rewards (`reward` is their weighted sum,
    as training sums them) and, where records carry an answer, exact-answer accuracy."""
    from tunelab.evaluation.causal_lm import answer_accuracy
    from tunelab.evaluation.generation import generate

    rows = rows[:recipe.eval.max_samples]
    replies = generate(model, tokenizer, [r["prompt"] for r in rows], recipe.eval.generate, recipe.eval.batch_size)
    completions = [[{"role": "assistant", "content": t}] if isinstance(r["prompt"], list) else t
                   for r, t in zip(rows, replies)]
    out: dict = answer_accuracy(rows, replies) if "accuracy" in recipe.eval.metrics else {}
    if "reward" in recipe.eval.metrics:
        weights = recipe.train.get("reward_weights") or [1.0] * len(funcs)
        total = [0.0] * len(rows)
        for name, f, processor, w in zip(reward_names(recipe), funcs, processors, weights):
            if processor is not None:  # a reward model scores the whole conversation
                scores = rewards.sequence_scores(f, processor, [r["prompt"] + c for r, c in zip(rows, completions)])
            else:
                scores = f(prompts=[r["prompt"] for r in rows], completions=completions, completion_ids=None,
                           **{k: [r.get(k) for r in rows] for k in rows[0] if k != "prompt"})
            scored = [s for s in scores if s is not None]
            out[f"reward/{name}"] = sum(scored) / max(len(scored), 1)
            total = [t + w * (s or 0.0) for t, s in zip(total, scores)]
        out["reward"] = sum(total) / max(len(total), 1)
    return out


def prepare(recipe: Recipe, stage: str, args):
    """The Job of one run of an alignment stage (tunelab.families.Job)."""
    from tunelab.evaluation.causal_lm import evaluate
    from tunelab.families import Job, causal_lm

    model, tokenizer, splits = causal_lm.model_and_data(recipe, stage, args.seed)
    kwargs: dict = {"processing_class": tokenizer}
    eval_rows = splits.eval.to_list()
    if stage == "reward":
        model = sequence_classifier(model, tokenizer)
        kwargs["peft_config"] = adapters.peft_config(recipe, "classify", model)  # the score head trains whole
        scores = lambda trained, _: rewards.pair_scores(trained, tokenizer, eval_rows[:recipe.eval.max_samples])  # noqa: E731
    else:
        causal_lm.set_stop_tokens(model, tokenizer)
        kwargs["peft_config"] = adapters.peft_config(recipe, "causal_lm", model)
        model = own_methods.apply(model, recipe)
    if stage in ONLINE:
        funcs, processors = reward_funcs(recipe)
        rewards.probe(funcs, splits.train.to_list())
        kwargs.update(reward_funcs=funcs, reward_processing_classes=processors)
        scores = lambda trained, _: reply_rewards(trained, tokenizer, recipe, eval_rows, funcs, processors)  # noqa: E731
    elif stage != "reward":
        scores = lambda trained, _: evaluate(trained, tokenizer, recipe, good_replies(eval_rows))  # noqa: E731
    train = splits.train
    if stage == "kto":
        train = train.shuffle(seed=args.seed)  # KTOTrainer reads its batches in order: mix good and bad replies
    precision_choice = recipe.decisions.get("precision", {"bf16": args.bf16, "why": "set by the recipe (train.bf16)"})
    return Job(model=model, train_dataset=train, eval_dataset=splits.eval, evaluate=scores,
               auto_class="AutoModelForSequenceClassification" if stage == "reward" else "AutoModelForCausalLM",
               trainer_cls=TRAINERS[stage][1], trainer_kwargs=kwargs,
               processors=(tokenizer,) if stage == "reward" else (tokenizer, model.generation_config),
               report=splits.report, metrics={"chat_template": getattr(tokenizer, "tunelab_chat_template", "own"),
                                              "precision": precision_choice},
               collective_scores=preference_scores(splits.eval, stage) if stage in PREFERENCE_LOGS else None)


def preference_scores(eval_set, stage: str):
    """A preference trainer's (DPO, KTO, ORPO, SimPO) reward and log-probability metrics on the eval split (every
    rank takes part). ORPO's and CPO's evaluate() take only data prepared as their __init__ prepares it, with the
    same public steps."""
    def scores(trainer) -> dict:
        data = eval_set
        if stage in ("orpo", "simpo"):
            data = data.map(maybe_extract_prompt).map(maybe_apply_chat_template,
                                                      fn_kwargs={"processing_class": trainer.processing_class})
            data = data.map(trainer.tokenize_row)
        found = trainer.evaluate(data)
        return {k.removeprefix("eval_"): v for k, v in found.items()
                if any(word in k for word in ("rewards", "logps", "log_odds", "kl"))}
    return scores


def good_replies(rows: list[dict]) -> list[dict]:
    """The records whose reply is one to learn from: a KTO record labelled true, a pair's chosen side."""
    return [r for r in rows if r.get("label", True)]


def evaluate_run(run_dir: Path, recipe: Recipe, stage: str, rows: list[dict], baseline: bool) -> dict:
    """`tunelab eval` of an alignment run: the same scores training wrote, on `rows`."""
    from tunelab.evaluation.causal_lm import evaluate, prompt_only
    from tunelab.families import causal_lm

    if stage == "reward":
        if baseline:
            raise UserError(f"{run_dir}: a reward model's base has no reward head to compare with; drop --baseline")
        model, tokenizer = load_reward_run(run_dir)
        return {"model": rewards.pair_scores(model, tokenizer, rows[:recipe.eval.max_samples])}
    loaded = {"model": causal_lm.load_run(run_dir)}
    if baseline:
        loaded["baseline"] = causal_lm.base_model_of(run_dir)
    if stage in ONLINE and prompt_only(rows[0]):
        funcs, processors = reward_funcs(recipe)
        return {k: reply_rewards(m, t, recipe, rows, funcs, processors) for k, (m, t) in loaded.items()}
    return {k: evaluate(m, t, recipe, good_replies(rows)) for k, (m, t) in loaded.items()}
