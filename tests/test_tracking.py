"""train.report_to: a tracker that cannot start is one line naming what to install; TensorBoard writes its
event files inside the run directory."""

import glob
import os

import pytest
import torch
import transformers
from transformers.integrations import integration_utils as hf

from tunelab import tracking
from tunelab.errors import UserError
from tunelab.tracking import check_trackers

AT = "recipes/qwen2/sft_lora.yaml:12"


def error(report_to) -> str:
    with pytest.raises(UserError) as e:
        check_trackers(report_to, AT)
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"{AT}: train.report_to="), message
    return message


def missing(monkeypatch, *names):
    for name in names:
        monkeypatch.setattr(hf, tracking._CHECK_NAMES.get(name, f"is_{name}_available"), lambda: False)


@pytest.mark.unit
@pytest.mark.parametrize("name, pip", [("wandb", "wandb"), ("mlflow", "mlflow"), ("azure_ml", "azureml-core"),
                                       ("flyte", "flytekit"), ("swanlab", "swanlab")])
def test_missing_package_names_what_to_install(monkeypatch, name, pip):
    missing(monkeypatch, name)
    assert error(name) == (f"{AT}: train.report_to={name}: {name} is not installed; "
                           f"pip install {pip} (or drop it: train.report_to=none)")
    assert error([name]).endswith(f"pip install {pip} (or drop it: train.report_to=none)")


@pytest.mark.unit
def test_installed_tracker_passes(monkeypatch):
    monkeypatch.setattr(hf, "is_wandb_available", lambda: True)
    check_trackers("wandb", AT)
    check_trackers(["wandb"], AT)


@pytest.mark.unit
def test_list_keeps_the_trackers_that_are_there(monkeypatch):
    monkeypatch.setattr(hf, "is_tensorboard_available", lambda: True)
    missing(monkeypatch, "wandb", "mlflow")
    assert error(["tensorboard", "wandb"]).endswith(
        "train.report_to=[tensorboard, wandb]: wandb is not installed; pip install wandb "
        "(or drop it: train.report_to=tensorboard)")
    assert error(["wandb", "tensorboard", "mlflow"]).endswith(
        "wandb, mlflow are not installed; pip install wandb mlflow "
        "(or drop them: train.report_to=tensorboard)")


@pytest.mark.unit
def test_comet_needs_only_the_package(monkeypatch):
    # transformers' is_comet_available also wants an API key; CometCallback does not.
    monkeypatch.setattr(hf, "is_comet_available", lambda: False)
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: object() if name == "comet_ml" else None)
    check_trackers("comet_ml", AT)
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None)
    assert "pip install comet-ml " in error("comet_ml")


@pytest.mark.unit
def test_unknown_tracker_lists_the_known_ones():
    message = error("tensorbord")
    assert "unknown tracker 'tensorbord'; known: azure_ml, clearml," in message
    assert all(name in message for name in hf.INTEGRATION_TO_CALLBACK)
    assert message.endswith("(or all, none)")
    assert "several trackers are a list: [a, b]" in error("wandb,tensorboard")


@pytest.mark.unit
def test_every_tracker_transformers_knows_has_a_check():
    for name in hf.INTEGRATION_TO_CALLBACK:
        assert name == "comet_ml" or callable(getattr(hf, tracking._CHECK_NAMES.get(name, f"is_{name}_available")))


@pytest.mark.unit
@pytest.mark.parametrize("report_to", ["none", ["none"], [], "all", ["all"]])
def test_none_and_all_pass_with_nothing_installed(monkeypatch, report_to):
    missing(monkeypatch, *(name for name in hf.INTEGRATION_TO_CALLBACK if name != "comet_ml"))
    check_trackers(report_to, AT)


@pytest.mark.unit
@pytest.mark.parametrize("report_to", ["all", "none", "tensorboard"])
def test_values_normalised_by_training_arguments_pass(tmp_path, monkeypatch, report_to):
    """What TrainingArguments keeps: "all" becomes the installed trackers (which pass by definition)."""
    monkeypatch.delenv("KUBEFLOW_TRAINER_SERVER_URL", raising=False)
    args = transformers.TrainingArguments(output_dir=str(tmp_path), report_to=report_to, use_cpu=True)
    assert isinstance(args.report_to, list)
    check_trackers(args.report_to, AT)


@pytest.mark.unit
def test_values_the_trainer_would_reject():
    assert "none stands alone (train.report_to=none), not in a list" in error(["none", "wandb"])
    assert "all stands alone" in error(["tensorboard", "all"])
    assert error(None).endswith("train.report_to=null: write none for no tracker, or all for every installed one")


@pytest.mark.unit
def test_kubeflow_outside_a_trainjob(monkeypatch):
    monkeypatch.delenv("KUBEFLOW_TRAINER_SERVER_URL", raising=False)
    assert "KUBEFLOW_TRAINER_SERVER_URL is not set); drop it: train.report_to=none" in error("kubeflow")


def test_tensorboard_event_files_land_in_output_dir(tmp_path, monkeypatch):
    """A real Trainer run: the loss is in event files under output_dir (the run's staging directory)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    check_trackers(["tensorboard"], AT)
    torch.manual_seed(0)
    config = transformers.Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=1)
    rows = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 64, (8, 12))]
    out = tmp_path / "run.partial"
    args = transformers.TrainingArguments(output_dir=str(out), report_to=["tensorboard"], max_steps=2, logging_steps=1,
                                          per_device_train_batch_size=4, save_strategy="no", use_cpu=True,
                                          disable_tqdm=True)
    transformers.Trainer(model=transformers.Qwen2ForCausalLM(config), args=args, train_dataset=rows).train()

    events = glob.glob(str(out / "runs" / "*" / "events.out.tfevents.*"))
    assert len(events) == 1, sorted(p.relative_to(out) for p in out.rglob("*"))
    accumulator = EventAccumulator(os.path.dirname(events[0]))
    accumulator.Reload()
    losses = accumulator.Scalars("train/loss")
    assert [e.step for e in losses] == [1, 2] and all(e.value > 0 for e in losses)
