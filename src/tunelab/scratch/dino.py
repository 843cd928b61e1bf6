"""DINO from scratch: self-distillation with no labels. A student learns to match a teacher that is its own
moving average, across different crops of the same image.

Paper: Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers",
https://arxiv.org/abs/2104.14294. Reference code: https://github.com/facebookresearch/dino (DINOLoss in
main_dino.py, DINOHead in vision_transformer.py). transformers has the DINO ViTs but not this loss.

One training step: cut each image into 2 global crops (224 px) and several local crops (96 px); the
teacher sees the 2 global ones, the student all of them; both end in a head of K outputs ("prototypes").
The student's distribution on view j must match the teacher's on global view i, for every i != j: from
a small local crop the student must predict what the teacher sees in the whole image.
Nothing forbids a trivial answer (every image gets the same output), and two opposite tricks hold it off:
  centering: subtract a running mean of the teacher's outputs (no prototype can win for every image);
  sharpening: a low teacher temperature (0.04, against the student's 0.1), so no target is uniform.
Only the student gets gradients; the teacher follows it by an exponential moving average (ema_update).
"""

import torch
import torch.nn.functional as F
from torch import nn


def dino_loss(student_out, teacher_out, center, student_temp=0.1, teacher_temp=0.04):
    """Cross-entropy from the centered, sharpened teacher to the student, over pairs of different views.

    student_out (V, B, K): V views of a batch of B images, the G global views first; teacher_out (G, B, K)
    on the global views; center (K,) or (1, K). The teacher side is detached: no gradient flows into it.

    By hand: K = 2, B = 1, G = 2 global views and 1 local view (V = 3), center 0, ln = natural log.
      teacher outputs t0 = [0.04 ln 3, 0], t1 = [0, 0]; divided by 0.04 and softmaxed:
        q0 = [3/4, 1/4], q1 = [1/2, 1/2]
      student outputs s0 = [0.1 ln 3, 0], s1 = [0, 0], s2 = [0, 0.1 ln 3]; divided by 0.1, log-softmaxed:
        log p0 = [ln 3/4, ln 1/4], log p1 = [ln 1/2, ln 1/2], log p2 = [ln 1/4, ln 3/4]
      the 4 pairs (i, j), i != j, each -sum(q_i * log p_j):
        (0, 1): ln 2                                        = 0.693147
        (0, 2): -(3/4 ln 1/4 + 1/4 ln 3/4)                  = 1.111641
        (1, 0): -(1/2 ln 3/4 + 1/2 ln 1/4)                  = 0.836988
        (1, 2): -(1/2 ln 1/4 + 1/2 ln 3/4)                  = 0.836988
      loss = mean = 3.478764 / 4 = 0.869691. (Pairs (0, 0) and (1, 1) are skipped: a view matched to
      itself would teach nothing.)
    With center = t0 = [0.04 ln 3, 0], view 0's target turns uniform, q0 = [1/2, 1/2], and view 1's
      flips, q1 = [1/4, 3/4]: pairs 0.693147, 0.836988, -(1/4 ln 3/4 + 3/4 ln 1/4) = 1.111641,
      -(1/4 ln 1/4 + 3/4 ln 3/4) = 0.562335; loss = 3.204111 / 4 = 0.801028.
    """
    G = teacher_out.shape[0]
    q = F.softmax((teacher_out - center) / teacher_temp, dim=-1).detach()  # (G, B, K): center, sharpen
    log_p = F.log_softmax(student_out / student_temp, dim=-1)  # (V, B, K)
    ce = -(q[:, None] * log_p[None]).sum(dim=-1).mean(dim=-1)  # (G, V): mean over the batch, per pair (i, j)
    different = ~torch.eye(G, log_p.shape[0], dtype=torch.bool, device=ce.device)  # (G, V): False where i == j
    return ce[different].mean()


