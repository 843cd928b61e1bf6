"""The vision lab (src/tunelab/scratch: vit.py, mae.py, dino.py) seen from the outside: the DINO loss on numbers
worked by hand, MAE's masking and which patches its loss counts. tests/test_parity.py checks the same code against
transformers' ViTModel and ViTMAEForPreTraining and against DINO's reference loop."""

import math

import pytest
import torch
import transformers

from tunelab.scratch import mae, vit
from tunelab.scratch.dino import DINOHead, DINOLoss, dino_loss

pytestmark = pytest.mark.unit

LN3 = math.log(3)


def test_dino_loss_by_hand():
    """The example of dino_loss's docstring: K = 2, one image, 2 global views and 1 local one.

    Teacher t0 = [0.04 ln 3, 0], t1 = [0, 0] -> targets q0 = [3/4, 1/4], q1 = [1/2, 1/2] (temperature 0.04).
    Student s0 = [0.1 ln 3, 0], s1 = [0, 0], s2 = [0, 0.1 ln 3] -> log-probs [ln 3/4, ln 1/4], [ln 1/2, ln 1/2],
      [ln 1/4, ln 3/4] (temperature 0.1).
    Pairs (0,1), (0,2), (1,0), (1,2): ln 2 = 0.693147, 1.111641, 0.836988, 0.836988; mean 0.869691.
    Center = t0: q0 = [1/2, 1/2], q1 = [1/4, 3/4]; pairs 0.693147, 0.836988, 1.111641, 0.562335; mean 0.801028.
    Center after one DINOLoss step (m = 0.9): 0.1 * mean(t0, t1) = 0.1 * [0.02 ln 3, 0] = [0.002197, 0];
      after a second step on the same outputs: 0.19 * [0.02 ln 3, 0] = [0.004175, 0].
    """
    teacher = torch.tensor([[[0.04 * LN3, 0.0]], [[0.0, 0.0]]])  # (G=2, B=1, K=2)
    student = torch.tensor([[[0.1 * LN3, 0.0]], [[0.0, 0.0]], [[0.0, 0.1 * LN3]]], requires_grad=True)  # (V=3, 1, 2)
    loss = dino_loss(student, teacher, center=torch.zeros(2))
    assert loss.item() == pytest.approx(0.869691, abs=1e-6)
    assert dino_loss(student, teacher, center=teacher[0, 0]).item() == pytest.approx(0.801028, abs=1e-6)

    loss_fn = DINOLoss(out_dim=2, center_momentum=0.9)
    assert loss_fn(student, teacher).item() == pytest.approx(0.869691, abs=1e-6)  # centered by the old center, 0
    torch.testing.assert_close(loss_fn.center, torch.tensor([[0.002197, 0.0]]), atol=1e-6, rtol=0)
    loss_fn(student, teacher)
    torch.testing.assert_close(loss_fn.center, torch.tensor([[0.004175, 0.0]]), atol=1e-6, rtol=0)

    teacher.requires_grad_(True)
    dino_loss(student, teacher, center=torch.zeros(2)).backward()
    assert student.grad.abs().sum() > 0 and teacher.grad is None  # only the student learns from the loss


def test_dino_head_ends_in_cosines():
    """With norm_last_layer the prototypes have fixed unit length (g = 1, not trained) and the bottleneck is l2
    normalized, so every output is a cosine, in [-1, 1], whatever the input's scale."""
    torch.manual_seed(0)
    head = DINOHead(12, 5, hidden_dim=16, bottleneck_dim=8)
    out = head(100 * torch.randn(4, 12))
    assert out.shape == (4, 5) and out.abs().max() <= 1 + 1e-6
    assert not head.last_layer.weight_g.requires_grad and head.last_layer.weight_v.requires_grad


