"""Causal LM recipes for any decoder-only AutoModelForCausalLM: pretrain, sft (TRL SFTTrainer), dpo (TRL DPOTrainer),
distill (SFTTrainer with a teacher's term, tunelab.compression.distill).

The trainers do the work; this module loads the model (dtype, 4-bit quantization, tokenizer and chat template
fixes), chooses the trainers' arguments and hands them data in TRL's shapes. tunelab.training runs them.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from jinja2 import TemplateError
from trl import DPOConfig, DPOTrainer, SFTConfig

from tunelab import adapters, alignment, checkpoints, own_methods, precision, rewards, rundir
from tunelab.compression import distill, runs as compressed
from tunelab.config import GenerateConfig, ModelConfig, Recipe, trainer_args
from tunelab.data.chat import (ENDOFTEXT, IM_END, IM_START, TemplateNotUsable, check_replies, end_of_turn_ids,
                               render, set_chat_template)
from tunelab.data.loading import apply_length_limit, load_dataset, load_splits
from tunelab.errors import UserError
from tunelab.evaluation.causal_lm import evaluate, prompt_only
from tunelab.evaluation.generation import check_generate, generate as generate_replies, render_prompt
from tunelab.evaluation.perplexity import loss_tokens
from tunelab.families import Job, PredictRequest, split_report
from tunelab.trainers import SFTTrainerLabelPositions

FORMATS = {
    "pretrain": ("text",),
    "sft": ("messages", "alpaca", "sharegpt", "prompt_completion", "text"),
    "dpo": ("preference",),
    "distill": ("messages", "alpaca", "sharegpt", "prompt_completion", "text"),  # SFT's data, a teacher beside it
    **alignment.FORMATS,  # reward, grpo, rloo, kto, orpo, simpo
}
GENERATES = True
SCORES = ("reward",)  # stages whose runs score text (`tunelab predict`) instead of writing it
CHAT = True
# TRL defaults to bf16 and gradient checkpointing. tunelab picks bf16 by the machine and the model's size
# (train.bf16: auto, tunelab.precision), and checkpoints no activations: it recomputes the forward pass.
TRAIN_DEFAULTS = {"activation_checkpointing": False, "logging_steps": 5, "save_steps": 200}
# Pad to the longest in a batch of similar lengths: measured faster on the CPU than padding-free packing
# (README, "Speed"). Measured for SFT only, so DPO keeps the Trainer's default (random) order.
LENGTH_GROUPING = {"train_sampling_strategy": "group_by_length"}
SFT_LIKE = ("sft", "distill")  # stages that train on SFT's data with SFT's loss masks
_NO_LIMIT = 10**9



# ---------------------------------------------------------------- the model

def train_bpe_tokenizer(texts, vocab_size: int):
    """A byte-level BPE tokenizer in Qwen2's style (digits split one by one) with ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[ENDOFTEXT, IM_START, IM_END],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=IM_END, pad_token=ENDOFTEXT,
                                                additional_special_tokens=[IM_START, IM_END])


def load_tokenizer(model_cfg: ModelConfig, path: str):
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, trust_remote_code=model_cfg.trust_remote_code)
    return finish_tokenizer(tokenizer, model_cfg)


def finish_tokenizer(tokenizer, model_cfg: ModelConfig):
    tokenizer.tunelab_chat_template = set_chat_template(tokenizer, model_cfg.chat_template)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def scratch_model(model_cfg: ModelConfig, texts) -> tuple[torch.nn.Module, object]:
    """A freshly initialised model and a tokenizer trained on `texts`, from `model.scratch`."""
    spec = dict(model_cfg.scratch)
    model_type = spec.pop("model_type", None)
    if model_type is None:
        raise UserError("model.scratch needs model_type (e.g. qwen2)")
    tokenizer = finish_tokenizer(train_bpe_tokenizer(texts, spec.pop("vocab_size", 1024)), model_cfg)
    try:
        config = transformers.AutoConfig.for_model(
            model_type, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id, bos_token_id=None, **spec)
    except (ValueError, TypeError) as e:
        raise UserError(f"model.scratch: {e}") from None
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=model_cfg.attn_implementation)
    return model, tokenizer


