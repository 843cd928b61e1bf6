"""Seq2seq recipes for T5-class encoder-decoders (AutoModelForSeq2SeqLM):
- pretrain: T5's span corruption (tunelab.data.span_corruption) on plain text, from scratch with
  `model.scratch` (a tokenizer with T5's sentinels is trained too) or continued from a checkpoint;
- text2text: input text -> output text with a task prefix (summarize: ...), under Seq2SeqTrainer;
  `data.mix` adds more tasks with their own prefixes to the same run, as T5 trains several tasks at once.

Evaluation generates in batches (greedy or beam search, eval.generate) and scores ROUGE
(tunelab.evaluation.rouge: offline, English and Chinese).
"""

from __future__ import annotations

import string
from pathlib import Path

import datasets
import torch
import transformers
from transformers import (AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq, Seq2SeqTrainer,
                          Seq2SeqTrainingArguments, Trainer, TrainingArguments)

from tunelab import adapters, checkpoints, rundir
from tunelab.config import DataConfig, GenerateConfig, ModelConfig, Recipe, build_section, check_keys, trainer_args
from tunelab.data.loading import apply_length_limit, load_dataset, load_splits
from tunelab.data.span_corruption import SpanCorruptionCollator
from tunelab.errors import UserError
from tunelab.evaluation.generation import check_generate
from tunelab.families import Job, PredictRequest, split_report

FORMATS = {"pretrain": ("text",), "text2text": ("text2text",)}
GENERATES = True
CHAT = False
TRAIN_DEFAULTS = {"logging_steps": 10, "save_steps": 500}
MIX_KEYS = ["train", "eval", "prefix", "source_field", "target_field"]
SENTINELS = 100  # <extra_id_0> ... <extra_id_99>, as T5's own vocabularies have


def check(recipe: Recipe, stage: str) -> None:
    adapters.check_method(recipe)
    check_generate(recipe.eval.generate)


def data_report(recipe: Recipe, stage: str) -> dict:
    return split_report(recipe, FORMATS[stage])


def build_args(recipe: Recipe, stage: str, output_dir: Path):
    args_cls = Seq2SeqTrainingArguments if stage == "text2text" else TrainingArguments
    return trainer_args(args_cls, recipe, rundir.trainer_defaults(**TRAIN_DEFAULTS), output_dir=str(output_dir))


def train_t5_tokenizer(texts, vocab_size: int):
    """A SentencePiece-style tokenizer (words marked by a leading ▁, BPE pieces) with T5's special tokens:
    <pad> 0 (also the decoder start), </s> (appended to every input), <unk>, and the sentinels.
    Chinese characters are split apart first, as BERT's tokenizer does, so the vocabulary is not spent on
    whole Chinese phrases; BPE rather than T5's Unigram, because tokenizers' Unigram trainer gave poor
    English pieces on this small corpus ("from" as four letters)."""
    from tokenizers import Regex, Tokenizer, decoders, models as tok_models, normalizers, pre_tokenizers, processors, trainers

    sentinels = [f"<extra_id_{i}>" for i in range(SENTINELS)]
    tok = Tokenizer(tok_models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r"[\u3400-\u9fff]"), behavior="isolated"),
                                                 pre_tokenizers.Metaspace(prepend_scheme="first")])
    tok.decoder = decoders.Metaspace(prepend_scheme="first")
    # Every printable ASCII character and common Chinese punctuation get a piece even if the training text
    # lacks them, so a user's "%" or "?" is not <unk> (the built-in text has neither).
    alphabet = [c for c in string.printable if not c.isspace()] + list("，。；！？、（）“”《》")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>", *sentinels],
                                  initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(texts, trainer)
    eos = ("</s>", tok.token_to_id("</s>"))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>", special_tokens=[eos])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                                unk_token="<unk>", additional_special_tokens=sentinels)


def scratch_model(model_cfg: ModelConfig, texts):
    spec = dict(model_cfg.scratch)
    if spec.pop("model_type", "t5") != "t5":
        raise UserError("model.scratch: the seq2seq recipes build model_type t5")
    tokenizer = train_t5_tokenizer(texts, spec.pop("vocab_size", 2000))
    try:
        config = transformers.T5Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                       eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id,
                                       **spec)
    except (ValueError, TypeError) as e:
        raise UserError(f"model.scratch: {e}") from None
    return AutoModelForSeq2SeqLM.from_config(config), tokenizer


