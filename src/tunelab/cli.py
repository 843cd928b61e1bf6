"""`tunelab train|eval|generate|predict|merge|quantize|prune|parity|bench|compare|sweep|recipes|validate|demo`. User mistakes: one line on stderr, exit 2."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from tunelab.errors import UserError

EXIT_USER_ERROR = 2


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} should be >= 1")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tunelab", description="Fine-tune and evaluate transformers with recipes.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="run a recipe")
    t.add_argument("recipe", help="a recipe YAML file, or a shipped recipe's name (`tunelab recipes`), e.g. qwen2/sft_lora")
    t.add_argument("overrides", nargs="*", help="key.sub=value edits, e.g. adapter.r=32 train.max_steps=3")
    t.add_argument("--output-dir", help="run directory (default: runs/<recipe name>)")
    t.add_argument("--resume", action="store_true", help="continue from the run directory's last checkpoint")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run directory")

    e = sub.add_parser("eval", help="evaluate a run (and with --baseline, its base model)")
    e.add_argument("run_dir")
    e.add_argument("--data", help="eval on this file or builtin:NAME instead of the run's eval split")
    e.add_argument("--format", help="format of --data (default: the recipe's data.format)")
    e.add_argument("--baseline", action="store_true", help="also score the base model and show the difference")
    e.add_argument("--max-samples", type=_positive, help="evaluate at most this many records")

    g = sub.add_parser("generate", help="generate with a run's model and its chat template")
    g.add_argument("run_dir")
    g.add_argument("--prompt", help="one user message (or raw text with --raw)")
    g.add_argument("--image", help="vision-language runs: the picture the --prompt asks about")
    g.add_argument("--chat", action="store_true", help="interactive multi-turn chat on stdin")
    g.add_argument("--system", help="system message")
    g.add_argument("--raw", action="store_true", help="no chat template (causal) or no task prefix (seq2seq)")
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--num-beams", type=int, default=1, help="beam search width (1: greedy)")
    g.add_argument("--length-penalty", type=float, default=1.0, help="beam search: > 1 favours longer outputs")
    g.add_argument("--no-repeat-ngram-size", type=int, default=0, help="never repeat an n-gram of this size")
    g.add_argument("--do-sample", action="store_true", help="sample instead of greedy/beam search")
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=0)

    r = sub.add_parser("predict", help="label a text with an encoder run (classes with probabilities, or entity spans), "
                                       "or an image with a CLIP run (zero-shot label probabilities)")
    r.add_argument("run_dir")
    r.add_argument("--text", action="append", help="encoder runs: the text (repeat for several)")
    r.add_argument("--text-pair", action="append", help="the second text of a pair run (one per --text)")
    r.add_argument("--image", action="append", help="CLIP runs: an image file (repeat for several)")
    r.add_argument("--labels", help='CLIP runs: the candidate labels, comma-separated, e.g. "red circle,blue star"')
    r.add_argument("--template", help='CLIP runs: the prompt a label is put in (default: the recipe\'s first, '
                                      '"a photo of a {}.")')
    r.add_argument("--top", type=_positive, default=5, help="show this many most likely labels")

    m = sub.add_parser("merge", help="merge a LoRA adapter into its base and save a standalone model")
    m.add_argument("run_dir")
    m.add_argument("out_dir")
    m.add_argument("--overwrite", action="store_true")

    qz = sub.add_parser("quantize", help="quantize a causal LM run's linear layers into a new run (a LoRA run is "
                                          "merged first); eval before and after, size, generation speed")
    qz.add_argument("run_dir")
    qz.add_argument("out_dir")
    qz.add_argument("--method", required=True, choices=("int8", "nf4", "dynamic-int8"),
                    help="int8: bitsandbytes LLM.int8, saved int8 (about 1/4 of float32 on disk; on this CPU build "
                         "slower than float, see README); nf4: bitsandbytes 4-bit NormalFloat, saved packed (about "
                         "1/7); dynamic-int8: torch's dynamic int8 matmuls, the CPU speed option, not savable: OUT "
                         "keeps the float weights and is quantized again on load")
    qz.add_argument("--max-samples", type=_positive, help="score before and after on at most this many eval records "
                                                           "(default: the recipe's eval.max_samples)")
    qz.add_argument("--overwrite", action="store_true", help="replace an existing OUT_DIR")

    pr = sub.add_parser("prune", help="magnitude-prune a causal LM run into a new run (a LoRA run is merged first): "
                                      "zeros in every linear layer, or with --structured whole heads or MLP channels")
    pr.add_argument("run_dir")
    pr.add_argument("out_dir")
    pr.add_argument("--sparsity", type=float, required=True,
                    help="share in [0, 1) of the weights (or, --structured, of the key/value heads or MLP channels of "
                         "each layer, rounded down) to remove")
    pr.add_argument("--structured", choices=("heads", "channels"),
                    help="remove whole key/value heads with their query heads, or MLP channels, the same number in "
                         "every layer: the model shrinks (default: unstructured zeros, same shapes)")
    pr.add_argument("--max-samples", type=_positive, help="score before and after on at most this many eval records "
                                                           "(default: the recipe's eval.max_samples)")
    pr.add_argument("--overwrite", action="store_true", help="replace an existing OUT_DIR")

    q = sub.add_parser("parity", help="check the lab's from-scratch models against transformers/peft/TRL; print a table")
    q.add_argument("-k", dest="match", help="only checks whose component contains this text (e.g. t5, lora)")
    q.add_argument("--run-dir", action="append", default=[],
                   help="also compare our Qwen2 with this Qwen2 run's model (LoRA merged); repeatable")

    b = sub.add_parser("bench", help="train a recipe briefly under several variants, side by side: tokens/s, GFLOP/s, "
                                     "padding, step time, peak memory, train and eval loss, ratios to a baseline "
                                     "(table, JSON, PNG)")
    b.add_argument("recipe")
    b.add_argument("overrides", nargs="*", help="key.sub=value edits applied to every variant; VARIANT:key.sub=value "
                                                "to one variant only, e.g. prompt:train.learning_rate=0.3")
    b.add_argument("--variants", help="comma-separated variant names (default: the TRL rows, the recipe as it is, the "
                                      "batch layouts, the methods and the precisions; CUDA-only variants on a GPU)")
    b.add_argument("--steps", type=_positive, default=20, help="optimizer steps per variant (after warm-up)")
    b.add_argument("--baseline", default="trl-same-hparams",
                   help="the variant every ratio is taken against (default: plain TRL with the recipe's learning "
                        "rate, batch and max length)")
    b.add_argument("--eval-samples", type=_positive, default=32,
                   help="every row's eval loss is taken on this many records from the start of the eval split")
    b.add_argument("--output-dir", default="runs/bench", help="where bench.json and bench.png go")

    c = sub.add_parser("compare", help="one table (and a PNG bar chart) of several runs: method, trainable "
                                       "parameters, train time, tokens/s, peak memory, task metrics")
    c.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    c.add_argument("--output", help="where the chart goes (default: compare.png in the current directory)")

    s = sub.add_parser("sweep", help="run one recipe under several methods with the same data and budget, then compare")
    s.add_argument("recipe")
    s.add_argument("overrides", nargs="*", help="key.sub=value edits applied to every method; METHOD:key.sub=value "
                                                "to one method only, e.g. prompt:train.learning_rate=0.3")
    s.add_argument("--methods", help="comma-separated adapter methods, or all (default: lora,qlora,prefix,prompt,full, "
                                     "skipping those the recipe cannot use)")
    s.add_argument("--output-dir", help="parent of the runs, one per method (default: runs/sweep-<recipe name>)")
    s.add_argument("--overwrite", action="store_true", help="replace existing runs of the sweep")
    s.add_argument("--lr-search", metavar="LR,LR,...", help="choose each method's learning rate among these (or "
                                                            "x0.3,x1,x3: multiples of its own), by its score on a "
                                                            "validation split of the train data")
    s.add_argument("--validation-fraction", type=float, default=0.1,
                   help="share of the train data the --lr-search runs are scored on (default 0.1)")

    rs = sub.add_parser("recipes", help="list the shipped recipes by name (qwen2/sft_lora, ...), or copy one to edit")
    rs_sub = rs.add_subparsers(dest="recipes_action")
    rc = rs_sub.add_parser("copy", help="write a shipped recipe to a file of your own (never overwrites one)")
    rc.add_argument("name", help="a name from `tunelab recipes`, e.g. qwen2/sft_lora")
    rc.add_argument("dest", help="the new file (or a directory to put NAME.yaml in)")
    v = sub.add_parser("validate", help="check a recipe without training")
    v.add_argument("recipe")
    v.add_argument("overrides", nargs="*")

    d = sub.add_parser("demo", help="the offline Qwen2 pipeline: pretrain, SFT, DPO, with a table of results")
    d.add_argument("--real", action="store_true", help="the real SmolLM2-135M-Instruct instead: SFT then DPO on "
                                                       "JSON extraction in English and Chinese (a few minutes)")
    d.add_argument("--align", action="store_true", help="alignment beyond DPO on the embedded default: SFT, then "
                                                        "DPO, GRPO with a verifiable reward, and a reward model with RLOO")
    d.add_argument("--output-dir", help="where the demo's runs go, replaced on each demo (default: runs/demo, "
                                        "runs/demo-real with --real, runs/demo-align with --align)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    # Overrides may come after options too (`--output-dir X train.max_steps=3`): collect the strays.
    args, extra = parser.parse_known_args(argv)
    unknown = [a for a in extra if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # bitsandbytes announces on import, on CPUs with AVX-512 BF16, that it could not fetch an optional kernel from
    # the hub (the `kernels` package); it then uses its own CPU kernel, which is what tunelab has always run on.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    # An int8 (LLM.int8) model logs at every matmul that it casts float32 inputs to float16, as it is built to.
    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    try:
        from tunelab import commands

        return getattr(commands, f"cmd_{args.command}")(args) or 0
    except UserError as e:
        print(f"tunelab: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("tunelab: interrupted", file=sys.stderr)
        return 130


def default_output_dir(recipe_path: str) -> Path:
    return Path("runs") / Path(recipe_path).stem
