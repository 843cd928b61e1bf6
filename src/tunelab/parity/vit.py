"""ViT (tunelab.scratch.vit) against transformers' ViTModel, with tiny random configs."""

import functools

import torch
from transformers import ViTConfig as HFViTConfig
from transformers import ViTModel as HFViTModel

from tunelab.parity import Check
from tunelab.scratch import vit

TINY = dict(image_size=32, patch_size=8, num_channels=3, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, initializer_range=0.2)  # 10x the usual std: activations where GELU variants differ


@functools.cache
def _outputs(qkv_bias=True, add_pooling_layer=True):
    torch.manual_seed(0)
    # a pooler narrower than the encoder (24 vs 32), so a transposed dense weight cannot load
    ref = HFViTModel(HFViTConfig(**TINY, qkv_bias=qkv_bias, pooler_output_size=24),
                     add_pooling_layer=add_pooling_layer).eval()
    ours = vit.ViTModel(vit.ViTConfig.from_hf(ref.config), add_pooling_layer=add_pooling_layer).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    pixel_values = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = ref(pixel_values=pixel_values)
        got_hidden, got_pooled = ours(pixel_values)
        embeddings = (ours.embeddings(pixel_values) - ref.embeddings(pixel_values)).abs().max().item()
    pooled = (got_pooled - expected.pooler_output).abs().max().item() if add_pooling_layer else 0.0
    return {"embeddings": embeddings, "hidden": (got_hidden - expected.last_hidden_state).abs().max().item(),
            "pooled": pooled}


_REF = "transformers ViTModel"
CHECKS = [
    Check("vit embeddings (patch conv, [CLS], learned positions)", "transformers ViTEmbeddings",
          lambda: _outputs()["embeddings"], 1e-5),
    Check("vit last_hidden_state", _REF, lambda: _outputs()["hidden"], 1e-5),
    Check("vit pooler_output ([CLS], dense, tanh)", _REF, lambda: _outputs()["pooled"], 1e-5),
    Check("vit last_hidden_state, qkv_bias=False, no pooler", "transformers ViTModel(add_pooling_layer=False)",
          lambda: _outputs(qkv_bias=False, add_pooling_layer=False)["hidden"], 1e-5),
]