def load_model(model_cfg: ModelConfig):
    """(model, tokenizer) for a recipe's `model:`; a run directory comes back with its LoRA merged."""
    if checkpoints.is_family_run(model_cfg.name_or_path, "seq2seq", "a seq2seq run"):
        return load_run(model_cfg.name_or_path, merge=True)
    path = checkpoints.resolve(model_cfg.name_or_path)
    checkpoints.check_kind(model_cfg, path, encoder_decoder=True)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=model_cfg.trust_remote_code)
    model = AutoModelForSeq2SeqLM.from_pretrained(path, dtype=checkpoints.DTYPES[model_cfg.dtype],
                                                  trust_remote_code=model_cfg.trust_remote_code)
    return model, tokenizer


def task_data(recipe: Recipe) -> list[tuple[DataConfig, str]]:
    """The main task's data section and each `data.mix` task's, with the name its scores are filed under
    (its prefix without the colon). A mix task shares the main task's lengths and format, nothing else."""
    tasks = [(recipe.data, _task_name(recipe.data.prefix, "main"))]
    shared = {k: getattr(recipe.data, k) for k in ("format", "max_length", "max_target_length", "overlong",
                                                   "eval_fraction", "seed")}
    for i, extra in enumerate(recipe.data.mix):
        section = f"data.mix[{i}]"
        check_keys(extra, MIX_KEYS, section, recipe)
        if "train" not in extra:
            raise UserError(f"{recipe.origin(section)}: {section} needs 'train' (and usually 'eval' and 'prefix')")
        d = build_section(DataConfig, {**shared, **extra}, section, recipe)
        name = _task_name(d.prefix, f"task{i + 1}")
        if name in [n for _, n in tasks]:
            raise UserError(f"{recipe.origin(section)}: {section} has the same prefix as another task "
                            f"({d.prefix!r}); give each task its own prefix so the model can tell them apart")
        tasks.append((d, name))
    return tasks


def _task_name(prefix: str, default: str) -> str:
    return prefix.strip().rstrip(":").strip() or default


def load_tasks(recipe: Recipe, stage: str):
    """(train Dataset of all tasks with prefixes applied, {task name: eval Dataset}, data report)."""
    if stage == "pretrain":
        splits = load_splits(recipe, FORMATS[stage])
        return splits.train, {"main": splits.eval}, splits.report
    trains, evals, report = [], {}, {}
    for d, name in task_data(recipe):
        sub = Recipe(**{**vars(recipe), "data": d})
        splits = load_splits(sub, FORMATS[stage])
        prefixed = [s.map(lambda r, p=d.prefix: {"source": p + r["source"]}) for s in (splits.train, splits.eval)]
        trains.append(prefixed[0])
        evals[name] = prefixed[1]
        report.update({f"{name}_{k}": v for k, v in splits.report.items()} if len(recipe.data.mix) else splits.report)
    return datasets.concatenate_datasets(trains), evals, report


def _tokenize_text2text(ds, tokenizer, d: DataConfig, split: str, report: dict):
    """Sources cut to data.max_length (or dropped, data.overlong), targets to data.max_target_length; both
    counts reported. Targets become `labels`; the collator pads them with -100, which the loss skips."""
    source_lengths = [len(ids) for ids in tokenizer(list(ds["source"]))["input_ids"]]
    ds = apply_length_limit(ds, source_lengths, d, split, report)
    target_lengths = [len(ids) for ids in tokenizer(text_target=list(ds["target"]))["input_ids"]]
    over = sum(n > d.max_target_length for n in target_lengths)
    report[f"{split}_target_truncated"] = over
    if over:
        print(f"tunelab: {over} of {len(ds)} {split} targets are longer than data.max_target_length="
              f"{d.max_target_length} tokens: truncated")

    def encode(batch):
        enc = tokenizer(batch["source"], truncation=True, max_length=d.max_length)
        enc["labels"] = tokenizer(text_target=batch["target"], truncation=True, max_length=d.max_target_length)["input_ids"]
        return enc

    return ds.map(encode, batched=True, remove_columns=ds.column_names)


def _tokenize_text(ds, tokenizer, d: DataConfig):
    """Plain text for span corruption: token ids without EOS (the collator adds it), cut to fit."""
    ids = tokenizer(list(ds["text"]), add_special_tokens=False, truncation=True, max_length=d.max_length - 1)["input_ids"]
    return datasets.Dataset.from_dict({"input_ids": [x for x in ids if x]})


@torch.no_grad()
def denoising_loss(model, tokenizer, ds, d: DataConfig, batch_size: int) -> float:
    """Mean token loss of reconstructing corrupted spans of held-out text (a fixed corruption, seed 1)."""
    collator = SpanCorruptionCollator(tokenizer, max_length=d.max_length, seed=1)
    ids = _tokenize_text(ds, tokenizer, d)["input_ids"]
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(ids), batch_size):
        batch = collator([{"input_ids": x} for x in ids[start:start + batch_size]])
        batch = {k: v.to(next(model.parameters()).device) for k, v in batch.items()}
        n = int((batch["labels"] != -100).sum())
        total += float(model(**batch).loss) * n
        count += n
    return total / count