def test_mae_random_masking_by_hand_and_at_scale():
    """noise [0.9, 0.1, 0.5, 0.3], mask_ratio 0.5: keep int(4 * 0.5) = 2 patches, the two smallest noises.

    ids_shuffle = argsort(noise) = [1, 3, 2, 0]; kept: patches 1 and 3, in that order;
    ids_restore = argsort(ids_shuffle) = [3, 0, 2, 1]; mask (1 = hidden), in image order = [1, 0, 1, 0].
    Then on 8 rows of 16 patches: the kept count is int(16 * (1 - ratio)), the kept tokens are exactly the
    patches the mask calls visible, and ids_restore undoes the shuffle.
    """
    x = torch.arange(4.0).view(1, 4, 1)  # patch n carries the value n
    kept, mask, ids_restore = mae.random_masking(x, 0.5, torch.tensor([[0.9, 0.1, 0.5, 0.3]]))
    assert kept.flatten().tolist() == [1.0, 3.0]
    assert mask.tolist() == [[1.0, 0.0, 1.0, 0.0]] and ids_restore.tolist() == [[3, 0, 2, 1]]

    B, N = 8, 16
    x = torch.arange(float(N)).expand(B, N).unsqueeze(-1).repeat(1, 1, 3)  # (B, N, 3), patch n carries n
    noise = torch.rand(B, N)
    for ratio, len_keep in ((0.75, 4), (0.6, 6), (0.5, 8)):
        kept, mask, ids_restore = mae.random_masking(x, ratio, noise)
        assert kept.shape == (B, len_keep, 3) and (mask.sum(dim=1) == N - len_keep).all()
        for b in range(B):
            assert sorted(kept[b, :, 0].long().tolist()) == torch.nonzero(mask[b] == 0).flatten().tolist()
        shuffled = x.gather(1, noise.argsort(dim=1).unsqueeze(-1).expand(-1, -1, 3))
        assert torch.equal(shuffled.gather(1, ids_restore.unsqueeze(-1).expand(-1, -1, 3)), x)


@pytest.fixture(scope="module")
def tiny_mae():
    torch.manual_seed(0)
    cfg = mae.MAEConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                        image_size=32, patch_size=8, decoder_hidden_size=16, decoder_num_hidden_layers=1,
                        decoder_num_attention_heads=2, decoder_intermediate_size=32)
    return mae.MAEForPreTraining(cfg).eval()


def _patch(pixel_values, n, grid=4, P=8):
    """The pixels of patch n (row-major on a grid x grid image): a view, for editing in place."""
    r, c = divmod(n, grid)
    return pixel_values[:, :, r * P:(r + 1) * P, c * P:(c + 1) * P]


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_mae_loss_counts_only_hidden_patches(tiny_mae, norm_pix_loss):
    """Changing a visible patch's target pixels leaves the loss as it was; changing a hidden one's changes it.
    And the encoder never sees a hidden patch: editing one in the input leaves the predictions unchanged."""
    torch.manual_seed(1)
    pixels, noise = torch.randn(1, 3, 32, 32), torch.rand(1, 16)
    with torch.no_grad():
        loss, logits, mask, _ = tiny_mae(pixels, noise)
    visible, hidden = [torch.nonzero(mask[0] == v).flatten()[0].item() for v in (0, 1)]
    target = mae.patchify(pixels, 8)
    assert mae.mae_loss(logits, target, mask).item() == pytest.approx(loss.item(), abs=1e-6)

    for n, counts in ((visible, False), (hidden, True)):
        edited = target.clone()
        edited[0, n] = torch.randn(edited.shape[-1])
        changed = mae.mae_loss(logits, edited, mask, norm_pix_loss).item()
        assert (abs(changed - mae.mae_loss(logits, target, mask, norm_pix_loss).item()) > 1e-3) == counts

    for n, seen in ((visible, True), (hidden, False)):
        edited = pixels.clone()
        _patch(edited, n).add_(1.0)
        with torch.no_grad():
            assert torch.equal(tiny_mae(edited, noise)[1], logits) != seen


def test_vit_refuses_what_it_does_not_implement():
    """A config whose output would differ silently is refused, naming the field."""
    with pytest.raises(ValueError, match="hidden_act='gelu' only"):
        vit.ViTConfig.from_hf(transformers.ViTConfig(hidden_act="gelu_new"))
    with pytest.raises(ValueError, match="image_size"):
        vit.ViTConfig.from_hf(transformers.ViTConfig(image_size=(224, 160)))
