"""CLIP (tunelab.scratch.clip) against transformers' CLIPModel, with a tiny random config."""

import functools

import torch
from transformers import CLIPConfig as HFCLIPConfig
from transformers import CLIPModel as HFCLIPModel

from tunelab.parity import Check
from tunelab.scratch import clip

VOCAB, PAD, BOS, EOS = 100, 0, 1, 3  # EOS is not the largest id: pooling by argmax would pick a word


@functools.cache
def _outputs(eos_token_id=EOS):
    torch.manual_seed(0)
    # towers of different widths (32 and 48) so a swapped projection cannot go unnoticed
    text = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=16, bos_token_id=BOS, eos_token_id=eos_token_id, pad_token_id=PAD)
    vision = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  image_size=32, patch_size=8)
    ref = HFCLIPModel(HFCLIPConfig(text_config=text, vision_config=vision, projection_dim=24)).eval()
    ours = clip.CLIPModel(clip.CLIPConfig.from_hf(ref.config)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)

    # [BOS] words [EOS] [PAD]..., of different lengths
    input_ids = torch.full((3, 12), PAD)
    for row, length in enumerate([12, 7, 4]):
        input_ids[row, :length] = torch.randint(EOS + 1, VOCAB, (length,))
        input_ids[row, 0], input_ids[row, length - 1] = BOS, EOS
    attention_mask = (torch.arange(12)[None, :] < torch.tensor([12, 7, 4])[:, None]).long()
    pixel_values = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = ref(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
                       return_loss=True)
        expected_text = ref.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        expected_image = ref.get_image_features(pixel_values=pixel_values).pooler_output
        got_logits, got_loss = ours(input_ids, pixel_values)
        got_text, got_image = ours.get_text_features(input_ids), ours.get_image_features(pixel_values)
    return {
        "text": (got_text - expected_text).abs().max().item(),
        "image": (got_image - expected_image).abs().max().item(),
        "logits": (got_logits - expected.logits_per_image).abs().max().item(),
        "loss": (got_loss - expected.loss).abs().item(),
    }


_REF = "transformers CLIPModel"
CHECKS = [
    Check("clip image embeddings (projected, before normalizing)", "transformers CLIPModel.get_image_features",
          lambda: _outputs()["image"], 1e-5),
    Check("clip text embeddings (pooled at end-of-text, projected)", "transformers CLIPModel.get_text_features",
          lambda: _outputs()["text"], 1e-5),
    Check("clip text embeddings, legacy eos_token_id=2 (argmax pooling)", "transformers CLIPModel.get_text_features",
          lambda: _outputs(eos_token_id=2)["text"], 1e-5),
    Check("clip logits_per_image", _REF, lambda: _outputs()["logits"], 1e-5),
    Check("clip contrastive loss (symmetric InfoNCE)", _REF, lambda: _outputs()["loss"], 1e-5),
]
