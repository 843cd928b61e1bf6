"""One run of a recipe, the same for every family: check, stage, callbacks, trainer, train, save, write the run.

The family (tunelab.families) supplies the trainer's arguments and a Job: the model, the data in the trainer's
shape, the trainer class and its extra arguments, and how to score the trained model. Everything that can be
wrong with the input is checked before the run directory is created.
"""

from __future__ import annotations

import time
from pathlib import Path

from tunelab import adapters, method_hooks, own_methods, rundir
from tunelab.config import Recipe, to_dict
from tunelab.families import Family, Job
from tunelab.tracking import check_trackers


def check(family: Family, recipe: Recipe, stage: str, output_dir: Path):
    """Everything short of loading weights and data: the family's checks, the trainer's arguments, the trackers."""
    family.check(recipe, stage)
    return trainer_arguments(family, recipe, stage, output_dir)


def trainer_arguments(family: Family, recipe: Recipe, stage: str, output_dir: Path):
    """The trainer's argument dataclass, with the trackers it names checked."""
    args = family.build_args(recipe, stage, output_dir)
    check_trackers(args.report_to, recipe.origin("train.report_to"))
    return args


def train(family: Family, recipe: Recipe, stage: str, out: Path, resume: bool = False, overwrite: bool = False) -> dict:
    """Train a recipe into run directory `out`; its metrics on rank 0, {} on the other ranks."""
    started = time.time()
    args = check(family, recipe, stage, rundir.partial_path(out))
    rundir.check_free(out, resume, overwrite)
    job = family.prepare(recipe, stage, args)

    staging = rundir.stage(out, resume, overwrite, args.process_index == 0)
    if recipe.adapter.method == "gradual_unfreeze":
        args.ddp_find_unused_parameters = True  # the frozen blocks get no gradient until they unfreeze
    hooks = method_hooks.callbacks(recipe)
    trainer = _trainer(job, args, staging, hooks, method_hooks.trainer_kwargs(recipe, args))
    result = trainer.train(resume_from_checkpoint=rundir.last_checkpoint(staging) if resume else None)
    collective = job.collective_scores(trainer) if job.collective_scores else {}
    if not trainer.is_world_process_zero():
        return {}

    method = recipe.adapter.method
    saved = staging / ("model" if method in adapters.WHOLE_MODEL else "adapter")
    trains = own_methods.what_trains(trainer.model) if method in own_methods.OWN else None
    if method in own_methods.OWN:
        own_methods.save(trainer.model, recipe, saved)
    else:
        trainer.save_model(str(saved))
    for processor in job.processors:
        processor.save_pretrained(str(saved))
    for name, content in job.files.items():
        rundir.write_json(staging / name, content)
    scores = {**job.evaluate(trainer.model, staging), **collective}
    metrics = rundir.run_metrics(recipe, trainer, result, scores, job.report, started, **job.metrics)
    metrics["saved_weights_mb"] = rundir.weights_mb(saved)
    if trains:
        metrics["trains"] = trains
    for hook in hooks:
        metrics["train"].update(hook.facts())
    if job.train_facts:
        metrics["train"].update(job.train_facts(trainer.model))
    rundir.write_run(staging, out, to_dict(recipe), metrics, job.auto_class)
    return metrics


def _trainer(job: Job, args, staging: Path, hooks: list, method_kwargs: dict):
    """The family's trainer, with the run's callbacks (the method's too), and its eval set when
    train.eval_strategy asks for one."""
    callbacks = [rundir.TrainLogCallback(staging / "train_log.jsonl"), rundir.RankReportCallback(), *hooks]
    eval_dataset = job.eval_dataset if args.eval_strategy != "no" else None
    return job.trainer_cls(model=job.model, args=args, train_dataset=job.train_dataset, eval_dataset=eval_dataset,
                           callbacks=callbacks, **job.trainer_kwargs, **method_kwargs)