def prepare(recipe: Recipe, stage: str, args) -> Job:
    from tunelab.evaluation.seq2seq import evaluate

    train_ds, eval_sets, report = load_tasks(recipe, stage)
    transformers.set_seed(args.seed)
    if recipe.model.scratch is not None:
        model, tokenizer = scratch_model(recipe.model, list(train_ds["text"]))
    else:
        model, tokenizer = load_model(recipe.model)
    adapters.check_model_fits(recipe, model)
    wants_eval = args.eval_strategy != "no"
    if stage == "pretrain":
        train_tokens = _tokenize_text(train_ds, tokenizer, recipe.data)
        eval_tokens = _tokenize_text(eval_sets["main"], tokenizer, recipe.data) if wants_eval else None
        collator = SpanCorruptionCollator(tokenizer, max_length=recipe.data.max_length, seed=args.seed)
    else:
        train_tokens = _tokenize_text2text(train_ds, tokenizer, recipe.data, "train", report)
        eval_tokens = (_tokenize_text2text(datasets.concatenate_datasets(list(eval_sets.values())), tokenizer,
                                           recipe.data, "eval", report) if wants_eval else None)
        collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)
    model = adapters.wrap(model, recipe, task="seq2seq")

    def score(trained, _) -> dict:
        if stage == "pretrain":
            return {"denoising_loss": denoising_loss(trained, tokenizer, eval_sets["main"], recipe.data,
                                                     recipe.eval.batch_size)}
        return evaluate(trained, tokenizer, recipe, eval_sets)

    return Job(model=model, train_dataset=train_tokens, eval_dataset=eval_tokens, evaluate=score,
               auto_class="AutoModelForSeq2SeqLM", trainer_cls=Seq2SeqTrainer if stage == "text2text" else Trainer,
               trainer_kwargs={"data_collator": collator, "processing_class": tokenizer}, processors=(tokenizer,),
               report=report)


def load_run(run_dir: str | Path, merge: bool = False):
    """(model, tokenizer) of a finished seq2seq run, in eval mode."""
    run_dir = Path(run_dir)
    if (run_dir / "model").is_dir():
        path = run_dir / "model"
        return AutoModelForSeq2SeqLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    recipe = checkpoints.run_recipe(run_dir)
    base, _ = load_model(recipe.model)
    model = checkpoints.attach_adapter(base, run_dir, recipe.adapter.method, merge)
    return model.eval(), AutoTokenizer.from_pretrained(run_dir / "adapter")


def base_model_of(run_dir: str | Path):
    model, tokenizer = load_model(checkpoints.run_recipe(run_dir).model)
    return model.eval(), tokenizer


def evaluate_run(run_dir: Path, recipe: Recipe, stage: str, data: str | None, fmt: str | None,
                 baseline: bool) -> dict:
    """{"model": ROUGE (or denoising loss), "baseline": the same for the base model (with --baseline)}."""
    from tunelab.evaluation.seq2seq import evaluate

    if fmt and fmt not in FORMATS[stage]:
        raise UserError(f"--format {fmt}: a {recipe.recipe} run evaluates {', '.join(FORMATS[stage])} data")
    if data:
        ds = load_dataset(data, recipe.data, fmt)
        eval_sets = {"main": ds if stage == "pretrain" else ds.map(lambda r: {"source": recipe.data.prefix + r["source"]})}
    else:
        eval_sets = load_tasks(recipe, stage)[1]

    def score(model, tokenizer):
        if stage == "pretrain":
            return {"denoising_loss": denoising_loss(model, tokenizer, eval_sets["main"], recipe.data, recipe.eval.batch_size)}
        return evaluate(model, tokenizer, recipe, eval_sets)

    results = {"model": score(*load_run(run_dir))}
    if baseline:
        results["baseline"] = score(*base_model_of(run_dir))
    return results


def generate(loaded: tuple, recipe: Recipe, prompts: list, settings: GenerateConfig, raw: bool) -> list[str]:
    """One output per input text, the recipe's task prefix put before it unless `raw`."""
    from tunelab.evaluation.seq2seq import generate as generate_seq2seq

    model, tokenizer = loaded
    sources = [p if raw else recipe.data.prefix + p for p in prompts]
    return generate_seq2seq(model, tokenizer, sources, settings, recipe.data.max_length)


def predict(run_dir: Path, recipe: Recipe, stage: str, request: PredictRequest) -> list[dict]:
    raise UserError(f"{run_dir}: a {recipe.recipe} run generates text; use `tunelab generate`")
