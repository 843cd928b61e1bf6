"""Post-training quantization of a run's linear layers: `tunelab quantize RUN OUT --method M`.

| method       | what                                                        | saved as                               |
|--------------|-------------------------------------------------------------|----------------------------------------|
| int8         | bitsandbytes LLM.int8 (Dettmers et al. 2022): int8 weights  | int8 weights + scales (save_pretrained)|
|              | with one scale per row, outlier features kept in fp16       |                                        |
| nf4          | bitsandbytes 4-bit NormalFloat (QLoRA, Dettmers et al.      | packed 4-bit weights + block scales    |
|              | 2023), blocks of 64 weights, double-quantized scales        | (save_pretrained)                      |
| dynamic-int8 | torch's dynamic quantization: int8 weights, activations     | float weights; quantized again on load |
|              | quantized per batch at run time, int8 matmuls (fbgemm/x86)  | (torch cannot save it)                 |

The embeddings and the LM head stay in float in every method (bitsandbytes skips the output layer; torch's
dynamic quantization is given the decoder's nn.Linear modules only). https://arxiv.org/abs/2208.07339,
https://arxiv.org/abs/2305.14314, https://pytorch.org/docs/stable/quantization.html

torch 2.13 marks `torch.ao.quantization` deprecated (its successor, torchao, is another package); the warning is
silenced here, and the README says so. bitsandbytes int8 and nf4 load, run and save on this CPU build too (its
own CPU kernels); whether they are faster than float there is measured in the README.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch
import transformers

METHODS = ("int8", "nf4", "dynamic-int8")


def unavailable(method: str) -> str | None:
    """Why `method` cannot run on this machine, or None."""
    if method in ("int8", "nf4") and importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed (pip install bitsandbytes)"
    if method == "dynamic-int8":
        engines = [e for e in torch.backends.quantized.supported_engines if e != "none"]
        if not engines:
            return "this torch build has no quantized engine (fbgemm, x86 or qnnpack) for dynamic int8"
    return None


def bnb_config(method: str) -> transformers.BitsAndBytesConfig:
    if method == "int8":
        return transformers.BitsAndBytesConfig(load_in_8bit=True)
    return transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                           bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.float32)


def save_bnb(float_dir: Path, model_dir: Path, method: str) -> None:
    """Load the float model saved in float_dir quantized by bitsandbytes, and save it: config.json records the
    quantization, so `from_pretrained(model_dir)` loads it quantized again with no other setting."""
    model = transformers.AutoModelForCausalLM.from_pretrained(float_dir, quantization_config=bnb_config(method))
    model.save_pretrained(model_dir)


def dynamic_int8(model):
    """The model with its decoder's nn.Linear layers replaced by torch's dynamically quantized int8 ones."""
    head = model.get_output_embeddings()
    linears = {name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m is not head}
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated in torch 2.13; it still runs
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, linears, dtype=torch.qint8)


def in_memory_mb(model) -> float:
    """Megabytes the model's weights take in memory. A dynamic int8 layer keeps its weight in packed params that
    model.parameters() does not list, so the state dict is read: one byte per int8 weight, tied tensors once."""
    seen, total = set(), 0
    for value in model.state_dict().values():
        for t in value if isinstance(value, tuple) else (value,):
            if not isinstance(t, torch.Tensor):
                continue
            if t.is_quantized:
                total += t.numel()
            elif t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                total += t.numel() * t.element_size()
    return round(total / 2**20, 3)
