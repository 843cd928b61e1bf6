"""Vision-transformer pieces the `vit` recipe family (tunelab.families.vit) builds on.

- backbones: tiny ViT and ViT-MAE configs from `model.scratch`, Pillow image processors, an MAE encoder turned
  into a plain ViT (the backbone classification and DINO start from), and the models of each stage;
- crops: DINO's multi-crop augmentation with Pillow alone (random resized crop, flip, colour jitter, grey);
- dino: DINO's head, loss, student/teacher pair, trainer (compute_loss) and teacher-update callback.
"""
