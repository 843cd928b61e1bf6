"""The launch configs in recipes/accelerate/, read the way `accelerate launch --config_file` reads them.

FSDP and DeepSpeed need GPUs (and DeepSpeed its package), so instead of training, each file goes through
accelerate's own launch path up to the point where processes would start: its config class (unknown top-level
keys and bad distributed types fail there), the launch command (which merges the file into its arguments), the
environment the launcher would give each process, and the FSDP or DeepSpeed plugin a process builds from that
environment (bad sharding, wrap or state-dict values fail there). Sub-keys of fsdp_config and
deepspeed_config that are not launch arguments are dropped silently by accelerate, so they are checked here.
"""

import re

import accelerate.commands.launch as launch
import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import (DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin, patch_environment,
                              prepare_deepspeed_cmd_env, prepare_multi_gpu_env)
from torch.distributed.fsdp import CPUOffloadPolicy, StateDictType
from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

from conftest import REPO

pytestmark = pytest.mark.unit

CONFIGS = REPO / "recipes" / "accelerate"
LAUNCHERS = {"multi_gpu_launcher": "multi_gpu", "deepspeed_launcher": "deepspeed", "simple_launcher": "simple"}


def launched(config_file, monkeypatch) -> tuple[str, object, dict]:
    """(launcher, its merged arguments, the environment each process would get) for a config file."""
    chosen = {}
    for name, kind in LAUNCHERS.items():
        monkeypatch.setattr(launch, name, lambda args, kind=kind: chosen.update(kind=kind, args=args))
    launch.launch_command(launch.launch_command_parser().parse_args(["--config_file", str(config_file), "-m", "tunelab"]))
    kind, args = chosen["kind"], chosen["args"]
    env = {"multi_gpu": prepare_multi_gpu_env, "deepspeed": lambda a: prepare_deepspeed_cmd_env(a)[1],
           "simple": lambda a: {}}[kind](args)
    return kind, args, {k: v for k, v in env.items() if k.startswith(("ACCELERATE_", "FSDP_"))}


def check_sub_keys(config_file) -> None:
    """Every fsdp_config / deepspeed_config key must be a launch argument, as accelerate maps them."""
    config = load_config_from_file(str(config_file))
    known = vars(launch.launch_command_parser().parse_args(["x.py"]))
    for section in ("fsdp_config", "deepspeed_config"):
        for key in getattr(config, section):
            name = key if section != "fsdp_config" or key.startswith("fsdp") else f"fsdp_{key}"
            if name not in known:
                raise ValueError(f"{config_file.name}: {section}.{key} is not an accelerate launch setting")


def fsdp_plugin(env: dict) -> FullyShardedDataParallelPlugin:
    with patch_environment(**env):
        return FullyShardedDataParallelPlugin()


def deepspeed_plugin(env: dict) -> DeepSpeedPlugin:
    with patch_environment(**env):
        return DeepSpeedPlugin()


def test_every_config_is_tested_and_its_header_shows_its_launch_command():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)
    for name in EXPECTED:
        text = (CONFIGS / name).read_text()
        command = rf"^#.*accelerate launch --config_file recipes/accelerate/{name} .*-m tunelab train"
        assert re.search(command, text, re.M), name


def check_cpu_2proc(kind, args, env):
    assert kind == "multi_gpu" and args.nproc_per_node == "2" and env["ACCELERATE_MIXED_PRECISION"] == "no"


def check_single_gpu(kind, args, env):
    assert kind == "simple" and args.num_processes == 1 and args.gpu_ids == "0" and args.mixed_precision == "bf16"


def check_multi_gpu_ddp(kind, args, env):
    assert kind == "multi_gpu" and args.nproc_per_node == "8" and "ACCELERATE_USE_FSDP" not in env
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"


def _check_fsdp(kind, env, offload: bool):
    assert kind == "multi_gpu" and env["ACCELERATE_USE_FSDP"] == "true"
    plugin = fsdp_plugin(env)
    assert plugin.fsdp_version == 2
    assert plugin.reshard_after_forward is True  # FSDP2's full shard (FSDP1: FULL_SHARD)
    assert isinstance(plugin.cpu_offload, CPUOffloadPolicy) is offload
    assert plugin.state_dict_type == StateDictType.FULL_STATE_DICT  # rank 0 writes whole, loadable weights
    assert plugin.auto_wrap_policy is transformer_auto_wrap_policy and plugin.transformer_cls_names_to_wrap is None


