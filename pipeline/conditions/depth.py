"""MiDaS depth networks as plain nn.Modules with the official checkpoint key layout, and build_midas.

Depth: MiDaS v2.1 small (`midas_v21_small`: EfficientNet-Lite3 from timm, created with
pretrained=False, + the MiDaS RefineNet decoder) as plain nn.Modules whose parameter names are
those of the official isl-org/MiDaS checkpoint `midas_v21_small_256.pt` (pretrained.layer1..4 =
the EfficientNet stem+blocks, scratch.layer*_rn / scratch.refinenet1..4 / scratch.output_conv),
loaded with strict=True. The network predicts relative inverse depth (larger = nearer) at twice
the clip size (256 for 128, multiples of 32); it is area-resized to the clip size and min-max
normalised per clip (over all its frames, so brightness is comparable across time within a clip)
to 0..255. `dpt_large_384` is MiDaS v3 DPT-Large in the official layout (timm ViT-L/16 as
pretrained.model, act_postprocess1..4, scratch.*), input 3x the clip size. With no
`midas_checkpoint`, depth is "none" (channel 2 is 0) and `method` says so.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# name -> (official checkpoint, input size as a multiple of the clip size, input normalisation)
MIDAS_MODELS = {
    "midas_v21_small": ("midas_v21_small_256.pt", 2, "imagenet"),
    "dpt_large_384": ("dpt_large_384.pt (v3.0: dpt_large-midas-2f21e586.pt)", 3, "half"),
}


class ResidualConvUnit(nn.Module):
    """MiDaS ResidualConvUnit_custom (bn=False): x + conv2(relu(conv1(relu(x))))."""

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1, bias=True)

    def forward(self, x):
        out = self.conv1(F.relu(x))
        out = self.conv2(F.relu(out))
        return out + x


class FeatureFusionBlock(nn.Module):
    """MiDaS FeatureFusionBlock_custom: fuse skip, refine, upsample x2 (align_corners), 1x1 out."""

    def __init__(self, features: int, expand: bool):
        super().__init__()
        self.out_conv = nn.Conv2d(features, features // 2 if expand else features, 1, bias=True)
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x, skip=None, size=None):
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if size is None:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        else:  # DPT (v3.1): upsample to the next skip's exact size (non-square inputs)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class Interpolate(nn.Module):
    def __init__(self, scale_factor: float, align_corners: bool = False):
        super().__init__()
        self.scale_factor, self.align_corners = scale_factor, align_corners

    def forward(self, x):
        return F.interpolate(x, scale_factor=self.scale_factor, mode="bilinear", align_corners=self.align_corners)


class ProjectReadout(nn.Module):
    """MiDaS readout "project": each patch token concatenated with the class token, Linear+GELU."""

    def __init__(self, dim: int):
        super().__init__()
        self.project = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU())

    def forward(self, x):  # [B, 1 + N, C] -> [B, N, C]
        readout = x[:, :1].expand_as(x[:, 1:])
        return self.project(torch.cat((x[:, 1:], readout), -1))


class DPTViT(nn.Module):
    """MiDaS v3 DPT over a timm ViT (pretrained=False) with the official key layout:
    pretrained.model = the timm VisionTransformer (all of it, head included, as MiDaS saves it),
    pretrained.act_postprocess1..4 = [readout, transpose, unflatten, 1x1 conv, resample]
    (indices 1-2 have no parameters; their work is done in forward), scratch.layer*_rn,
    scratch.refinenet1..4 (fusion blocks, 256 features), scratch.output_conv (the depth head).
    Position embeddings are resized bilinearly to the input's patch grid (MiDaS forward_flex)."""

    def __init__(self, vit_name: str, hooks: tuple[int, ...], features: tuple[int, ...], fusion: int = 256):
        super().__init__()
        import timm

        vit = timm.create_model(vit_name, pretrained=False)
        dim = vit.embed_dim
        self.hooks = tuple(hooks)
        self.pretrained = nn.Module()
        self.pretrained.model = vit
        for k in range(4):
            layers = [ProjectReadout(dim), nn.Identity(), nn.Identity(), nn.Conv2d(dim, features[k], 1)]
            if k == 0:
                layers.append(nn.ConvTranspose2d(features[0], features[0], 4, stride=4))
            elif k == 1:
                layers.append(nn.ConvTranspose2d(features[1], features[1], 2, stride=2))
            elif k == 3:
                layers.append(nn.Conv2d(features[3], features[3], 3, stride=2, padding=1))
            setattr(self.pretrained, f"act_postprocess{k + 1}", nn.Sequential(*layers))
        s = self.scratch = nn.Module()
        for k in range(4):
            setattr(s, f"layer{k + 1}_rn", nn.Conv2d(features[k], fusion, 3, padding=1, bias=False))
        for k in range(4):
            setattr(s, f"refinenet{k + 1}", FeatureFusionBlock(fusion, expand=False))
        s.output_conv = nn.Sequential(
            nn.Conv2d(fusion, fusion // 2, 3, padding=1),
            Interpolate(2.0, align_corners=True),
            nn.Conv2d(fusion // 2, 32, 3, padding=1),
            nn.ReLU(True),
            nn.Conv2d(32, 1, 1),
            nn.ReLU(True),  # non_negative
            nn.Identity(),
        )

    def _pos_embed(self, gh: int, gw: int):
        pos = self.pretrained.model.pos_embed
        tok, grid = pos[:, :1], pos[0, 1:]
        old = int(math.sqrt(grid.shape[0]))
        grid = grid.reshape(1, old, old, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(gh, gw), mode="bilinear")
        return torch.cat([tok, grid.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)], dim=1)

    def forward(self, x):  # x: [B, 3, H, W] normalised to [-1, 1], H and W multiples of 32
        m = self.pretrained.model
        b, _, h, w = x.shape
        gh, gw = h // 16, w // 16
        t = m.patch_embed.proj(x).flatten(2).transpose(1, 2)
        t = torch.cat([m.cls_token.expand(b, -1, -1), t], dim=1) + self._pos_embed(gh, gw)
        t = m.pos_drop(t)
        taps = []
        for i, blk in enumerate(m.blocks):
            t = blk(t)
            if i in self.hooks:
                taps.append(t)
            if len(taps) == 4:
                break
        layers = []
        for k, tap in enumerate(taps):
            post = getattr(self.pretrained, f"act_postprocess{k + 1}")
            y = post[0](tap).transpose(1, 2).reshape(b, -1, gh, gw)
            layers.append(post[3:](y))
        s = self.scratch
        rn = [getattr(s, f"layer{k + 1}_rn")(layers[k]) for k in range(4)]
        path = s.refinenet4(rn[3], size=rn[2].shape[2:])
        path = s.refinenet3(path, rn[2], size=rn[1].shape[2:])
        path = s.refinenet2(path, rn[1], size=rn[0].shape[2:])
        path = s.refinenet1(path, rn[0])
        return s.output_conv(path).squeeze(1)


class MidasV21Small(nn.Module):
    """MiDaS v2.1 small (MidasNet_small, features=64, expand=True) with the official key layout.

    pretrained.layer1 = stem conv, stem BN(+act), [act slot], blocks 0-1; layer2 = block 2;
    layer3 = blocks 3-4; layer4 = blocks 5-6 of tf_efficientnet_lite3 (timm, pretrained=False).
    timm folds the stem activation into its BatchNormAct2d, so the official act slot
    (layer1.2, no parameters) is an Identity here: same keys, same function."""

    def __init__(self, features: int = 64):
        super().__init__()
        import timm

        eff = timm.create_model("tf_efficientnet_lite3", pretrained=False)
        self.pretrained = nn.Module()
        self.pretrained.layer1 = nn.Sequential(eff.conv_stem, eff.bn1, nn.Identity(), *eff.blocks[0:2])
        self.pretrained.layer2 = nn.Sequential(*eff.blocks[2:3])
        self.pretrained.layer3 = nn.Sequential(*eff.blocks[3:5])
        self.pretrained.layer4 = nn.Sequential(*eff.blocks[5:9])
        in_ch = (32, 48, 136, 384)
        out_ch = (features, features * 2, features * 4, features * 8)
        s = self.scratch = nn.Module()
        for k, (ci, co) in enumerate(zip(in_ch, out_ch), start=1):
            setattr(s, f"layer{k}_rn", nn.Conv2d(ci, co, 3, padding=1, bias=False))
        s.refinenet4 = FeatureFusionBlock(features * 8, expand=True)
        s.refinenet3 = FeatureFusionBlock(features * 4, expand=True)
        s.refinenet2 = FeatureFusionBlock(features * 2, expand=True)
        s.refinenet1 = FeatureFusionBlock(features, expand=False)
        s.output_conv = nn.Sequential(
            nn.Conv2d(features, features // 2, 3, padding=1),
            Interpolate(2.0),
            nn.Conv2d(features // 2, 32, 3, padding=1),
            nn.ReLU(False),
            nn.Conv2d(32, 1, 1),
            nn.ReLU(True),  # non_negative
            nn.Identity(),
        )

    def forward(self, x):  # x: [B, 3, H, W] ImageNet-normalised, H and W multiples of 32
        p, s = self.pretrained, self.scratch
        l1 = p.layer1(x)
        l2 = p.layer2(l1)
        l3 = p.layer3(l2)
        l4 = p.layer4(l3)
        path = s.refinenet4(s.layer4_rn(l4))
        path = s.refinenet3(path, s.layer3_rn(l3))
        path = s.refinenet2(path, s.layer2_rn(l2))
        path = s.refinenet1(path, s.layer1_rn(l1))
        return s.output_conv(path).squeeze(1)  # [B, H, W] relative inverse depth


def build_midas(name: str = "midas_v21_small", *, vit_name: str | None = None):
    """A MiDaS network with the official parameter names (random weights; load a checkpoint).
    `vit_name` swaps the DPT backbone for a smaller timm ViT (tests only: same key layout)."""
    if name == "midas_v21_small":
        return MidasV21Small()
    if name == "dpt_large_384":
        if vit_name is None:
            return DPTViT("vit_large_patch16_384", hooks=(5, 11, 17, 23), features=(256, 512, 1024, 1024))
        return DPTViT(vit_name, hooks=(2, 5, 8, 11), features=(96, 192, 384, 768))
    raise ValueError(f"midas_model={name!r}: built are {sorted(MIDAS_MODELS)}")
