"""DINO, self-distillation with no labels (Caron et al., 2021, https://arxiv.org/abs/2104.14294), on the HF Trainer
through its public hooks: compute_loss, save_model and a TrainerCallback.

A student and a teacher have one architecture: a ViT backbone's class-token feature, then a DINO head (an MLP,
an L2-normalised bottleneck, a weight-normalised last layer of out_dim outputs). Only the student trains. After
each optimizer step the teacher moves toward it, teacher = m * teacher + (1 - m) * student, m rising from
train.teacher_momentum to 1 on a cosine (TeacherUpdate). The loss asks the student's distribution over each crop
to match the teacher's over each other global crop (dino_loss). The teacher's outputs are centred (a running
mean of them is subtracted) and sharpened (a low temperature): centring alone would drive every output to the
uniform distribution, sharpening alone to one class; together they keep the teacher from collapsing.
The reference code: github.com/facebookresearch/dino/blob/main/main_dino.py (DINOLoss, train_one_epoch) and
vision_transformer.py (DINOHead).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

from tunelab.config import Recipe
from tunelab.errors import UserError
from tunelab.vision.backbones import features


def _f(default, help: str):
    return field(default_factory=lambda: list(default), metadata={"help": help}) if isinstance(default, list) \
        else field(default=default, metadata={"help": help})


@dataclass
class DinoArguments(TrainingArguments):
    """TrainingArguments plus DINO's settings, so they are keys of the recipe's train: section (DINO's own
    defaults in brackets where the tiny recipe differs)."""

    out_dim: int = _f(1024, "Outputs of the DINO head: the 'prototypes' the softmax is over [65536].")
    head_hidden_dim: int = _f(512, "Width of the head's MLP [2048].")
    head_bottleneck_dim: int = _f(128, "The L2-normalised bottleneck before the last layer [256].")
    student_temp: float = _f(0.1, "Softmax temperature of the student.")
    teacher_temp: float = _f(0.04, "Softmax temperature of the teacher, lower than the student's: sharpening.")
    teacher_momentum: float = _f(0.996, "EMA momentum of the teacher at the first step; it rises to 1 on a cosine.")
    center_momentum: float = _f(0.9, "EMA momentum of the center subtracted from the teacher's outputs.")
    local_crops: int = _f(8, "Local crops per picture, beside the 2 global crops.")
    global_crop_scale: list[float] = _f([0.4, 1.0], "Share of the picture's area a global crop covers (min, max).")
    local_crop_scale: list[float] = _f([0.05, 0.4], "Share of the picture's area a local crop covers (min, max).")
    local_crop_size: int | None = _f(None, "Side of a local crop in pixels [96 for 224]. None: 3/7 of the global "
                                     "size, rounded to whole patches.")
    hue_jitter: float = _f(0.1, "Largest hue turn of the colour jitter, as a share of the hue circle (0.5: any hue).")
    head_batch_norm: bool = _f(False, "Batch norm in the head's MLP (DINO's use_bn_in_head): it takes out what every "
                               "picture's feature shares, which a freshly initialised small ViT's are mostly.")
    freeze_last_layer_steps: int = _f(0, "The head's last layer keeps its initial weights for this many optimizer "
                                      "steps (DINO's freeze_last_layer: one epoch), which steadies the start.")


def check_settings(args: DinoArguments, recipe: Recipe) -> None:
    """Values DINO cannot train with, at their recipe line."""
    def refuse(key: str, why: str):
        raise UserError(f"{recipe.origin('train.' + key)}: train.{key} = {getattr(args, key)!r} {why}")

    for key in ("student_temp", "teacher_temp"):
        if getattr(args, key) <= 0:
            refuse(key, "should be > 0 (a softmax temperature)")
    for key in ("teacher_momentum", "center_momentum"):
        if not 0 <= getattr(args, key) <= 1:
            refuse(key, "should be in [0, 1] (an EMA momentum)")
    if args.freeze_last_layer_steps < 0:
        refuse("freeze_last_layer_steps", "should be >= 0")
    for key in ("out_dim", "head_hidden_dim", "head_bottleneck_dim"):
        if getattr(args, key) < 1:
            refuse(key, "should be >= 1")
    if args.local_crops < 0:
        refuse("local_crops", "should be >= 0")
    for key in ("global_crop_scale", "local_crop_scale"):
        lo_hi = getattr(args, key)
        if len(lo_hi) != 2 or not 0 < lo_hi[0] <= lo_hi[1] <= 1:
            refuse(key, "should be [min, max] with 0 < min <= max <= 1 (shares of the picture's area)")


class DinoHead(nn.Module):
    """MLP -> L2-normalised bottleneck -> weight-normalised linear layer whose weight norms stay 1 (DINO's
    norm_last_layer): its outputs are cosine similarities to out_dim learned prototypes."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int, bottleneck_dim: int, batch_norm: bool = False):
        super().__init__()
        def block(i: int, o: int) -> list[nn.Module]:
            return [nn.Linear(i, o), *([nn.BatchNorm1d(o)] if batch_norm else []), nn.GELU()]

        self.mlp = nn.Sequential(*block(in_dim, hidden_dim), *block(hidden_dim, hidden_dim),
                                 nn.Linear(hidden_dim, bottleneck_dim))
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        self.last_layer = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        norm = self.last_layer.parametrizations.weight.original0  # (out_dim, 1): each prototype's length
        norm.data.fill_(1.0)
        norm.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in_dim) -> (B, out_dim)
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


