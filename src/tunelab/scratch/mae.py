"""MAE from scratch: hide 75% of an image's patches, encode the rest, and reconstruct the hidden pixels.

Paper: He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners", https://arxiv.org/abs/2111.06377
Reference code: https://github.com/facebookresearch/mae/blob/main/models_mae.py
Hugging Face:
https://github.com/huggingface/transformers/blob/main/src/transformers/models/vit_mae/modeling_vit_mae.py
Parameter names follow Hugging Face, so a ViTMAEForPreTraining state_dict loads with strict=True.

Why it is cheap: the encoder (the ViT blocks of scratch/vit.py) sees only the 25% visible patches, so it
runs on a quarter of the tokens; a small decoder then gets the full row back (encoded visible tokens plus
one shared learned [MASK] vector in every hidden slot, put back in image order) and predicts each patch's
pixels. The loss counts the hidden patches only: copying a visible patch through teaches nothing.

Positions are fixed 2-D sin-cos tables, not learned. transformers keeps them as frozen nn.Parameters
(requires_grad=False), so they sit in the state_dict under the names used here. Note: a ViTMAEForPreTraining
built from a config (random init, transformers 5.x) leaves both tables at zero; only pretrained checkpoints,
the decoder's own initialize_weights() and tunelab's vit.mae (vision.backbones.fill_sincos_positions) carry the
sin-cos values that this file builds at init.
"""

from dataclasses import dataclass, replace

import torch
from torch import nn

from tunelab.scratch.vit import ViTConfig, ViTLayer, ViTPatchEmbeddings


@dataclass
class MAEConfig(ViTConfig):  # the encoder is a ViT (no pooler); the decoder is a narrower, shallower one
    decoder_hidden_size: int = 512
    decoder_num_hidden_layers: int = 8
    decoder_num_attention_heads: int = 16
    decoder_intermediate_size: int = 2048
    mask_ratio: float = 0.75
    norm_pix_loss: bool = False  # the paper's Table 3: targets normalized per patch learn better features

    @classmethod
    def from_hf(cls, hf_config):
        names = ("decoder_hidden_size", "decoder_num_hidden_layers", "decoder_num_attention_heads",
                 "decoder_intermediate_size", "mask_ratio", "norm_pix_loss")
        vit = ViTConfig.from_hf(hf_config)
        return cls(**vars(vit), **{name: getattr(hf_config, name) for name in names})

    def decoder(self):  # the decoder blocks are ViT blocks of the decoder's sizes
        return replace(self, hidden_size=self.decoder_hidden_size, num_hidden_layers=self.decoder_num_hidden_layers,
                       num_attention_heads=self.decoder_num_attention_heads,
                       intermediate_size=self.decoder_intermediate_size)