def quantization_config(model_cfg: ModelConfig):
    if model_cfg.quantization is None:
        return None
    return transformers.BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=model_cfg.quantization,
        bnb_4bit_use_double_quant=model_cfg.double_quant, bnb_4bit_compute_dtype=torch.float32)


def load_model(model_cfg: ModelConfig):
    """(model, tokenizer) for a recipe's `model:` section; a run directory comes back merged."""
    if checkpoints.is_run_dir(model_cfg.name_or_path):
        return load_run(model_cfg.name_or_path, merge=True, quantization=model_cfg.quantization)
    path = checkpoints.model_path(model_cfg)
    checkpoints.check_kind(model_cfg, path, encoder_decoder=False)
    tokenizer = load_tokenizer(model_cfg, path)
    # Passed only when the recipe quantizes: an explicit None would override the one a quantized checkpoint's
    # config.json carries (`tunelab quantize`), and its packed weights would be read as float ones.
    quantized = {"quantization_config": quantization_config(model_cfg)} if model_cfg.quantization else {}
    model = transformers.AutoModelForCausalLM.from_pretrained(
        path, dtype=checkpoints.DTYPES[model_cfg.dtype], attn_implementation=model_cfg.attn_implementation,
        trust_remote_code=model_cfg.trust_remote_code, **quantized)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:  # ChatML tokens were added
        model.resize_token_embeddings(len(tokenizer))
    return model, tokenizer


def set_stop_tokens(model, tokenizer) -> None:
    """Put the template's end-of-turn token into the model's generation_config.eos_token_id, so that
    transformers' own generate() on the saved or merged model stops where a reply ends."""
    config = model.generation_config
    known = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
    config.eos_token_id = list(dict.fromkeys([*end_of_turn_ids(tokenizer), *(t for t in known if t is not None)]))
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id


def load_run(run_dir: str | Path, merge: bool = False, quantization: str | None = None):
    """(model, tokenizer) of a finished run: its full model, or its base with the adapter attached."""
    run_dir = Path(run_dir)
    recipe = checkpoints.run_recipe(run_dir)
    if recipe.recipe == "causal_lm.reward":
        return alignment.load_reward_run(run_dir, merge=merge)
    if (run_dir / "model").is_dir():
        model, tokenizer = load_model(ModelConfig(name_or_path=str(run_dir / "model"), quantization=quantization))
        return compressed.on_load(run_dir, model, merge), tokenizer
    if quantization and not recipe.model.quantization:
        raise UserError(f"{run_dir}: a 4-bit model cannot be made from a run with an unmerged adapter; "
                        f"run `tunelab merge {run_dir} OUT_DIR` and point model.name_or_path at OUT_DIR")
    base_cfg = base_config(recipe.model, **({"quantization": None} if merge else {}))
    base, _ = load_model(base_cfg)
    tokenizer = transformers.AutoTokenizer.from_pretrained(run_dir / "adapter")
    return checkpoints.attach_adapter(base, run_dir, recipe.adapter.method, merge), tokenizer


def base_config(model_cfg: ModelConfig, **changes) -> ModelConfig:
    """A finished run's base model section. A template named by a file (or by TRL's copy) is not read
    again: the run's saved tokenizer carries it, and the file may be gone or the run moved."""
    if model_cfg.chat_template not in (None, "chatml"):
        changes["chat_template"] = None
    return ModelConfig(**{**vars(model_cfg), **changes})


def base_model_of(run_dir: str | Path):
    """(model, tokenizer) the run started from, for --baseline comparisons, with the run's chat template."""
    recipe = checkpoints.run_recipe(run_dir)
    model, tokenizer = load_model(base_config(recipe.model))
    saved = Path(run_dir) / ("model" if (Path(run_dir) / "model").is_dir() else "adapter")
    tokenizer.chat_template = transformers.AutoTokenizer.from_pretrained(saved).chat_template
    return model, tokenizer


# ---------------------------------------------------------------- the data