class DINOLoss(nn.Module):
    """dino_loss plus the running center: after each step, center = m * center + (1 - m) * (mean teacher output).

    By hand, continuing dino_loss's example with m = 0.9: the batch mean of t0 and t1 is [0.02 ln 3, 0],
    so the center moves from [0, 0] to 0.1 * [0.02 ln 3, 0] = [0.002197, 0] after one step, and to
    (0.9 * 0.1 + 0.1) * [0.02 ln 3, 0] = [0.004175, 0] after a second step on the same outputs.
    The teacher temperature is an attribute so a schedule can set it (DINO warms it from 0.04 up to 0.07
    over the first 30 epochs for some models).
    """

    def __init__(self, out_dim, student_temp=0.1, teacher_temp=0.04, center_momentum=0.9):
        super().__init__()
        self.student_temp, self.teacher_temp, self.center_momentum = student_temp, teacher_temp, center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))  # a buffer: saved with the model, never trained

    def forward(self, student_out, teacher_out):
        """student_out (V, B, K), global views first; teacher_out (G, B, K). Returns the loss; moves the center."""
        loss = dino_loss(student_out, teacher_out, self.center, self.student_temp, self.teacher_temp)
        self.update_center(teacher_out)  # after the loss: this step is centered by the previous steps only
        return loss

    @torch.no_grad()
    def update_center(self, teacher_out):
        # with several processes, the reference all-reduces this mean so every rank shares one center
        batch_center = teacher_out.reshape(-1, teacher_out.shape[-1]).mean(dim=0, keepdim=True)  # (1, K)
        self.center.mul_(self.center_momentum).add_((1 - self.center_momentum) * batch_center)


@torch.no_grad()
def ema_update(teacher, student, momentum):
    """teacher = momentum * teacher + (1 - momentum) * student, parameter by parameter (buffers untouched).

    DINO raises the momentum from 0.996 to 1 along a cosine over training. The teacher averages many
    recent students, and the paper finds it the better model of the two throughout training.
    """
    for p_teacher, p_student in zip(teacher.parameters(), student.parameters(), strict=True):
        p_teacher.mul_(momentum).add_((1 - momentum) * p_student.detach())


class WeightNormLinear(nn.Module):
    """A Linear without bias whose weight is g * v / ||v||, the norm taken per output row (Salimans and Kingma
    2016, https://arxiv.org/abs/1602.07868): the direction v and the length g are separate parameters.

    Names as torch.nn.utils.weight_norm (weight_g (out, 1), weight_v (out, in)), the form DINO's checkpoints
    were saved in. DINO fixes g = 1 (norm_last_layer): every prototype then has unit length, and since the
    input is unit length too, the outputs are cosines, which the paper found to make training stable.
    """

    def __init__(self, in_dim, out_dim, fix_norm=True):
        super().__init__()
        self.weight_v = nn.Parameter(nn.Linear(in_dim, out_dim, bias=False).weight.detach())  # nn.Linear's init
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1), requires_grad=not fix_norm)

    def forward(self, x):  # x (..., in)
        weight = self.weight_g * self.weight_v / self.weight_v.norm(dim=1, keepdim=True)  # (out, in), rows of length g
        return x @ weight.T  # (..., out)


class DINOHead(nn.Module):
    """Backbone features (B, in_dim) -> (B, out_dim) prototype scores: MLP -> l2 normalize -> WeightNormLinear."""

    def __init__(self, in_dim, out_dim, hidden_dim=2048, bottleneck_dim=256, nlayers=3, norm_last_layer=True):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (nlayers - 1) + [bottleneck_dim]
        layers = []
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(d_in, d_out), nn.GELU()]
        self.mlp = nn.Sequential(*layers[:-1])  # no GELU after the bottleneck; indices as the reference's mlp.0, 2, 4
        for layer in self.mlp[::2]:
            nn.init.trunc_normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, fix_norm=norm_last_layer)

    def forward(self, x):
        x = F.normalize(self.mlp(x), dim=-1)  # (B, bottleneck_dim), unit length
        return self.last_layer(x)  # (B, out_dim)
