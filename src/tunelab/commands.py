"""What each CLI command does (argument parsing lives in cli.py)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from tunelab import adapters, models, rundir
from tunelab.config import GenerateConfig, load_recipe
from tunelab.errors import UserError
from tunelab.recipes import module_of


def cmd_train(args) -> int:
    from tunelab.cli import default_output_dir

    recipe = load_recipe(args.recipe, args.overrides)
    family, stage = module_of(recipe.recipe, recipe.origin("recipe"))
    out = Path(args.output_dir or default_output_dir(args.recipe))
    metrics = family.train(recipe, stage, out, resume=args.resume, overwrite=args.overwrite)
    if metrics:
        _print_summary(out, metrics)
    return 0


def _print_summary(out: Path, metrics: dict) -> None:
    t, e = metrics["train"], metrics["eval"]
    shown = {k: v for k, v in e.items() if isinstance(v, float)}
    print(f"run: {out}")
    print(f"  trainable {metrics['trainable_params']:,} / {metrics['total_params']:,} params, "
          f"{t['steps']} steps, loss {t['first_loss']} -> {t['final_loss']:.4f}, "
          f"{t['tokens_per_second']} tokens/s, peak RSS {metrics['peak_rss_mb']} MB")
    print("  eval: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()))


def _finished_run(run_dir: str):
    """(run directory, its recipe, recipe module, stage) of a finished run, or a UserError."""
    if not models.is_run_dir(run_dir):
        raise UserError(f"{run_dir}: not a finished run directory (no recipe.yaml with adapter/ or model/)")
    recipe = models.run_recipe(run_dir)
    family, stage = module_of(recipe.recipe, str(Path(run_dir) / "recipe.yaml"))
    return Path(run_dir), recipe, family, stage


def cmd_eval(args) -> int:
    run_dir, recipe, family, stage = _finished_run(args.run_dir)
    if args.baseline and recipe.model.scratch is not None:
        raise UserError(f"{run_dir}: built from scratch, so it has no base model to compare with (--baseline)")
    if args.max_samples is not None:
        recipe.eval.max_samples = args.max_samples
    results = family.evaluate_run(run_dir, recipe, stage, args.data, args.format, args.baseline)
    _print_comparison(results)
    metrics = rundir.read_metrics(run_dir)
    if args.data:
        metrics.setdefault("eval_data", {})[args.data] = results
    else:
        metrics["eval"] = {**metrics.get("eval", {}), **results["model"]}
        if "baseline" in results:
            metrics["baseline"] = results["baseline"]
    rundir.write_json(run_dir / "metrics.json", metrics)
    return 0


def _print_comparison(results: dict) -> None:
    keys = [k for k, v in results["model"].items() if isinstance(v, float)]
    cols = list(results)
    print(f"{'metric':<16}" + "".join(f"{c:>12}" for c in cols) + (f"{'difference':>12}" if "baseline" in cols else ""))
    for k in keys:
        vals = [results[c].get(k, float("nan")) for c in cols]
        diff = f"{vals[0] - vals[1]:>+12.4f}" if "baseline" in cols else ""
        print(f"{k:<16}" + "".join(f"{v:>12.4f}" for v in vals) + diff)


def cmd_generate(args) -> int:
    import torch

    from tunelab.evaluation.generation import check_generate, generate

    g = GenerateConfig(max_new_tokens=args.max_new_tokens, do_sample=args.do_sample, temperature=args.temperature,
                       top_p=args.top_p, num_beams=args.num_beams, length_penalty=args.length_penalty,
                       no_repeat_ngram_size=args.no_repeat_ngram_size)
    check_generate(g)
    if not args.prompt and not args.chat:
        raise UserError("generate: give --prompt TEXT or --chat")
    run_dir, recipe, family, _ = _finished_run(args.run_dir)
    if recipe.recipe.startswith(("encoder.", "clip.")):
        raise UserError(f"{run_dir}: a {recipe.recipe} run does not generate text; use `tunelab predict`")
    seq2seq = recipe.recipe.startswith("seq2seq.")
    if seq2seq and (args.chat or args.system):
        raise UserError("generate: --chat and --system are for chat models; a seq2seq run maps one --prompt to one output")
    torch.manual_seed(args.seed)
    model, tokenizer = family.load_run(run_dir)
    if seq2seq:
        from tunelab.evaluation.seq2seq import generate as generate_seq2seq

        source = args.prompt if args.raw else recipe.data.prefix + args.prompt
        print(generate_seq2seq(model, tokenizer, [source], g, recipe.data.max_length)[0])
        return 0
    history = [{"role": "system", "content": args.system}] if args.system else []
    if args.prompt:
        prompt = args.prompt if args.raw else history + [{"role": "user", "content": args.prompt}]
        print(generate(model, tokenizer, [prompt], g)[0])
        return 0
    print("chat with the model; an empty line or Ctrl-D ends", file=sys.stderr)
    for line in sys.stdin:
        if not line.strip():
            break
        history.append({"role": "user", "content": line.strip()})
        reply = generate(model, tokenizer, [history], g)[0]
        history.append({"role": "assistant", "content": reply})
        print(f"assistant: {reply}", flush=True)
    return 0


def cmd_merge(args) -> int:
    run_dir, _, family, _ = _finished_run(args.run_dir)
    out = Path(args.out_dir)
    if not (run_dir / "adapter").is_dir():
        raise UserError(f"{run_dir}: no adapter/ to merge (a full fine-tuning run already has a standalone model/)")
    if out.exists() and not args.overwrite:
        raise UserError(f"{out}: exists; pass --overwrite to replace it")
    model, *processors = family.load_run(run_dir, merge=True)  # the tokenizer (and a CLIP run's image processor)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    for processor in processors:
        processor.save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    print(f"merged {run_dir}/adapter into its base: {out}")
    return 0


def cmd_recipes(args) -> int:
    for path in sorted(models.RECIPES_DIR.rglob("*.yaml")):
        if path.parent.name == "accelerate":
            continue
        description = load_recipe(path).description
        print(f"{str(path.relative_to(models.REPO_ROOT)):<52} {description}")
    return 0


def cmd_validate(args) -> int:
    """Schema, trainer arguments, data files and records, method/model fit: everything but the weights."""
    from tunelab.data.loading import load_splits
    from tunelab.data.readers import is_hub_data
    from tunelab.evaluation.generation import check_generate

    recipe = load_recipe(args.recipe, args.overrides)
    family, stage = module_of(recipe.recipe, recipe.origin("recipe"))
    getattr(family, "check_method", adapters.check_method)(recipe)
    check_generate(recipe.eval.generate)
    family.build_args(recipe, stage, Path("runs") / "validate")
    if hasattr(family, "read_data"):  # image data: every path checked, no pixels decoded
        report = family.read_data(recipe)[-1]
        counts = f"{report['train_records']} train / {report['eval_records']} eval pairs"
    elif is_hub_data(recipe.data.train):
        counts = "hub data (fetched when trained)"
    else:
        report = load_splits(recipe, family.FORMATS[stage]).report
        counts = f"{report['train_records']} train / {report['eval_records']} eval records"
    name = recipe.model.name_or_path
    if recipe.model.scratch is not None:
        where = "built from scratch"
    elif name.startswith("embedded:") or models.is_run_dir(name) or Path(name).exists():
        where = "local"
        if not models.is_run_dir(name) and name.partition("@")[0] not in models.EMBEDDED_RECIPES:  # built on first use
            models.resolve(name)
    else:
        where = "on the hub, downloaded when trained"
    print(f"ok: {args.recipe}: {recipe.recipe}, {recipe.adapter.method}, model {name} ({where}), "
          f"{counts}")
    return 0


def cmd_predict(args) -> int:
    run_dir, recipe, family, stage = _finished_run(args.run_dir)
    if not hasattr(family, "predict"):
        raise UserError(f"{run_dir}: a {recipe.recipe} run does not predict labels; use `tunelab generate`")
    for line in family.predict(run_dir, recipe, stage, args):
        print(line)
    return 0


def cmd_parity(args) -> int:
    """Exit 1 if any check fails: a failed parity check is a bug in the lab, not a user mistake."""
    import torch

    from tunelab import parity
    from tunelab.parity.qwen2 import run_dir_checks

    checks = parity.all_checks()
    for run in args.run_dir:
        if not models.is_run_dir(run) or not models.run_recipe(run).recipe.startswith("causal_lm."):
            raise UserError(f"--run-dir {run}: not a finished Qwen2 (causal_lm) run directory")
        checks += run_dir_checks(Path(run))
    if args.match:
        checks = [c for c in checks if args.match.lower() in c.component.lower()]
        if not checks:
            raise UserError(f"-k {args.match}: no check's component contains it")
    # The checks use tiny tensors: on a small shared CPU one thread is faster than the default pool.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = [parity.run(check) for check in checks]
    finally:
        torch.set_num_threads(threads)
    print(parity.table(results))
    failed = sum(not r.passed for r in results)
    print(f"\n{len(results) - failed} of {len(results)} checks pass ({sum(r.seconds for r in results):.1f} s)")
    return 1 if failed else 0


def cmd_demo(args) -> int:
    if args.real:
        from tunelab.demo_real import run_demo_real

        run_demo_real(Path(args.output_dir or "runs/demo-real"))
    else:
        from tunelab.demo import run_demo

        run_demo(Path(args.output_dir or "runs/demo"))
    return 0



def cmd_bench(args) -> int:
    from tunelab.bench import run_bench

    return run_bench(args)


def cmd_compare(args) -> int:
    from tunelab.compare import run_compare

    return run_compare(args)


def cmd_sweep(args) -> int:
    from tunelab.sweep import run_sweep

    return run_sweep(args)
