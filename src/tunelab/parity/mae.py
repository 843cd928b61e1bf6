"""MAE (tunelab.scratch.mae) against transformers' ViTMAEForPreTraining, with a tiny random config and a fixed
`noise=`, so both models hide the same patches."""

import functools

import torch
from transformers import ViTMAEConfig as HFViTMAEConfig
from transformers import ViTMAEForPreTraining as HFViTMAEForPreTraining
from transformers.models.vit_mae.modeling_vit_mae import ViTMAEDecoder, ViTMAEEmbeddings

from tunelab.parity import Check
from tunelab.scratch import mae

# 4 x 4 = 16 patches; a decoder narrower than the encoder (16 vs 32), as in the paper (512 vs 768+); weights 10x
# the usual std, so the predicted pixels are of the targets' size (std 0.8, not 0.08) and a wrong one shows
TINY = dict(image_size=32, patch_size=8, num_channels=3, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, decoder_hidden_size=16, decoder_intermediate_size=32, decoder_num_hidden_layers=2,
            decoder_num_attention_heads=2, initializer_range=0.2)
N = 16


@functools.cache
def _outputs():
    torch.manual_seed(0)
    ref = HFViTMAEForPreTraining(HFViTMAEConfig(**TINY)).eval()
    # Built from a config, transformers 5.x leaves these four at zero (the position tables included), and zeros
    # would hide a swapped or missing one: random values exercise every row, the [CLS] position's too.
    with torch.no_grad():
        for name in ("vit.embeddings.cls_token", "vit.embeddings.position_embeddings", "decoder.mask_token",
                     "decoder.decoder_pos_embed"):
            ref.get_parameter(name).normal_()
    ours = mae.MAEForPreTraining(mae.MAEConfig.from_hf(ref.config)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    pixel_values, noise = torch.randn(3, 3, 32, 32), torch.rand(3, N)
    with torch.no_grad():
        expected = ref(pixel_values=pixel_values, noise=noise)
        loss, logits, mask, ids_restore = ours(pixel_values, noise=noise)
        ref.config.norm_pix_loss = ours.cfg.norm_pix_loss = True  # the same models, so no second build
        norm_pix = (ours(pixel_values, noise=noise)[0] - ref(pixel_values=pixel_values, noise=noise).loss).abs()
    return {"loss": (loss - expected.loss).abs().item(), "logits": (logits - expected.logits).abs().max().item(),
            "mask": (mask - expected.mask).abs().max().item(),
            "ids_restore": (ids_restore - expected.ids_restore).abs().max().item(), "norm_pix_loss": norm_pix.item()}


def _random_masking():
    """Kept tokens, mask and ids_restore at two ratios: 0.75 keeps 4 of 16, 0.6 keeps int(6.4) = 6."""
    x, noise = torch.randn(3, N, 8), torch.rand(3, N)
    diff = 0.0
    for ratio in (0.75, 0.6):
        ref = ViTMAEEmbeddings(HFViTMAEConfig(**TINY, mask_ratio=ratio))
        for got, expected in zip(mae.random_masking(x, ratio, noise), ref.random_masking(x, noise=noise), strict=True):
            diff = max(diff, (got - expected).abs().max().item())
    return diff


def _positions():
    """The fixed 2-D sin-cos tables our modules start from, against the ones transformers' modules build."""
    cfg = HFViTMAEConfig(**TINY)
    encoder, decoder = ViTMAEEmbeddings(cfg), ViTMAEDecoder(cfg, num_patches=N)
    encoder.initialize_weights()  # a bare ViTMAEEmbeddings is not filled at construction; the decoder is
    ours = mae.MAEForPreTraining(mae.MAEConfig.from_hf(cfg))
    return max((ours.vit.embeddings.position_embeddings - encoder.position_embeddings).abs().max().item(),
               (ours.decoder.decoder_pos_embed - decoder.decoder_pos_embed).abs().max().item())


_REF = "transformers ViTMAEForPreTraining(noise=)"
CHECKS = [
    Check("mae random_masking (kept tokens, mask, ids_restore)", "transformers ViTMAEEmbeddings.random_masking",
          _random_masking, 0.0),
    Check("mae 2-D sin-cos positions (encoder, decoder)", "transformers ViTMAEEmbeddings/ViTMAEDecoder init",
          _positions, 1e-7),
    Check("mae mask", _REF, lambda: _outputs()["mask"], 0.0),
    Check("mae ids_restore", _REF, lambda: _outputs()["ids_restore"], 0.0),
    Check("mae logits (pixels of every patch)", _REF, lambda: _outputs()["logits"], 1e-5),
    Check("mae loss (MSE on hidden patches)", _REF, lambda: _outputs()["loss"], 1e-5),
    Check("mae loss, norm_pix_loss=True", _REF, lambda: _outputs()["norm_pix_loss"], 1e-5),
]