def sincos_positions_2d(grid_size, dim):
    """Fixed positions for a grid_size x grid_size patch grid, plus a zero row in front for [CLS]: (1 + N, dim).

    Half of the features encode the column, half the row, each as 1-D sin-cos of the Transformer
    (sines, then cosines), at frequencies 10000^(-k / (dim/4)), k = 0 .. dim/4 - 1. Layout per patch:
    [sin(col), cos(col), sin(row), cos(row)], the column first: the MAE code (util/pos_embed.py) builds its
    grid with np.meshgrid's x-first order. Patch n sits at row n // grid_size, column n % grid_size.
    Computed in float64, as transformers does, then rounded to float32.
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos positions need a width divisible by 4 (2 axes x sin, cos); got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))  # (dim/4,)
    n = torch.arange(grid_size * grid_size, dtype=torch.float64)  # (N,)
    col, row = (n % grid_size).outer(omega), (n // grid_size).outer(omega)  # (N, dim/4) each
    table = torch.cat([col.sin(), col.cos(), row.sin(), row.cos()], dim=1)  # (N, dim)
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), table]).float()  # (1 + N, dim)


def random_masking(x, mask_ratio, noise):
    """Keep a random (1 - mask_ratio) of each row's patches, as transformers' ViTMAEEmbeddings.random_masking.

    x (B, N, C) patch tokens; noise (B, N) any floats (torch.rand for training; fixed for tests).
    Sorting the noise gives each row its own random permutation ids_shuffle; the first len_keep positions
    of it are kept. ids_restore = argsort(ids_shuffle) is the inverse permutation: gathering a shuffled row
    with it puts every token back in image order. Returns
      x_kept (B, len_keep, C), the visible tokens in shuffled order;
      mask (B, N), 1.0 where a patch is hidden, 0.0 where visible, in image order;
      ids_restore (B, N).
    """
    B, N, C = x.shape
    len_keep = int(N * (1 - mask_ratio))  # int() rounds down: 16 patches at 0.75 keep 4, at 0.7 keep 4 too
    ids_shuffle = noise.argsort(dim=1)  # (B, N): small noise first
    ids_restore = ids_shuffle.argsort(dim=1)  # (B, N): the inverse permutation
    ids_keep = ids_shuffle[:, :len_keep]  # (B, len_keep)
    x_kept = x.gather(1, ids_keep.unsqueeze(-1).expand(-1, -1, C))  # (B, len_keep, C)
    mask = torch.ones(B, N, device=x.device)
    mask[:, :len_keep] = 0  # in shuffled order: the first len_keep are visible...
    return x_kept, mask.gather(1, ids_restore), ids_restore  # ...and gathering puts the mask in image order


class MAEEmbeddings(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.mask_ratio = cfg.mask_ratio
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.hidden_size))
        self.patch_embeddings = ViTPatchEmbeddings(cfg)
        table = sincos_positions_2d(cfg.image_size // cfg.patch_size, cfg.hidden_size)
        self.position_embeddings = nn.Parameter(table.unsqueeze(0), requires_grad=False)  # (1, 1 + N, C), fixed
        nn.init.normal_(self.cls_token, std=0.02)

    def forward(self, pixel_values, noise):
        x = self.patch_embeddings(pixel_values) + self.position_embeddings[:, 1:]  # (B, N, C)
        # positions go in before the shuffle: a kept token still knows where it came from
        x, mask, ids_restore = random_masking(x, self.mask_ratio, noise)  # (B, len_keep, C)
        cls = (self.cls_token + self.position_embeddings[:, :1]).expand(x.shape[0], -1, -1)  # (B, 1, C)
        return torch.cat([cls, x], dim=1), mask, ids_restore  # (B, 1 + len_keep, C)


class MAEEncoder(nn.Module):  # transformers' ViTMAEModel: a ViT on the visible patches
    def __init__(self, cfg):
        super().__init__()
        self.embeddings = MAEEmbeddings(cfg)
        self.layers = nn.ModuleList([ViTLayer(cfg) for _ in range(cfg.num_hidden_layers)])
        self.layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, pixel_values, noise):
        x, mask, ids_restore = self.embeddings(pixel_values, noise)  # (B, 1 + len_keep, C)
        for layer in self.layers:
            x = layer(x)
        return self.layernorm(x), mask, ids_restore


class MAEDecoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        dec = cfg.decoder()
        D = dec.hidden_size
        self.decoder_embed = nn.Linear(cfg.hidden_size, D)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, D))  # one learned vector stands in for every hidden patch
        table = sincos_positions_2d(cfg.image_size // cfg.patch_size, D)
        self.decoder_pos_embed = nn.Parameter(table.unsqueeze(0), requires_grad=False)  # (1, 1 + N, D), fixed
        self.decoder_layers = nn.ModuleList([ViTLayer(dec) for _ in range(dec.num_hidden_layers)])
        self.decoder_norm = nn.LayerNorm(D, eps=cfg.layer_norm_eps)
        self.decoder_pred = nn.Linear(D, cfg.patch_size ** 2 * cfg.num_channels)  # pixels of one patch
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, latent, ids_restore):
        x = self.decoder_embed(latent)  # (B, 1 + len_keep, D)
        B, N = ids_restore.shape
        masks = self.mask_token.expand(B, N + 1 - x.shape[1], -1)  # (B, N - len_keep, D)
        x_ = torch.cat([x[:, 1:], masks], dim=1)  # (B, N, D): visible tokens, then [MASK]s, in shuffled order
        x_ = x_.gather(1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2]))  # (B, N, D), image order
        x = torch.cat([x[:, :1], x_], dim=1) + self.decoder_pos_embed  # (B, 1 + N, D): [MASK]s learn where they are
        for layer in self.decoder_layers:
            x = layer(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]  # (B, N, P*P*C_in); the [CLS] slot predicts nothing


def patchify(pixel_values, patch_size):
    """(B, C_in, H, W) -> (B, N, P*P*C_in): each row one patch, pixels in (row, column, channel) order,
    the order of decoder_pred's outputs, and patches in the row-major order of ViTPatchEmbeddings."""
    B, C, H, W = pixel_values.shape
    P = patch_size
    x = pixel_values.reshape(B, C, H // P, P, W // P, P)  # (B, C, h, P, w, P)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(B, (H // P) * (W // P), P * P * C)  # (B, h, w, P, P, C) -> rows


def mae_loss(pred, target, mask, norm_pix_loss=False):
    """Mean squared error per patch, averaged over the hidden patches only.

    pred, target (B, N, P*P*C_in); mask (B, N), 1 = hidden. With norm_pix_loss each target patch is
    standardized by its own mean and (unbiased) variance first, so the model predicts local contrast,
    not absolute brightness.
    """
    if norm_pix_loss:
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    per_patch = ((pred - target) ** 2).mean(dim=-1)  # (B, N)
    return (per_patch * mask).sum() / mask.sum()  # visible patches weigh 0


class MAEForPreTraining(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.vit = MAEEncoder(cfg)
        self.decoder = MAEDecoder(cfg)

    def forward(self, pixel_values, noise=None):
        """Returns (loss, logits (B, N, P*P*C_in), mask (B, N), ids_restore (B, N)).

        noise (B, N) decides which patches are hidden (the smallest are kept); None draws it fresh.
        """
        if noise is None:
            noise = torch.rand(pixel_values.shape[0], self.cfg.num_patches, device=pixel_values.device)
        latent, mask, ids_restore = self.vit(pixel_values, noise)  # (B, 1 + len_keep, C)
        logits = self.decoder(latent, ids_restore)  # (B, N, P*P*C_in)
        loss = mae_loss(logits, patchify(pixel_values, self.cfg.patch_size), mask, self.cfg.norm_pix_loss)
        return loss, logits, mask, ids_restore
