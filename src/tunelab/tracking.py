"""Experiment trackers (`train.report_to`): refuse a tracker that cannot start, in one line, before training.

Without this check the Trainer's tracker callback raises deep inside its constructor, with a traceback and,
for TensorBoard, advice about PyTorch versions and tensorboardX.

The list of trackers and their availability checks are transformers' own (INTEGRATION_TO_CALLBACK and the
is_*_available functions), looked up when called, so a tracker added by a newer transformers is known here too.

TensorBoard needs nothing set: transformers 5 dropped TrainingArguments.logging_dir, and TensorBoardCallback
writes to `<output_dir>/runs/<Mon DD_HH-MM-SS>_<host>/` (unless the TENSORBOARD_LOGGING_DIR environment
variable says otherwise). output_dir is the `<run>.partial/` staging directory, so the event files move with
the run when it is renamed, and `tensorboard --logdir runs/` finds every run.
"""

from __future__ import annotations

import importlib.util

from transformers.integrations import integration_utils as hf

from tunelab.errors import UserError

# transformers names each check is_<tracker>_available, except these.
_CHECK_NAMES = {"azure_ml": "is_azureml_available", "flyte": "is_flytekit_available"}
# transformers keeps no pip names (only prose in its error messages), so the ones that differ from the
# tracker's name are written here. azureml-core is what provides azureml.core.run, the module the check looks for.
_PIP = {"azure_ml": "azureml-core", "comet_ml": "comet-ml", "flyte": "flytekit", "dagshub": "dagshub mlflow"}
# Values that stand for a set of trackers rather than one; TrainingArguments accepts them alone, not in a list.
_WORDS = ("all", "none")


def check_trackers(report_to, origin: str) -> None:
    """Raise UserError (one line, prefixed with `origin`) unless every tracker in `report_to` can start.

    `report_to` is the value as written in the recipe ("none", "all", a name, a list of names) or as
    TrainingArguments normalised it (a list, with "all" already replaced by the installed trackers).
    "all" always passes: transformers expands it to the trackers that are installed.
    """
    names = [report_to] if isinstance(report_to, str) or report_to is None else list(report_to)
    shown = _show(names)
    if names in (["all"], ["none"]):
        return
    if None in names:
        raise UserError(f"{origin}: train.report_to={shown}: write none for no tracker, or all for every "
                        f"installed one")
    words = [name for name in names if name in _WORDS]
    if words:
        raise UserError(f"{origin}: train.report_to={shown}: {words[0]} stands alone "
                        f"(train.report_to={words[0]}), not in a list with other trackers")
    known = hf.INTEGRATION_TO_CALLBACK
    unknown = [name for name in names if name not in known]
    if unknown:
        comma = "; several trackers are a list: [a, b]" if any("," in str(name) for name in unknown) else ""
        raise UserError(f"{origin}: train.report_to={shown}: unknown tracker {unknown[0]!r}{comma}; known: "
                        f"{', '.join(sorted(known))} (or all, none)")
    if "kubeflow" in names and not hf.is_kubeflow_available():
        # Not a package: transformers turns it on by itself inside a Kubeflow TrainJob, which sets this variable.
        raise UserError(f"{origin}: train.report_to={shown}: kubeflow reports only inside a Kubeflow TrainJob "
                        f"(KUBEFLOW_TRAINER_SERVER_URL is not set); drop it: train.report_to="
                        f"{_show([n for n in names if n != 'kubeflow'])}")
    missing = [name for name in names if not _available(name)]
    if missing:
        packages = " ".join(_PIP.get(name, name) for name in missing)
        are, it = ("is", "it") if len(missing) == 1 else ("are", "them")
        raise UserError(f"{origin}: train.report_to={shown}: {', '.join(missing)} {are} not installed; pip install "
                        f"{packages} (or drop {it}: train.report_to={_show([n for n in names if n not in missing])})")


def _available(name: str) -> bool:
    if name == "comet_ml":
        # is_comet_available() also wants a Comet API key; CometCallback itself only wants the package,
        # and comet-ml runs offline without a key, so only the package is checked.
        return importlib.util.find_spec("comet_ml") is not None
    check = getattr(hf, _CHECK_NAMES.get(name, f"is_{name}_available"), None)
    # A tracker from a newer transformers with a check named otherwise: its callback reports it itself.
    return check is None or bool(check())


def _show(names: list) -> str:
    """The value as a user would write it in an override."""
    if not names:
        return "none"
    words = ["null" if name is None else str(name) for name in names]
    return words[0] if len(words) == 1 else f"[{', '.join(words)}]"
