"""DINO (tunelab.scratch.dino) against independent computations: no library ships the DINO loss, so the loss
and the center are checked against the reference implementation's loop, transcribed below; the teacher's EMA
against torch's AveragedModel; the weight-normalized last layer against torch's weight_norm.
tests/test_scratch_vision.py checks the loss against numbers worked by hand."""

import copy
import functools

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from tunelab.parity import Check
from tunelab.scratch import dino

G, LOCAL, B, K = 2, 4, 5, 7  # 2 global and 4 local views of 5 images, 7 prototypes


def _reference_step(student_output, teacher_output, center, ncrops, student_temp=0.1, temp=0.04,
                    center_momentum=0.9):
    """DINOLoss.forward and update_center from https://github.com/facebookresearch/dino/blob/main/main_dino.py,
    for one process (no all_reduce, world size 1): student_output (ncrops * B, K) and teacher_output (2 * B, K),
    crops stacked view after view. Returns (loss, new center)."""
    student_out = student_output / student_temp
    student_out = student_out.chunk(ncrops)
    teacher_out = F.softmax((teacher_output - center) / temp, dim=-1)
    teacher_out = teacher_out.detach().chunk(2)
    total_loss = 0
    n_loss_terms = 0
    for iq, q in enumerate(teacher_out):
        for v in range(len(student_out)):
            if v == iq:
                continue
            loss = torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1)
            total_loss += loss.mean()
            n_loss_terms += 1
    total_loss /= n_loss_terms
    batch_center = torch.sum(teacher_output, dim=0, keepdim=True) / len(teacher_output)
    return total_loss, center * center_momentum + batch_center * (1 - center_momentum)


@functools.cache
def _loss_and_center():
    """Two steps, so the second is centered by the first's teacher outputs. Returns (loss diff, center diff)."""
    torch.manual_seed(0)
    ours, ref_center = dino.DINOLoss(K), torch.zeros(1, K)
    loss_diff = 0.0
    for _ in range(2):
        # outputs of the size of cosines (DINO's head ends in unit vectors); teacher / 0.04 peaked, not one-hot
        student, teacher = 0.5 * torch.randn(G + LOCAL, B, K), 0.1 * torch.randn(G, B, K)
        ref_loss, ref_center = _reference_step(student.reshape(-1, K), teacher.reshape(-1, K), ref_center, G + LOCAL)
        loss_diff = max(loss_diff, (ours(student, teacher) - ref_loss).abs().item())
    return loss_diff, (ours.center - ref_center).abs().max().item()


def _ema():
    """Our ema_update against AveragedModel(multi_avg_fn=get_ema_multi_avg_fn(m)) over 3 student steps."""
    torch.manual_seed(0)
    student, m = dino.DINOHead(12, K, hidden_dim=16, bottleneck_dim=8, norm_last_layer=False), 0.9
    teacher, averaged = copy.deepcopy(student), AveragedModel(student, multi_avg_fn=get_ema_multi_avg_fn(m))
    averaged.update_parameters(student)  # AveragedModel's first update copies; DINO's teacher starts as a copy too
    for _ in range(3):
        with torch.no_grad():
            for p in student.parameters():
                p.add_(torch.randn_like(p))  # stands in for an optimizer step
        dino.ema_update(teacher, student, m)
        averaged.update_parameters(student)
    return max((a - b).abs().max().item() for a, b in zip(teacher.parameters(), averaged.module.parameters(),
                                                          strict=True))


def _weight_norm():
    """WeightNormLinear against nn.Linear under torch's weight_norm parametrization (g = original0, v = original1),
    with a trained-looking g (not 1), so the length is applied per output row."""
    torch.manual_seed(0)
    ours = dino.WeightNormLinear(8, K, fix_norm=False)
    with torch.no_grad():
        ours.weight_g.uniform_(0.5, 2.0)
    ref = weight_norm(nn.Linear(8, K, bias=False))
    with torch.no_grad():
        ref.parametrizations.weight.original0.copy_(ours.weight_g)
        ref.parametrizations.weight.original1.copy_(ours.weight_v)
        x = F.normalize(torch.randn(B, 8), dim=-1)
        return (ours(x) - ref(x)).abs().max().item()


CHECKS = [
    Check("dino loss (2 global + 4 local views, 2 steps)", "facebookresearch/dino DINOLoss loop (inline)",
          lambda: _loss_and_center()[0], 1e-5),
    Check("dino center (EMA of the teacher's batch mean)", "facebookresearch/dino DINOLoss.update_center (inline)",
          lambda: _loss_and_center()[1], 1e-7),
    Check("dino teacher EMA update", "torch AveragedModel(get_ema_multi_avg_fn)", _ema, 1e-6),
    Check("dino head last layer (weight norm)", "torch.nn.utils.parametrizations.weight_norm", _weight_norm, 1e-6),
]
