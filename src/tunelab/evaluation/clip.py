"""Score a CLIP-style model on a recipe's eval data: image<->text recall@k over the eval pairs and zero-shot
classification accuracy on labelled images (class names put in the recipe's prompt templates)."""

from __future__ import annotations

from tunelab.config import Recipe
from tunelab.data.images import decode_images
from tunelab.data.readers import Records
from tunelab.evaluation.retrieval import embed_images, embed_texts, recall_at_k, zero_shot_accuracy


def evaluate(model, tokenizer, image_processor, recipe: Recipe, pairs: Records, labelled: Records | None) -> dict:
    """Recall keys first (i2t_recall@1 leads), then zero-shot accuracy, then what was skipped and the settings."""
    batch, on_error = recipe.eval.batch_size, recipe.data.on_image_error
    images, kept, skipped = decode_images(pairs, on_error)
    image_embeds = embed_images(model, image_processor, images, batch)
    text_embeds = embed_texts(model, tokenizer, [row["caption"] for row in kept], batch)
    metrics = recall_at_k(image_embeds, text_embeds, recipe.eval.recall_k)
    metrics["eval_pairs"] = len(kept)
    metrics["eval_images_skipped"] = skipped
    if labelled is not None:
        images, kept, skipped = decode_images(labelled, on_error)
        classes = sorted({row["label"] for row in kept})
        templates = recipe.eval.templates
        prompts = [template.format(name) for name in classes for template in templates]
        class_text = embed_texts(model, tokenizer, prompts, batch)
        metrics |= zero_shot_accuracy(embed_images(model, image_processor, images, batch), class_text,
                                      [classes.index(row["label"]) for row in kept],
                                      templates_per_class=len(templates), class_names=classes)
        metrics["zero_shot_images"] = len(kept)
        metrics["zero_shot_images_skipped"] = skipped
        metrics["zero_shot_templates"] = templates
    return metrics
