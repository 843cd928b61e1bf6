"""CLIP evaluation: recall@k and zero-shot accuracy on hand-made embeddings with known answers, and the
embedding helpers and label probabilities on a tiny random CLIPModel against its own forward."""

import re

import numpy as np
import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, PreTrainedTokenizerFast

from tunelab.errors import UserError
from tunelab.evaluation.retrieval import embed_images, embed_texts, probabilities, recall_at_k, zero_shot_accuracy

pytestmark = pytest.mark.unit


def test_identity_pairs_are_all_found():
    eye = torch.eye(10)
    metrics = recall_at_k(eye, eye * 3)  # scale must not matter: embeddings are normalised inside
    for direction in ("image_to_text", "text_to_image"):
        assert metrics[direction] == {"recall@1": 1.0, "recall@5": 1.0, "recall@10": 1.0}
    assert metrics["i2t_recall@1"] == metrics["t2i_recall@10"] == 1.0


def test_swapping_two_captions_loses_two_at_recall_1_only():
    images = torch.eye(10)
    texts = images[[1, 0, *range(2, 10)]]
    metrics = recall_at_k(images, texts)
    for direction in ("image_to_text", "text_to_image"):
        assert metrics[direction]["recall@1"] == pytest.approx(8 / 10)
        assert metrics[direction]["recall@5"] == 1.0  # each swapped pair has exactly one caption above it


def test_directions_differ_on_an_asymmetric_example():
    """Images are one-hot, so sims[i, j] = caption j's i-th coordinate:

        captions      0    1    2        image 0 row: [1, .8, 0]  own 1 is top        -> found
        image 0     1.0   .8    0        image 1 row: [0, .6, 0]  own .6 is top       -> found
        image 1       0   .6    0        image 2 row: [0, 0, 1]   own 1 is top        -> found
        image 2       0    0  1.0        caption 1 column: [.8, .6, 0]  image 0 beats its own image 1

    so image->text recall@1 = 3/3, text->image recall@1 = 2/3, and recall@2 = 1 both ways.
    """
    images = torch.eye(3)
    texts = torch.tensor([[1.0, 0, 0], [0.8, 0.6, 0], [0, 0, 1.0]])
    metrics = recall_at_k(images, texts, ks=(1, 2))
    assert metrics["image_to_text"] == {"recall@1": 1.0, "recall@2": 1.0}
    assert metrics["text_to_image"] == {"recall@1": pytest.approx(2 / 3), "recall@2": 1.0}


def test_ties_count_in_the_pairs_favour():
    same = torch.ones(4, 8)
    assert recall_at_k(same, same, ks=(1,))["i2t_recall@1"] == 1.0


def test_first_recall_1_like_key_is_a_real_recall_at_1():
    metrics = recall_at_k(torch.eye(10), torch.eye(10), ks=(5, 10))
    first = next(key for key in metrics if re.search(r"recall.*1", key))
    assert first == "i2t_recall@1"


def test_too_small_batch_names_the_numbers():
    with pytest.raises(UserError, match=r"batch of 6 pairs is too small for recall@10; use at least 10 pairs"):
        recall_at_k(torch.randn(6, 4), torch.randn(6, 4))


def test_zero_shot_accuracy_and_per_class():
    classes = torch.tensor([[1.0, 0], [0, 1.0]])
    images = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.6, 0.4]])  # predictions 0, 1, 0, 0
    metrics = zero_shot_accuracy(images, classes, [0, 1, 1, 0], class_names=["cat", "dog"])
    assert metrics == {"zero_shot_accuracy": 0.75, "per_class": {"cat": 1.0, "dog": 0.5}}


def test_template_ensembling_changes_a_prediction():
    """The image is [0, 1]. First templates alone: class 0 scores .8, class 1 scores .96, so class 1 wins.
    Ensembled: class 0's templates average to [0, .8] -> cosine 1; class 1's to [.62, .34] -> cosine ~.48."""
    image = torch.tensor([[0.0, 1.0]])
    templates = torch.tensor([[[0.6, 0.8], [-0.6, 0.8]], [[0.28, 0.96], [0.96, -0.28]]])  # (C=2, T=2, D=2)
    assert zero_shot_accuracy(image, templates[:, 0], [0])["zero_shot_accuracy"] == 0.0
    assert zero_shot_accuracy(image, templates, [0])["zero_shot_accuracy"] == 1.0
    flat = zero_shot_accuracy(image, templates.reshape(4, 2), [0], templates_per_class=2)
    assert flat == {"zero_shot_accuracy": 1.0, "per_class": {"0": 1.0}}


def test_zero_shot_needs_two_classes():
    with pytest.raises(UserError, match="at least 2 classes, got 1"):
        zero_shot_accuracy(torch.randn(3, 4), torch.randn(1, 2, 4), [0, 0, 0])


WORDS = ["<pad>", "<bos>", "<unk>", "<eos>", "a", "photo", "of", "cat", "dog", "bird", "."]


@pytest.fixture(scope="module")
def tiny_clip():
    """A random 2-layer CLIP on 32x32 images and a word-level tokenizer whose special ids match the config.
    eos is id 3, not 2: CLIP treats eos_token_id == 2 as a legacy config and pools at the highest id instead."""
    torch.manual_seed(0)
    layers = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    config = CLIPConfig(
        text_config={**layers, "vocab_size": len(WORDS), "max_position_embeddings": 16,
                     "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 3},
        vision_config={**layers, "image_size": 32, "patch_size": 8}, projection_dim=16)
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="<bos> $A <eos>",
                                                           special_tokens=[("<bos>", 1), ("<eos>", 3)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<bos>",
                                        eos_token="<eos>", unk_token="<unk>")
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return CLIPModel(config), tokenizer, processor


def _image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8))


def test_embed_helpers_batch_consistently_and_restore_mode(tiny_clip):
    model, tokenizer, processor = tiny_clip
    model.train()
    texts = ["a cat", "a photo of a dog .", "bird"]  # different lengths: padding must not move the embedding
    text_embeds = embed_texts(model, tokenizer, texts, batch_size=2)
    assert text_embeds.shape == (3, 16)
    torch.testing.assert_close(text_embeds, embed_texts(model, tokenizer, texts, batch_size=3))
    torch.testing.assert_close(text_embeds[2:], embed_texts(model, tokenizer, texts[2:], batch_size=1))
    images = [_image(seed) for seed in range(3)]
    image_embeds = embed_images(model, processor, images, batch_size=2)
    assert image_embeds.shape == (3, 16)
    torch.testing.assert_close(image_embeds, embed_images(model, processor, images, batch_size=3))
    assert model.training and not image_embeds.requires_grad


def test_probabilities_match_clip_forward(tiny_clip):
    model, tokenizer, processor = tiny_clip
    labels, image = ["cat", "dog", "bird"], _image(7)
    probs = probabilities(model, tokenizer, processor, image, labels)
    assert list(probs) == labels and sum(probs.values()) == pytest.approx(1.0)
    text = tokenizer([f"a photo of a {label}." for label in labels], padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        out = model(input_ids=text["input_ids"], attention_mask=text["attention_mask"],
                    pixel_values=processor(images=[image], return_tensors="pt")["pixel_values"])
    torch.testing.assert_close(torch.tensor(list(probs.values())), out.logits_per_image.softmax(-1)[0])


def test_probabilities_need_two_labels(tiny_clip):
    with pytest.raises(UserError, match="at least 2 labels"):
        probabilities(*tiny_clip, _image(0), ["cat"])