def _record_length(tokenizer, row: dict) -> int:
    """Untruncated token count, so overlong records can be counted (or dropped) before TRL truncates them."""
    if "input_ids" in row:
        return len(row["input_ids"])
    if "rejected" in row:  # a preference pair is as long as its longer side
        return max(len(loss_tokens(tokenizer, {"prompt": row["prompt"], "chosen": row[k]}, _NO_LIMIT)[0])
                   for k in ("chosen", "rejected"))
    if prompt_only(row):  # a prompt to generate from (GRPO, RLOO)
        return len(tokenizer(render_prompt(tokenizer, row["prompt"]), add_special_tokens=False)["input_ids"])
    return len(loss_tokens(tokenizer, row, _NO_LIMIT)[0])


def _sft_loss_args(recipe: Recipe) -> dict:
    """Which tokens carry loss. Conversations come tokenized with their masks (tokenize_conversations);
    last_assistant turned messages into prompt/completion (data.formats), whose completion TRL trains."""
    if recipe.data.loss_on == "all":
        return {"completion_only_loss": False}
    return {}


def tokenize_conversations(ds, tokenizer, loss_on: str, where: list[str], model_name: str):
    """Add input_ids and assistant_masks to conversation records, with data.chat's masks (the same that
    evaluation scores). TRL's SFTTrainer builds its labels from a tokenized data set's assistant_masks; left
    to itself it would need a template TRL knows or one with {% generation %} markers. `where` names each
    record's file and line for an error."""
    if "messages" not in ds.column_names:
        return ds

    def tokenize(row, index):
        at = where[index]
        try:
            ids, mask = loss_tokens(tokenizer, row, _NO_LIMIT, loss_on)
        except TemplateError as e:
            raise UserError(f"{at}: the chat template of {model_name} cannot render this conversation: {e}") from None
        except TemplateNotUsable as e:
            raise UserError(f"{at}: model {model_name}: {e}") from None
        tools = [m["content"] for m in row["messages"] if m["role"] == "tool"]
        if tools and not all(t in render(tokenizer, row["messages"]) for t in tools):
            raise UserError(f"{at}: the chat template of {model_name} leaves tool messages out; use a template "
                            f"that renders role 'tool' (model.chat_template: chatml, or a .jinja file)")
        return {"input_ids": ids, "assistant_masks": mask}

    return ds.map(tokenize, with_indices=True)


def for_trainer(ds):
    """What the trainer gets: the tokens and masks of tokenized conversations, other records as they are."""
    return ds.select_columns(["input_ids", "assistant_masks"]) if "input_ids" in ds.column_names else ds


def resolve_bf16(recipe: Recipe) -> None:
    """Turn `train.bf16: auto` (also the default when the key is left out) into true or false in the recipe,
    noting why in recipe.decisions."""
    if recipe.train.get("bf16", "auto") != "auto":
        return
    recipe.train["bf16"], why = precision.choose_bf16(checkpoints.parameter_count(recipe.model))
    recipe.decisions["precision"] = {"bf16": recipe.train["bf16"], "why": why}


def check(recipe: Recipe, stage: str) -> None:
    adapters.check_method(recipe)
    check_generate(recipe.eval.generate)
    if stage in alignment.FORMATS:
        alignment.check(recipe, stage)
    if stage == "distill":
        _check_distill(recipe)
    if recipe.rewards and stage not in alignment.ONLINE:
        raise UserError(f"{recipe.origin('rewards')}: rewards are read by causal_lm.grpo and causal_lm.rloo only "
                        f"(this recipe is {recipe.recipe}); remove the key")