class DinoPair(nn.Module):
    """The student (backbone + head), the teacher (a copy that never gets gradients) and the center.
    forward: (global crops (2B, 3, H, W), local crops (nB, 3, h, w)) -> (student outputs ((2 + n)B, K),
    teacher outputs (2B, K)); crops come crop-major: the first B rows are every picture's first crop."""

    main_input_name = "global_crops"

    def __init__(self, backbone: nn.Module, head: DinoHead):
        super().__init__()
        self.student, self.student_head = backbone, head
        self.teacher, self.teacher_head = copy.deepcopy(backbone), copy.deepcopy(head)
        for p in [*self.teacher.parameters(), *self.teacher_head.parameters()]:
            p.requires_grad_(False)
        self.register_buffer("center", torch.zeros(1, head.last_layer.out_features))

    def forward(self, global_crops: torch.Tensor, local_crops: torch.Tensor | None = None):
        # The two sizes go through the backbone apart: a batch holds one picture size.
        student = [self.student_head(features(self.student, global_crops))]
        if local_crops is not None and len(local_crops):
            student.append(self.student_head(features(self.student, local_crops)))
        with torch.no_grad():
            teacher = self.teacher_head(features(self.teacher, global_crops))
        return torch.cat(student), teacher

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        student = [*self.student.parameters(), *self.student_head.parameters()]
        teacher = [*self.teacher.parameters(), *self.teacher_head.parameters()]
        for s, t in zip(student, teacher):
            t.mul_(momentum).add_(s.detach(), alpha=1 - momentum)

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor, momentum: float) -> None:
        batch_center = teacher_out.mean(dim=0, keepdim=True)  # (1, K)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(batch_center)  # every rank's batch, as DINO's all_reduce
            batch_center /= torch.distributed.get_world_size()
        self.center.mul_(momentum).add_(batch_center, alpha=1 - momentum)


def dino_loss(student_out: torch.Tensor, teacher_out: torch.Tensor, center: torch.Tensor, student_temp: float,
              teacher_temp: float, n_crops: int) -> torch.Tensor:
    """Cross-entropy H(teacher, student) averaged over every (teacher global crop, other student crop) pair.

    student_out: (n_crops * B, K), teacher_out: (2 * B, K), both crop-major; center: (1, K).
    Worked by hand, K = 2, B = 1, two crops, center 0, both temperatures 1, teacher [2, 0] for both crops:
    the teacher's distribution is softmax([2, 0]) = [0.8808, 0.1192]. A student that says [0, 0] pays
    -(0.8808 + 0.1192) * ln(0.5) = ln 2 = 0.6931 for each pair, so 0.6931; a student that says [2, 0] pays
    the teacher's entropy, -(0.8808 * ln 0.8808 + 0.1192 * ln 0.1192) = 0.3653.
    """
    student = (student_out / student_temp).log_softmax(dim=-1).chunk(n_crops)
    teacher = ((teacher_out - center) / teacher_temp).softmax(dim=-1).detach().chunk(2)
    total, pairs = student_out.new_zeros(()), 0
    for t, q in enumerate(teacher):
        for v, log_p in enumerate(student):
            if v == t:  # the same view: nothing to predict
                continue
            total = total + (-q * log_p).sum(dim=-1).mean()
            pairs += 1
    return total / pairs


def teacher_momentum(step: int, total_steps: int, start: float) -> float:
    """DINO's cosine schedule from `start` at step 0 to 1 at the last step: 0.996 -> 0.998 halfway -> 1."""
    return 1 - (1 - start) * (math.cos(math.pi * step / max(total_steps, 1)) + 1) / 2


class TeacherUpdate(TrainerCallback):
    """Around every optimizer step: the student's last layer keeps its weights during the first
    train.freeze_last_layer_steps (its gradient is dropped, so the optimizer skips it), and after the step the
    teacher moves toward the student by the step's momentum."""

    def __init__(self):
        self.last_momentum: float | None = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if state.global_step < args.freeze_last_layer_steps:
            for p in model.student_head.last_layer.parameters():
                p.grad = None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.last_momentum = teacher_momentum(state.global_step - 1, state.max_steps, args.teacher_momentum)
        model.update_teacher(self.last_momentum)


class DinoTrainer(Trainer):
    """The Trainer with DINO's loss (compute_loss), its teacher update (a callback) and a run model/ that holds
    the student backbone alone (save_model), the image encoder classification and k-NN load."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher_update = TeacherUpdate()
        self.add_callback(self.teacher_update)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = {k: v for k, v in inputs.items() if k != "return_loss"}  # the collator's flag for evaluation
        student_out, teacher_out = model(**inputs)
        pair = self.accelerator.unwrap_model(model)
        n_crops = student_out.shape[0] * 2 // teacher_out.shape[0]
        a = self.args
        loss = dino_loss(student_out, teacher_out, pair.center, a.student_temp, a.teacher_temp, n_crops)
        if model.training:
            pair.update_center(teacher_out, a.center_momentum)
        return (loss, {"student": student_out, "teacher": teacher_out}) if return_outputs else loss

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Checkpoints (internal calls) keep the whole pair, teacher and center included, for --resume."""
        if _internal_call:
            return super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            self.accelerator.unwrap_model(self.model).student.save_pretrained(output_dir or self.args.output_dir)
