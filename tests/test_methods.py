"""Every fine-tuning method trains two steps on the tiny Qwen2 and on the real MiniLM, changes the model, saves,
reloads to the scores it had, and merges or refuses; the methods' trainer hooks do what they say."""

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from conftest import REPO, assert_user_error, run_cli
from tunelab import adapters, method_hooks, own_methods
from tunelab.config import load_recipe
from tunelab.errors import UserError

METHODS = ["bitfit", "embedding", "last_layers", "ln_tuning", "bottleneck", "ia3", "adalora", "dora",
           "gradual_unfreeze"]
SFT = REPO / "recipes" / "qwen2" / "sft_lora.yaml"
CLASSIFY = REPO / "recipes" / "bert" / "classify_lora.yaml"
QWEN_QUICK = ["train.max_steps=2", "train.save_strategy=no", "eval.max_samples=4", "train.logging_steps=1",
              "train.per_device_train_batch_size=4"]
BERT_QUICK = ["train.max_steps=2", "train.save_strategy=no", "eval.max_samples=8", "data.max_train_samples=16",
              "train.per_device_train_batch_size=4", "train.logging_steps=1"]
PROBE = torch.tensor([[5, 17, 42, 8, 61, 3]])  # ids inside every vocabulary here, the 64-token toys too


def _metrics(run) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=PROBE).logits


@pytest.mark.parametrize("method", METHODS)
def test_method_on_qwen2_trains_reloads_and_merges_or_refuses(method, tmp_path, capsys):
    from tunelab.families import causal_lm

    run = tmp_path / method
    code, out, err = run_cli(capsys, "train", SFT, f"adapter.method={method}", *QWEN_QUICK, "--output-dir", run)
    assert code == 0, err
    metrics = _metrics(run)
    if method == "gradual_unfreeze":
        assert metrics["trainable_params"] == metrics["total_params"] and (run / "model").is_dir()
        assert [e["group"] for e in metrics["train"]["unfreeze_schedule"]][-1] == "embeddings"
    else:
        assert 0 < metrics["trainable_params"] < metrics["total_params"]
    if method not in adapters.KEYS or "r" not in adapters.KEYS[method]:  # the LoRA recipe's r, alpha... are named
        assert f"adapter.method={method} does not use adapter.r, adapter.alpha" in out
    if method == "adalora":
        assert metrics["train"]["adalora"]["total_step"] == 2  # the budget follows the run's real length

    loaded, _ = causal_lm.load_run(run)
    base, _ = causal_lm.base_model_of(run)
    assert (_logits(loaded) - _logits(base)).abs().max() > 1e-6, "training changed nothing, or the reload lost it"
    code, _, err = run_cli(capsys, "eval", run)
    assert code == 0, err
    assert _metrics(run)["eval"]["perplexity"] == pytest.approx(metrics["eval"]["perplexity"], rel=1e-4)

    if method == "gradual_unfreeze":
        return
    if method in adapters.MERGEABLE:
        assert run_cli(capsys, "merge", run, tmp_path / "merged")[0] == 0
        merged = Qwen2ForCausalLM.from_pretrained(tmp_path / "merged")
        assert (_logits(merged) - _logits(loaded)).abs().max() < 1e-4
    else:
        assert_user_error(capsys, r"bottleneck adapter cannot be merged", "merge", run, tmp_path / "merged")
        assert not (tmp_path / "merged").exists()


@pytest.mark.parametrize("method", METHODS)
def test_method_on_minilm_classifies_and_reloads(method, tmp_path, capsys):
    run = tmp_path / method
    code, _, err = run_cli(capsys, "train", CLASSIFY, f"adapter.method={method}", *BERT_QUICK, "--output-dir", run)
    assert code == 0, err
    metrics = _metrics(run)
    assert metrics["trainable_params"] <= metrics["total_params"]
    if method != "gradual_unfreeze":
        assert metrics["trainable_params"] < metrics["total_params"]
    assert run_cli(capsys, "eval", run)[0] == 0  # the reloaded run scores what the trained one did
    assert _metrics(run)["eval"]["accuracy"] == pytest.approx(metrics["eval"]["accuracy"])


def test_lora_options_train_and_reload(tmp_path, capsys):
    """rsLoRA, PiSSA's start (which rewrites the base weights: the reload must redo it) and LoRA+ in one run."""
    run = tmp_path / "options"
    options = ["adapter.use_rslora=true", "adapter.init=pissa", "adapter.loraplus_lr_ratio=16"]
    code, out, err = run_cli(capsys, "train", SFT, *options, *QWEN_QUICK, "--output-dir", run)
    assert code == 0 and "note:" not in out, err
    saved = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert saved["use_rslora"] is True and saved["init_lora_weights"] == "pissa"
    before = _metrics(run)["eval"]["perplexity"]
    assert run_cli(capsys, "eval", run)[0] == 0
    assert _metrics(run)["eval"]["perplexity"] == pytest.approx(before, rel=1e-4)


# ---------------------------------------------------------------- units