def _check_distill(recipe: Recipe) -> None:
    method = recipe.adapter.method
    if method in adapters.PROMPT_LEARNING or method == "adalora":
        why = ("its orthogonality penalty rides on the model's own loss, which distillation replaces"
               if method == "adalora" else "its virtual tokens shift the positions teacher and student are compared at")
        raise UserError(f"{recipe.origin('adapter.method')}: adapter.method={method} does not fit causal_lm.distill "
                        f"({why}); use full or lora")
    if not recipe.train.get("teacher_model_name_or_path"):
        raise UserError(f"{recipe.origin('train')}: causal_lm.distill needs train.teacher_model_name_or_path (a run "
                        f"directory, a checkpoint or an embedded default with the student's vocabulary)")
    reshaped = recipe.train.get("student_layers") is not None or recipe.train.get("student_init") == "fresh"
    if reshaped and method not in adapters.WHOLE_MODEL:
        key = "train.student_layers" if "train.student_layers" in recipe.origins else "train.student_init"
        raise UserError(f"{recipe.origin(key)}: a student cut or re-initialised from model.name_or_path is no longer "
                        f"that model, so an adapter could not be put back on it; use adapter.method=full")


def build_args(recipe: Recipe, stage: str, output_dir: Path):
    resolve_bf16(recipe)
    defaults = rundir.trainer_defaults(**TRAIN_DEFAULTS)
    if "gradient_checkpointing" in recipe.train:  # the deprecated name still works if a user writes it
        defaults.pop("activation_checkpointing")
    if stage in alignment.FORMATS:
        return alignment.build_args(recipe, stage, defaults, output_dir)
    if stage == "dpo":
        return trainer_args(DPOConfig, recipe, defaults, output_dir=str(output_dir),
                            max_length=recipe.data.max_length)
    return trainer_args(distill.DistillConfig if stage == "distill" else SFTConfig, recipe,
                        {**defaults, **LENGTH_GROUPING}, output_dir=str(output_dir), max_length=recipe.data.max_length,
                        **(_sft_loss_args(recipe) if stage in SFT_LIKE else {}))


def data_report(recipe: Recipe, stage: str) -> dict:
    return split_report(recipe, FORMATS[stage])


def model_and_data(recipe: Recipe, stage: str, seed: int):
    """(model, tokenizer, splits) for a run of this stage, overlong records counted (or dropped); `tunelab
    train` and `tunelab bench` both start here."""
    splits = load_splits(recipe, FORMATS[stage])
    # The Trainer seeds only in its own __init__, after a scratch model and TRL's PEFT wrapping have drawn
    # their initial weights: seed first, so the same recipe builds the same model.
    transformers.set_seed(seed)
    if recipe.model.scratch is not None:
        model, tokenizer = scratch_model(recipe.model, (r["text"] for r in splits.train))
    else:
        model, tokenizer = load_model(recipe.model)
    adapters.check_model_fits(recipe, model)
    if stage in SFT_LIKE and recipe.data.loss_on == "assistant" and "messages" in splits.train.column_names:
        check_replies(tokenizer, recipe.model.name_or_path)
    for name in ("train", "eval"):
        ds = getattr(splits, name)
        if stage in SFT_LIKE:
            ds = tokenize_conversations(ds, tokenizer, recipe.data.loss_on, splits.where[name],
                                        recipe.model.name_or_path)
        lengths = [_record_length(tokenizer, row) for row in ds]
        setattr(splits, name, apply_length_limit(ds, lengths, recipe.data, name, splits.report))
    return model, tokenizer, splits


def prepare(recipe: Recipe, stage: str, args) -> Job:
    if stage in alignment.FORMATS:
        return alignment.prepare(recipe, stage, args)
    model, tokenizer, splits = model_and_data(recipe, stage, args.seed)
    facts = {}
    trainer_kwargs = {"processing_class": tokenizer}
    if stage == "distill":
        model, trainer_kwargs["teacher_model"], facts["teacher"] = _student_and_teacher(recipe, args, model, tokenizer,
                                                                                        splits.eval.to_list())
    set_stop_tokens(model, tokenizer)
    precision_choice = recipe.decisions.get("precision", {"bf16": args.bf16, "why": "set by the recipe (train.bf16)"})
    # TRL wraps a PEFT method's model itself (with its own care for 4-bit bases and checkpointing).
    trainer_kwargs["peft_config"] = adapters.peft_config(recipe, "causal_lm", model)
    model = own_methods.apply(model, recipe)
    trainer_cls = {"dpo": DPOTrainer, "distill": distill.DistillationTrainer}.get(stage, SFTTrainerLabelPositions)
    return Job(model=model, train_dataset=for_trainer(splits.train), eval_dataset=for_trainer(splits.eval),
               evaluate=lambda trained, _: evaluate(trained, tokenizer, recipe, splits.eval.to_list()),
               auto_class="AutoModelForCausalLM", trainer_cls=trainer_cls, trainer_kwargs=trainer_kwargs,
               # The generation config goes with an adapter too, so that its end of turn is kept.
               processors=(tokenizer, model.generation_config), report=splits.report,
               metrics={"chat_template": getattr(tokenizer, "tunelab_chat_template", "own"),
                        "precision": precision_choice, **facts},
               collective_scores=alignment.preference_scores(splits.eval, stage) if stage == "dpo" else None)


