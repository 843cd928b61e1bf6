"""Knowledge distillation (`recipe: causal_lm.distill`): a student learns the teacher's next-token distribution.

Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network" (2015), https://arxiv.org/abs/1503.02531:
at every token that carries loss the student is pulled towards the data's next token (cross-entropy) and towards
the teacher's whole distribution over the vocabulary, both softened by a temperature T:

    loss = (1 - alpha) * CE(student, data) + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))

T^2 keeps the gradient of the soft term the same size whatever T is (the paper's section 2). alpha = 0 is plain
SFT on the same data: the "student without a teacher" row to compare with.

Why not TRL's own: its DistillationTrainer and experimental GKDTrainer train on replies the student generates
(on-policy, Agarwal et al. 2024) and have no cross-entropy term; GKD off-policy (lmbda 0) uses the divergence
alone, not softened by its `temperature` (which only samples), and its own collator masks only the last reply.
This is the classic off-policy recipe on TRL's SFTTrainer, changed only through its public `compute_loss` hook, on
the tokens tunelab's SFT trains (data.loss_on); tests check the KL term against GKD's generalized JSD at beta 0.

The student is the recipe's model (`model:`), so any checkpoint, run or hub model with the teacher's vocabulary
can be one. `train.student_layers` cuts it to fewer decoder layers, evenly spaced, first and last kept (DistilBERT
initialised its student from every other teacher layer, Sanh et al. 2019); `train.student_init: fresh` keeps only
the shape and draws new weights: a student from scratch.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
import transformers
from trl import SFTConfig

from tunelab.errors import UserError
from tunelab.trainers import SFTTrainerLabelPositions

STUDENT_INITS = ("copy", "fresh")


@dataclass
class DistillConfig(SFTConfig):
    """SFTConfig plus the distillation settings, so that `train:` takes them like any other trainer argument (and an
    unknown key still fails). Names as TRL's GKDConfig where they mean the same."""

    teacher_model_name_or_path: str | None = field(default=None, metadata={
        "help": "The teacher: a tunelab run directory (an adapter is merged), a local or hub checkpoint, or an "
                "embedded default. It must share the student's vocabulary."})
    temperature: float = field(default=2.0, metadata={
        "help": "Softens both distributions before the KL term (T in Hinton et al.); the term is scaled by T^2."})
    alpha: float = field(default=0.5, metadata={
        "help": "Weight of the teacher's term; 1 - alpha weighs the data's cross-entropy. 0: plain SFT."})
    student_layers: int | None = field(default=None, metadata={
        "help": "Cut the student (the recipe's model) to this many decoder layers, evenly spaced with the first and "
                "last kept. None: all its layers."})
    student_init: str = field(default="copy", metadata={
        "help": "copy: the student starts from the model's weights (of the layers kept); fresh: from new random "
                "weights of the same shape (a student from scratch)."})

    def __post_init__(self):
        super().__post_init__()
        if self.temperature <= 0:
            raise ValueError(f"temperature = {self.temperature} should be > 0")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha = {self.alpha} should be in [0, 1] (0: no teacher, 1: the teacher alone)")
        if self.student_layers is not None and self.student_layers < 1:
            raise ValueError(f"student_layers = {self.student_layers} should be >= 1")
        if self.student_init not in STUDENT_INITS:
            raise ValueError(f"student_init = {self.student_init!r} should be one of {', '.join(STUDENT_INITS)}")


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)) summed over rows of (N, V) logits.

    By hand, one row, V = 2: teacher logits (0, 0) give p = (0.5, 0.5); student logits (ln 3, 0) at T = 1 give
    q = (0.75, 0.25) and KL = 0.5 ln(0.5 / 0.75) + 0.5 ln(0.5 / 0.25) = 0.143841. At T = 2 the student's become
    (ln 3 / 2, 0), q = (0.633975, 0.366025), KL = 0.037252, times T^2 = 0.149009.
    """
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)  # (N, V)
    log_p = F.log_softmax(teacher_logits.float() / temperature, dim=-1)  # (N, V)
    return temperature ** 2 * F.kl_div(log_q, log_p, log_target=True, reduction="sum")


class DistillationTrainer(SFTTrainerLabelPositions):
    """SFTTrainer whose training loss adds the teacher's term. Both models run only at the positions whose next
    token carries loss (the model's own `logits_to_keep`), as SFTTrainerLabelPositions does for the student."""

    def __init__(self, *args, teacher_model, **kwargs):
        super().__init__(*args, **kwargs)
        teacher_model.eval().requires_grad_(False)
        self.teacher_model = self.accelerator.prepare_model(teacher_model, evaluation_mode=True)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        alpha = self.args.alpha
        if alpha == 0 or return_outputs or not model.training:  # no teacher, or the eval loss: SFT's own
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        targets = inputs["labels"][:, 1:]  # position t predicts token t + 1
        keep = (targets != -100).any(dim=0).nonzero().squeeze(-1)  # (K,) positions some row takes loss after
        targets = targets[:, keep]  # (B, K)
        forward_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        student = model(**forward_inputs, use_cache=False, logits_to_keep=keep).logits  # (B, K, V)
        with torch.no_grad():
            teacher = self.teacher_model(**forward_inputs, use_cache=False, logits_to_keep=keep).logits  # (B, K, V)
        scored = targets != -100  # (B, K)
        ce = F.cross_entropy(student.flatten(0, 1).float(), targets.flatten(), ignore_index=-100, reduction="sum")
        kl = soft_kl(student[scored], teacher[scored], self.args.temperature)
        count = scored.sum() if num_items_in_batch is None else num_items_in_batch
        loss = ((1 - alpha) * ce + alpha * kl) / torch.as_tensor(count).clamp(min=1)
        # As TRL's and the Trainer's: num_items_in_batch counts every rank's tokens, and DDP averages gradients.
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        return loss


def kept_layers(total: int, keep: int) -> list[int]:
    """Indices of `keep` of `total` layers, evenly spaced, first and last kept: 4 -> 2 keeps (0, 3); 30 -> 10 keeps
    (0, 3, 6, 10, 13, 16, 19, 23, 26, 29)."""
    if keep == 1:
        return [0]
    return [round(i * (total - 1) / (keep - 1)) for i in range(keep)]


def make_student(model, layers: int | None, init: str, attn_implementation: str, at: str):
    """The student: `model` cut to `layers` decoder layers (its weights copied, or fresh ones with init=fresh).

    Built from the changed config and loaded with a renumbered state dict, so the student is an ordinary model of
    its class: it saves, reloads and generates like any other (its attention layers know their new indices)."""
    total = model.config.num_hidden_layers
    layers = total if layers is None else layers
    if layers > total:
        raise UserError(f"{at}: train.student_layers = {layers}, but the model has {total} decoder layers")
    if layers == total and init == "copy":
        return model
    keep = kept_layers(total, layers)
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = layers
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in keep]
    student = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation,
                                                            dtype=model.dtype)
    student.generation_config = copy.deepcopy(model.generation_config)
    if init == "fresh":
        return student
    renumber = {old: new for new, old in enumerate(keep)}
    state = {}
    for key, value in model.state_dict().items():
        found = re.search(r"\.layers\.(\d+)\.", key)
        if found is None:
            state[key] = value
        elif int(found.group(1)) in renumber:
            state[key[:found.start()] + f".layers.{renumber[int(found.group(1))]}." + key[found.end():]] = value
    student.load_state_dict(state, strict=True)
    return student


def check_teacher(teacher, teacher_tokenizer, student, tokenizer, name: str, at: str) -> None:
    """The KL term compares distributions over the same token ids: same vocabulary, same output size."""
    if teacher_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise UserError(f"{at}: the teacher {name} has another vocabulary than the student "
                        f"({len(teacher_tokenizer)} vs {len(tokenizer)} tokens); distillation compares next-token "
                        f"distributions id by id, so pick a teacher of the same tokenizer")
    sizes = (teacher.get_output_embeddings().weight.shape[0], student.get_output_embeddings().weight.shape[0])
    if sizes[0] != sizes[1]:
        raise UserError(f"{at}: the teacher {name} scores {sizes[0]} token ids and the student {sizes[1]}; "
                        f"resize one so that both match")