def test_own_methods_train_what_they_name():
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2)
    recipe = load_recipe(SFT)

    def trained(method, **settings):
        recipe.adapter.method = method
        for key, value in settings.items():
            setattr(recipe.adapter, key, value)
        model = own_methods.apply(Qwen2ForCausalLM(config), recipe)
        return {n for n, p in model.named_parameters() if p.requires_grad}

    assert trained("bitfit") == {f"model.layers.{i}.self_attn.{p}_proj.bias" for i in range(3) for p in "qkv"}
    assert trained("embedding") == {"model.embed_tokens.weight"}
    assert {n.split(".")[2] for n in trained("last_layers", trainable_layers=2)} == {"1", "2"}
    with_bottleneck = trained("bottleneck", bottleneck_size=4)
    assert sum(".bottleneck." in n for n in with_bottleneck) == 3 * 2 * 4  # 2 places, down/up weight and bias
    assert {n for n in with_bottleneck if ".bottleneck." not in n} == {n for n in with_bottleneck if "norm" in n}


def test_bottleneck_starts_as_the_pretrained_model():
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    base = Qwen2ForCausalLM(config).eval()
    expected = _logits(base)
    recipe = load_recipe(SFT, ["adapter.method=bottleneck", "adapter.bottleneck_size=8"])
    assert torch.equal(_logits(own_methods.apply(base, recipe)), expected)


def test_bitfit_refuses_a_model_without_biases():
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2))
    with pytest.raises(UserError, match="llama has no bias terms, so bitfit would train nothing"):
        own_methods.check_fits(load_recipe(SFT, ["adapter.method=bitfit"]), llama)


def test_unused_adapter_keys_are_named_and_used_ones_are_not():
    assert adapters.unused_keys(load_recipe(SFT, ["adapter.method=ia3"])) == [
        "adapter.r", "adapter.alpha", "adapter.dropout", "adapter.target_modules"]
    assert adapters.unused_keys(load_recipe(SFT, ["adapter.method=dora"])) == []
    assert adapters.unused_keys(load_recipe(SFT, ["adapter.method=last_layers", "adapter.trainable_layers=1"])) == [
        "adapter.r", "adapter.alpha", "adapter.dropout", "adapter.target_modules"]
    vit_lora = load_recipe(REPO / "recipes" / "vit" / "classify_lora.yaml", [])  # target_modules: [q_proj, v_proj]
    assert adapters.unused_keys(vit_lora) == []
    assert adapters.unused_keys(load_recipe(REPO / "recipes" / "vit" / "classify_lora.yaml", ["adapter.method=bitfit"])) == [
        "adapter.r", "adapter.alpha", "adapter.dropout", "adapter.target_modules"]


def test_gradual_unfreezing_opens_one_group_at_a_time_from_the_top():
    from transformers import TrainerControl, TrainerState, TrainingArguments

    config = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2)
    model = Qwen2ForCausalLM(config)
    hook = method_hooks.GradualUnfreezing(unfreeze_epochs=1.0)
    state, args = TrainerState(max_steps=16), TrainingArguments("unused", use_cpu=True, report_to="none")
    hook.on_train_begin(args, state, TrainerControl(), model=model, train_dataloader=range(8))

    def training():
        return {n.split(".")[2] if ".layers." in n else n for n, p in model.named_parameters() if p.requires_grad}

    assert training() == {"2", "model.norm.weight", "lm_head.weight"}  # the top block, the final norm, the head
    for step, opened in ((1, {"2"}), (2, {"1", "2"}), (4, {"0", "1", "2"}), (6, {"0", "1", "2", "embed"})):
        state.global_step = step
        hook.on_step_begin(args, state, TrainerControl())
        assert {g if g in {"0", "1", "2"} else "embed" for g in training() if "norm" not in g and "head" not in g} \
            == opened
    assert [(e["step"], e["group"]) for e in hook.log] == [(0, "model.layers.2"), (2, "model.layers.1"),
                                                            (4, "model.layers.0"), (6, "embeddings")]


def test_loraplus_gives_b_its_own_learning_rate():
    import peft

    model = peft.get_peft_model(torch.nn.Sequential(torch.nn.Linear(8, 8)),
                                peft.LoraConfig(r=2, target_modules=["0"]))
    recipe = load_recipe(SFT, ["adapter.loraplus_lr_ratio=16"])
    args = type("Args", (), {"learning_rate": 1e-3, "weight_decay": 0.0, "adam_beta1": 0.9, "adam_beta2": 0.999,
                             "adam_epsilon": 1e-8})
    factory, kwargs = method_hooks.trainer_kwargs(recipe, args)["optimizer_cls_and_kwargs"]
    optimizer = factory()(model, **kwargs)
    rates = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    layer = model.base_model.model[0]
    assert rates[id(layer.lora_A["default"].weight)] == pytest.approx(1e-3)
    assert rates[id(layer.lora_B["default"].weight)] == pytest.approx(16e-3)
    assert method_hooks.trainer_kwargs(load_recipe(SFT), args) == {}


def test_clip_refuses_the_methods_it_does_not_train(capsys):
    assert_user_error(capsys, r"adapter.method=bitfit.*CLIP.*lora or full", "validate",
                      REPO / "recipes" / "clip" / "finetune_lora.yaml", "adapter.method=bitfit")