def _student_and_teacher(recipe: Recipe, args, model, tokenizer, eval_rows: list[dict]):
    """(student, teacher, the teacher's facts for metrics.json): the student cut as train.student_layers and
    train.student_init say; the teacher loaded (a run merged), checked against it, and scored on the same eval
    records as the student will be, so that one run holds both rows of the comparison."""
    at = recipe.origin("train.teacher_model_name_or_path")
    student = distill.make_student(model, args.student_layers, args.student_init, recipe.model.attn_implementation,
                                   recipe.origin("train.student_layers"))
    name = args.teacher_model_name_or_path
    try:
        teacher, teacher_tokenizer = load_model(ModelConfig(name_or_path=name, dtype=recipe.model.dtype,
                                                            attn_implementation=recipe.model.attn_implementation))
    except UserError as e:  # the loader names the field it was given; here that field is the teacher's
        raise UserError(f"{at}: {str(e).replace('model.name_or_path', 'train.teacher_model_name_or_path')}") from None
    distill.check_teacher(teacher, teacher_tokenizer, student, tokenizer, name, at)
    facts = {"name_or_path": rundir.portable(name), "total_params": rundir.count_params(teacher)[1],
             "eval": {k: v for k, v in evaluate(teacher, teacher_tokenizer, recipe, eval_rows).items()
                      if k != "samples"}}
    return student, teacher, facts


# ---------------------------------------------------------------- finished runs

def evaluate_run(run_dir: Path, recipe: Recipe, stage: str, data: str | None, fmt: str | None,
                 baseline: bool) -> dict:
    """{"model": metrics, "baseline": metrics of the base model (with --baseline)} on the eval split or `data`."""
    if data:
        rows = load_dataset(data, recipe.data, fmt).to_list()
    else:
        rows = load_splits(recipe, FORMATS[stage]).eval.to_list()
    if stage in alignment.FORMATS:
        return alignment.evaluate_run(run_dir, recipe, stage, rows, baseline)
    model, tokenizer = load_run(run_dir)
    results = {"model": evaluate(model, tokenizer, recipe, rows)}
    if baseline:
        base, base_tokenizer = base_model_of(run_dir)
        results["baseline"] = evaluate(base, base_tokenizer, recipe, rows)
    return results


def generate(loaded: tuple, recipe: Recipe, prompts: list, settings: GenerateConfig, raw: bool) -> list[str]:
    """Replies to conversations (or continuations of raw text) under the run's chat template."""
    model, tokenizer = loaded
    return generate_replies(model, tokenizer, prompts, settings)


def predict(run_dir: Path, recipe: Recipe, stage: str, request: PredictRequest) -> list[dict]:
    """A reward model's score of each text, or of each prompt (--text) and reply (--text-pair) as a chat."""
    if stage != "reward":
        raise UserError(f"{run_dir}: a {recipe.recipe} run generates text; use `tunelab generate`")
    model, tokenizer = alignment.load_reward_run(run_dir)
    pairs = request.text_pairs or [None] * len(request.texts)
    inputs = [t if p is None else [{"role": "user", "content": t}, {"role": "assistant", "content": p}]
              for t, p in zip(request.texts, pairs)]
    return [{"text": t, **({"reply": p} if p is not None else {}), "score": round(s, 4)}
            for t, p, s in zip(request.texts, pairs, rewards.sequence_scores(model, tokenizer, inputs))]