def check_fsdp_full_shard(kind, args, env):
    _check_fsdp(kind, env, offload=False)


def check_fsdp_full_shard_cpu_offload(kind, args, env):
    _check_fsdp(kind, env, offload=True)


def _check_deepspeed(kind, env, stage: int):
    assert kind == "deepspeed" and env["ACCELERATE_USE_DEEPSPEED"] == "true"
    plugin = deepspeed_plugin(env)
    zero = plugin.deepspeed_config["zero_optimization"]
    assert zero["stage"] == stage and zero["offload_optimizer"]["device"] == zero["offload_param"]["device"] == "none"
    # Left to the recipe's train: section; a number here would have to match it or the Trainer refuses.
    assert plugin.deepspeed_config["gradient_accumulation_steps"] == "auto"
    assert plugin.deepspeed_config["gradient_clipping"] == "auto"
    return plugin, zero


def check_deepspeed_zero2(kind, args, env):
    plugin, _ = _check_deepspeed(kind, env, stage=2)
    assert plugin.zero3_init_flag is False


def check_deepspeed_zero3(kind, args, env):
    plugin, zero = _check_deepspeed(kind, env, stage=3)
    assert plugin.zero3_init_flag is True
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True  # else save_model cannot write whole weights


def check_multi_node(kind, args, env):
    assert kind == "multi_gpu" and args.nnodes == "2" and args.nproc_per_node == "8" and args.node_rank == 0
    assert args.rdzv_endpoint == "10.0.0.1:29500"  # every machine meets machine 0 there


EXPECTED = {
    "cpu_2proc.yaml": (DistributedType.MULTI_GPU, check_cpu_2proc),
    "single_gpu.yaml": (DistributedType.NO, check_single_gpu),
    "multi_gpu_ddp.yaml": (DistributedType.MULTI_GPU, check_multi_gpu_ddp),
    "fsdp_full_shard.yaml": (DistributedType.FSDP, check_fsdp_full_shard),
    "fsdp_full_shard_cpu_offload.yaml": (DistributedType.FSDP, check_fsdp_full_shard_cpu_offload),
    "deepspeed_zero2.yaml": (DistributedType.DEEPSPEED, check_deepspeed_zero2),
    "deepspeed_zero3.yaml": (DistributedType.DEEPSPEED, check_deepspeed_zero3),
    "multi_node.yaml": (DistributedType.MULTI_GPU, check_multi_node),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_and_launches_with_its_settings(name, monkeypatch):
    distributed_type, check = EXPECTED[name]
    config_file = CONFIGS / name
    assert load_config_from_file(str(config_file)).distributed_type == distributed_type
    check_sub_keys(config_file)
    check(*launched(config_file, monkeypatch))


@pytest.mark.parametrize("edit, error", [
    (("distributed_type: FSDP", "distributed_type: FSDP\nfsdp_sharding: FULL_SHARD"), "unknown keys"),
    (("fsdp_offload_params: false", "fsdp_ofload_params: false"), "not an accelerate launch setting"),
    (("TRANSFORMER_BASED_WRAP", "TRANSFORMER_WRAP"), "Invalid auto wrap policy"),
    (("fsdp_reshard_after_forward: true", "fsdp_reshard_after_forward: FULL_SHARD"), "invalid truth value"),
])
def test_a_mistake_in_a_config_fails_these_checks(edit, error, tmp_path, monkeypatch):
    """The checks above can fail: a top-level typo, a typo inside fsdp_config, a bad value, FSDP1's strategy name
    where FSDP2 wants true/false."""
    broken = tmp_path / "fsdp_full_shard.yaml"
    text = (CONFIGS / "fsdp_full_shard.yaml").read_text()
    assert edit[0] in text
    broken.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(ValueError, match=error):
        load_config_from_file(str(broken))
        check_sub_keys(broken)
        check_fsdp_full_shard(*launched(broken, monkeypatch))
