"""What each CLI command does: cli.py parses the arguments, these functions turn them into the library's typed
calls and print what comes back."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from tunelab import adapters, checkpoints, rundir, shipped, training
from tunelab.config import GenerateConfig, load_recipe
from tunelab.errors import UserError
from tunelab.families import PredictRequest, family_of


def cmd_train(args) -> int:
    from tunelab.cli import default_output_dir

    recipe = load_recipe(args.recipe, args.overrides)
    family, stage = family_of(recipe.recipe, recipe.origin("recipe"))
    out = Path(args.output_dir or default_output_dir(args.recipe))
    _note_unused_keys(recipe)
    metrics = training.train(family, recipe, stage, out, resume=args.resume, overwrite=args.overwrite)
    if metrics:
        _print_summary(out, metrics)
    return 0


def _note_unused_keys(recipe) -> None:
    unused = adapters.unused_keys(recipe)
    if unused:
        print(f"note: adapter.method={recipe.adapter.method} does not use {', '.join(unused)} (left in the recipe, "
              f"ignored)")


def _figure(value) -> str:
    """n/a where the trainer did not log the figure (no loss logged yet; ORPO's and CPO's batches, whose
    input tokens the Trainer does not count)."""
    return "n/a" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def _print_summary(out: Path, metrics: dict) -> None:
    t, e = metrics["train"], metrics["eval"]
    shown = {k: v for k, v in e.items() if isinstance(v, float)}
    print(f"run: {out}")
    print(f"  trainable {metrics['trainable_params']:,} / {metrics['total_params']:,} params, "
          f"{t['steps']} steps, loss {_figure(t['first_loss'])} -> {t['final_loss']:.4f}, "
          f"{_figure(t['tokens_per_second'])} tokens/s, peak RSS {metrics['peak_rss_mb']} MB")
    if "trains" in metrics:
        print(f"  trains: {', '.join(metrics['trains'])}")
    print("  eval: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()))


def _finished_run(run_dir: str):
    """(run directory, its recipe, recipe module, stage) of a finished run, or a UserError."""
    if not checkpoints.is_run_dir(run_dir):
        raise UserError(f"{run_dir}: not a finished run directory (no recipe.yaml with adapter/ or model/)")
    recipe = checkpoints.run_recipe(run_dir)
    family, stage = family_of(recipe.recipe, str(Path(run_dir) / "recipe.yaml"))
    return Path(run_dir), recipe, family, stage


def cmd_eval(args) -> int:
    run_dir, recipe, family, stage = _finished_run(args.run_dir)
    if args.baseline and recipe.model.scratch is not None:
        raise UserError(f"{run_dir}: built from scratch, so it has no base model to compare with (--baseline)")
    if args.max_samples is not None:
        recipe.eval.max_samples = args.max_samples
    results = family.evaluate_run(run_dir, recipe, stage, args.data, args.format, args.baseline)
    _print_samples(results["model"])
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


def _print_samples(scores: dict) -> None:
    """What the model wrote for the first few eval records, then each class's or entity type's scores."""
    for sample in scores.get("samples", [])[:3]:
        if "prompt" in sample:
            print(f"  Q: {sample['prompt']}\n  A: {sample['generated']}   (reference: {sample['reference']})")
        else:
            print(f"  in:  {sample['source']}\n  out: {sample['generated']}\n  ref: {sample['reference']}")
    for name, task in scores.get("tasks", {}).items():
        shown = ", ".join(f"{k} {v:.4f}" for k, v in task.items() if k.startswith("rouge") and isinstance(v, float))
        print(f"task {name}: {shown}")
    per, kind = (scores["per_type"], "entity type") if "per_type" in scores else (scores.get("per_class"), "class")
    if per and all(isinstance(m, dict) and "precision" in m for m in per.values()):  # a classifier's report
        print(f"{kind:<20}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}")
        for name, m in per.items():
            print(f"{name:<20}{m['precision']:>10.3f}{m['recall']:>10.3f}{m['f1']:>10.3f}{int(m['support']):>10}")
    if "confusion_png" in scores:
        print(f"confusion matrix: {scores['confusion_png']}")


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

    from tunelab.evaluation.generation import check_generate

    g = GenerateConfig(max_new_tokens=args.max_new_tokens, do_sample=args.do_sample, temperature=args.temperature,
                       top_p=args.top_p, num_beams=args.num_beams, length_penalty=args.length_penalty,
                       no_repeat_ngram_size=args.no_repeat_ngram_size)
    check_generate(g)
    if not args.prompt and not args.chat:
        raise UserError("generate: give --prompt TEXT or --chat")
    run_dir, recipe, family, stage = _finished_run(args.run_dir)
    if not family.GENERATES or stage in getattr(family, "SCORES", ()):
        raise UserError(f"{run_dir}: a {recipe.recipe} run does not generate text; use `tunelab predict`")
    if not family.CHAT and (args.chat or args.system):
        raise UserError(f"generate: --chat and --system are for chat models; a {recipe.recipe} run maps one --prompt "
                        f"to one output")
    sees_images = getattr(family, "IMAGES", False)
    if bool(args.image) != sees_images:
        raise UserError(f"generate: a {recipe.recipe} run answers about a picture: give --image PATH" if sees_images
                        else f"generate: --image is for vision-language runs; a {recipe.recipe} run reads text only")
    if sees_images and not args.prompt:
        raise UserError("generate: give --prompt TEXT with --image (one question about the picture)")
    torch.manual_seed(args.seed)
    loaded = family.load_run(run_dir)
    history = [{"role": "system", "content": args.system}] if args.system else []
    if args.prompt:
        question = {"role": "user", "content": args.prompt, **({"image": args.image} if sees_images else {})}
        prompt = args.prompt if args.raw or not family.CHAT else history + [question]
        print(family.generate(loaded, recipe, [prompt], g, args.raw)[0])
        return 0
    print("chat with the model; an empty line or Ctrl-D ends", file=sys.stderr)
    for line in sys.stdin:
        if not line.strip():
            break
        history.append({"role": "user", "content": line.strip()})
        reply = family.generate(loaded, recipe, [history], g, args.raw)[0]
        history.append({"role": "assistant", "content": reply})
        print(f"assistant: {reply}", flush=True)
    return 0


def cmd_merge(args) -> int:
    run_dir, recipe, family, _ = _finished_run(args.run_dir)
    out = Path(args.out_dir)
    if not (run_dir / "adapter").is_dir():
        raise UserError(f"{run_dir}: no adapter/ to merge (a {recipe.adapter.method} run already has a standalone "
                        f"model/)")
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


def cmd_quantize(args) -> int:
    from tunelab.compression import quantize, runs

    out = Path(args.out_dir)
    runs.check_out(args.run_dir, out, args.overwrite)
    why = quantize.unavailable(args.method)
    if why:
        raise UserError(f"quantize --method {args.method}: not available on this machine: {why}")
    source = runs.load_source(args.run_dir)

    def write_model(float_dir: Path, model_dir: Path) -> dict:
        if args.method == "dynamic-int8":  # torch cannot save it: keep the float weights, quantize on load
            float_dir.rename(model_dir)
            return {"weights_in_memory_mb": quantize.in_memory_mb(quantize.dynamic_int8(source.model))}
        quantize.save_bnb(float_dir, model_dir, args.method)
        return {}

    made = {"kind": "quantize", "method": args.method, "label": args.method, "settings": {"method": args.method},
            "command": f"tunelab quantize {args.run_dir} {args.out_dir} --method {args.method}"}
    metrics = runs.compress(source, out, made, write_model, args.max_samples, args.overwrite)
    _print_compression(out, metrics)
    return 0


def cmd_prune(args) -> int:
    from tunelab.compression import prune, runs

    out = Path(args.out_dir)
    if not 0 <= args.sparsity < 1:
        raise UserError(f"prune --sparsity {args.sparsity:g}: should be in [0, 1) (0.5 removes half the weights)")
    runs.check_out(args.run_dir, out, args.overwrite)
    source = runs.load_source(args.run_dir)
    at = f"prune --structured {args.structured}"
    if args.structured:  # the checks that read the model's shape, before anything is written
        prune.check_structured(source.model, args.sparsity, args.structured, at)

    def write_model(float_dir: Path, model_dir: Path) -> dict:
        if args.structured:
            smaller = prune.structured(source.model, args.sparsity, args.structured, at)
            smaller.save_pretrained(model_dir)
            return {"total_params": sum(p.numel() for p in smaller.parameters()), "config": {
                k: getattr(smaller.config, k) for k in ("num_attention_heads", "num_key_value_heads", "head_dim",
                                                        "intermediate_size") if hasattr(smaller.config, k)}}
        facts = prune.unstructured(source.model, args.sparsity)
        source.model.save_pretrained(model_dir)
        return facts

    label = f"{args.structured or 'unstructured'} {args.sparsity:g}"
    made = {"kind": "prune", "method": args.structured or "unstructured", "label": label,
            "settings": {"sparsity": args.sparsity, "structured": args.structured},
            "command": f"tunelab prune {args.run_dir} {args.out_dir} --sparsity {args.sparsity:g}"
                       + (f" --structured {args.structured}" if args.structured else "")}
    metrics = runs.compress(source, out, made, write_model, args.max_samples, args.overwrite)
    _print_compression(out, metrics)
    return 0


def _print_compression(out: Path, metrics: dict) -> None:
    c = metrics["compression"]
    before, after = c["before"], c["after"]
    print(f"{c['label']} of {c['source']}: {out}")
    print(f"  weights on disk {before['weights_mb']:.3g} MB -> {after['weights_mb']:.3g} MB, parameters "
          f"{before['total_params']:,} -> {after['total_params']:,}, generation {before['generate_tokens_per_second']} "
          f"-> {after['generate_tokens_per_second']} tokens/s")
    if "zero_fraction" in after:
        print(f"  zeros in the pruned linear layers: {after['zero_fraction']:.1%}")
    if c["method"] == "dynamic-int8":
        print(f"  in memory {after['weights_in_memory_mb']:.3g} MB; model/ holds the float weights, quantized again "
              f"on load (torch cannot save dynamic int8)")
    print(f"{'metric':<16}{'before':>12}{'after':>12}{'difference':>12}")
    for k, v in after["eval"].items():
        if isinstance(v, float) and isinstance(before["eval"].get(k), float):
            print(f"{k:<16}{before['eval'][k]:>12.4f}{v:>12.4f}{v - before['eval'][k]:>+12.4f}")


def cmd_recipes(args) -> int:
    if args.recipes_action == "copy":
        dest = shipped.copy(args.name, args.dest)
        use = (f"accelerate launch --config_file {dest} -m tunelab train RECIPE" if args.name.startswith("accelerate/")
               else f"tunelab train {dest}")
        print(f"wrote {dest}; edit it, then: {use}")
        return 0
    for name in shipped.names():
        print(f"{name:<44} {load_recipe(shipped.path_of(name)).description}")
    launch = ", ".join(shipped.names(launch_configs=True))
    print(f"\n{len(shipped.names())} recipes in {shipped.recipes_dir()}; run one by name (tunelab train qwen2/sft_lora) "
          f"or copy one to edit (tunelab recipes copy qwen2/sft_lora my.yaml).\n"
          f"accelerate launch configs (copy them the same way): {launch}")
    return 0


def cmd_validate(args) -> int:
    """Schema, trainer arguments, trackers, data files and records, method/model fit: everything but the weights."""
    recipe = load_recipe(args.recipe, args.overrides)
    family, stage = family_of(recipe.recipe, recipe.origin("recipe"))
    training.check(family, recipe, stage, Path("runs") / "validate")
    _note_unused_keys(recipe)
    report = family.data_report(recipe, stage)
    unit = "pairs" if recipe.data.format == "image_caption" else "records"
    counts = ("hub data (fetched when trained)" if report.get("hub")
              else f"{report['train_records']} train / {report['eval_records']} eval {unit}")
    name = recipe.model.name_or_path
    if recipe.model.scratch is not None:
        where = "built from scratch"
    elif name.startswith("embedded:") or checkpoints.is_run_dir(name) or Path(name).exists():
        where = "local"
        if not checkpoints.is_run_dir(name) and name.partition("@")[0] not in checkpoints.EMBEDDED_RECIPES:
            checkpoints.resolve(name)  # the tiny defaults are built on first use; the others are checked now
    else:
        where = "on the hub, downloaded when trained"
    print(f"ok: {args.recipe}: {recipe.recipe}, {recipe.adapter.method}, model {name} ({where}), {counts}")
    return 0


def cmd_predict(args) -> int:
    run_dir, recipe, family, stage = _finished_run(args.run_dir)
    if family.GENERATES and stage not in getattr(family, "SCORES", ()):
        raise UserError(f"{run_dir}: a {recipe.recipe} run does not predict labels; use `tunelab generate`")
    request = PredictRequest(texts=args.text or [], text_pairs=args.text_pair or [], images=args.image or [],
                             labels=args.labels, template=args.template, top=args.top)
    for result in family.predict(run_dir, recipe, stage, request):
        if "score" in result:  # a reward model
            print(f"{result['score']:.4f}\t{result['text']}" + (f"  ||  {result['reply']}" if "reply" in result else ""))
            continue
        if "entities" in result:
            print(result["input"])
            print("\n".join(f"  {e['type']:<16} {e['text']}" for e in result["entities"]) or "  (no entities)")
            continue
        pair = f"  ||  {result['pair']}" if result.get("pair") else ""
        print(f"{result['labels'][0][0]}\t{result['input']}{pair}")
        for label, p in result["labels"]:
            print(f"  {label:<{20 if 'pair' in result else 24}} {p:.3f}")
    return 0


def cmd_parity(args) -> int:
    """Exit 1 if any check fails: a failed parity check is a bug in the lab, not a user mistake."""
    import torch

    from tunelab import parity
    from tunelab.parity.qwen2 import run_dir_checks

    checks = parity.all_checks()
    for run in args.run_dir:
        if not checkpoints.is_run_dir(run) or not checkpoints.run_recipe(run).recipe.startswith("causal_lm."):
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
    elif args.align:
        from tunelab.demo_align import run_demo_align

        run_demo_align(Path(args.output_dir or "runs/demo-align"))
    else:
        from tunelab.demo import run_demo

        run_demo(Path(args.output_dir or "runs/demo"))
    return 0



def cmd_bench(args) -> int:
    from tunelab.bench import BenchRequest, run_bench, summary

    report = run_bench(BenchRequest(recipe=args.recipe, overrides=args.overrides, variants=args.variants,
                                    steps=args.steps, baseline=args.baseline, eval_samples=args.eval_samples,
                                    output_dir=args.output_dir))
    print("\n".join(summary(report)))
    return 1 if report["failed"] else 0


def cmd_compare(args) -> int:
    from tunelab.compare import compare_runs, table

    chart = Path(args.output or "compare.png")
    print(table(compare_runs([Path(d) for d in args.run_dirs], chart)))
    print(f"\nchart: {chart} (figures: {chart.with_suffix('.json')})")
    return 0


def cmd_sweep(args) -> int:
    from tunelab.compare import compare_runs, table
    from tunelab.sweep import plan_sweep, record_search, search_rate, train_one

    plan = plan_sweep(args.recipe, args.overrides, args.methods, args.output_dir, args.overwrite, args.lr_search,
                      args.validation_fraction)
    print(f"sweep: {', '.join(plan.runs)} on {args.recipe}, same data and budget, runs in {plan.out_root}/")
    for reason in plan.skipped:
        print(f"  skipped {reason}")
    failed = []
    for method in plan.runs:
        search = None
        if plan.learning_rates:
            print(f"\n=== {method}: learning rates {', '.join(f'{r:g}' for r in plan.rates(method))} on a "
                  f"validation split ===", flush=True)
            search = search_rate(plan, method)
            if search is None:
                failed.append(method)
                continue
            print(f"{method}: chose learning rate {search['chosen']:g} ({search['metric']}: "
                  + ", ".join(f"{r} {v:.4g}" for r, v in search["scores"].items()) + ")")
        print(f"\n=== {method} ===", flush=True)
        extra = (f"train.learning_rate={search['chosen']}",) if search else ()
        if not train_one(plan, method, extra):
            failed.append(method)
        elif search:
            record_search(plan.out_root / method, search)
    finished = [plan.out_root / m for m in plan.runs if m not in failed]
    if finished:
        chart = plan.out_root / "compare.png"
        print("\n" + table(compare_runs(finished, chart)))
        print(f"\nchart: {chart} (figures: {chart.with_suffix('.json')})")
    if failed:
        print(f"sweep: {', '.join(failed)} failed (see above); the others are compared", file=sys.stderr)
        return 1
    return 0
