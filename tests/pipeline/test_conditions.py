"""Stylization conditions: DIS recovers known motion, RAFT/MiDaS load official layouts, shapes, batching."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from videopoet.pipeline.conditions import (
    ConditionModel,
    dequantize_flow,
    dis_flow,
    normalize_depth,
    quantize_flow,
)
from videopoet.pipeline.conditions.depth import build_midas
from videopoet.pipeline.conditions.weights import load_state_dict_file
from videopoet.pipeline.media import DecodedClip, MediaConfig, crop_box, probe_and_decode


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.random((h // 6, w // 6, 3)).astype(np.float32)
    return (cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1) * 255).astype(np.uint8)


def _clip(rgb: np.ndarray, fmt: str = "square") -> DecodedClip:
    return DecodedClip(window_index=0, num_frames=len(rgb), format=fmt, start_time_s=0.0, rgb=rgb, audio=None,
                       source_fps=8.0, source_frame_indices=list(range(len(rgb))))


def test_dis_recovers_a_synthetic_translation():
    big = _texture(200, 200, seed=1)
    dx, dy = 3, -2
    a = big[40:168, 40:168]
    b = big[40 - dy:168 - dy, 40 - dx:168 - dx]  # content moves by (+dx, +dy)
    flow = dis_flow(np.stack([a, b]))[0]
    inner = flow[16:-16, 16:-16].reshape(-1, 2)
    med = np.median(inner, axis=0)
    assert abs(med[0] - dx) < 0.1 and abs(med[1] - dy) < 0.1, med
    assert np.mean(np.linalg.norm(inner - [dx, dy], axis=1) < 0.5) > 0.9


def test_dis_recovers_known_motion_in_the_sample_videos(sample_media):
    truth = json.loads((sample_media / "truth.json").read_text())["files"]
    checked = 0
    for name in ("h264_24fps_320x240_square.mp4", "h264_25fps_320x180_pan.mp4", "h264_60fps_320x180.mp4"):
        info, m = truth[name], truth[name]["motion"]
        clip = probe_and_decode(str(sample_media / name), MediaConfig(audio=False))[0]
        flows = dis_flow(clip.rgb)
        x0, y0, cw, ch = crop_box(info["width"], info["height"], 128, 128)
        s = 128 / cw
        for t in range(clip.num_frames - 1):
            j0, j1 = clip.source_frame_indices[t], clip.source_frame_indices[t + 1]
            if {j0, j1} & set(info["flash_frames"]):
                continue  # a white flash frame has no motion to find
            expected = m["dx_px_per_frame"] * (j1 - j0) * s
            if m["type"] == "square":
                size = m["square_size"]
                xs = m["square_x0"] + m["dx_px_per_frame"] * j0
                if xs + m["dx_px_per_frame"] * (j1 - j0) > info["width"] - size:
                    continue  # the square stops at the right edge
                a, b = (xs - x0 + 0.25 * size) * s, (xs - x0 + 0.75 * size) * s
                if xs - x0 < 0 or (xs - x0 + size + m["dx_px_per_frame"] * (j1 - j0)) * s > 128:
                    continue  # the square is (partly) outside the centre crop
                ya, yb = (m["square_y0"] - y0 + 0.25 * size) * s, (m["square_y0"] - y0 + 0.75 * size) * s
                region = flows[t][int(ya):int(yb), int(a):int(b)]
            else:  # pan: the whole background, minus the static counter and the borders
                mask = np.ones((128, 128), bool)
                half = info["counter"]["cell_px"] * 2 * s + 4
                mask[int(64 - half):int(64 + half), int(64 - half):int(64 + half)] = False
                mask[:10], mask[-10:], mask[:, :10], mask[:, -10:] = False, False, False, False
                region = flows[t][mask]
            med = np.median(region.reshape(-1, 2), axis=0)
            assert abs(med[0] - expected) < 0.5, (name, t, med, expected)  # direction and magnitude
            assert abs(med[1]) < 0.25, (name, t, med)
            checked += 1
    assert checked >= 30


def test_flow_quantisation_and_depth_normalisation():
    f = np.array([[0.0, 0.0], [1.0, -1.0], [16.0, -16.0], [100.0, -100.0]], np.float32)
    q = quantize_flow(f, 16.0)
    assert q.tolist() == [[128, 128], [136, 120], [255, 0], [255, 0]]
    np.testing.assert_allclose(dequantize_flow(q[:2], 16.0), f[:2])
    d = np.array([[[1.0, 2.0]], [[3.0, 5.0]]], np.float32)
    assert normalize_depth(d).tolist() == [[[0, 64]], [[128, 255]]]  # min-max over the whole clip
    assert normalize_depth(np.ones((2, 3, 3))).max() == 0


def test_condition_model_dis_shapes_last_frame_and_no_depth():
    rng = np.random.default_rng(0)
    big = _texture(260, 200)
    frames = np.stack([big[10 + 2 * t:234 + 2 * t, 30:158] for t in range(5)])  # portrait 224x128, moving up 2 px
    square = np.stack([big[20:148, 20 + t:148 + t] for t in range(4)])  # moving left 1 px
    image = rng.integers(0, 255, (1, 128, 128, 3), dtype=np.uint8)
    model = ConditionModel(MediaConfig(flow="dis", depth="midas"))  # no checkpoint: depth falls back to none
    assert model.method["flow"] == "dis" and model.method["depth"] == "none"
    assert "no media.midas_checkpoint" in model.method["notes"][0]
    conds = model([_clip(frames, "portrait"), _clip(square), _clip(image)])
    for c, r in zip(conds, (frames, square, image)):
        assert c.dtype == np.uint8 and c.shape == r.shape
        assert (c[..., 2] == 0).all()
    fy = dequantize_flow(conds[0][..., 1], 16.0)
    assert np.median(fy[:, 20:-20, 20:-20]) == pytest.approx(-2.0, abs=0.15)
    assert np.array_equal(conds[0][-1], conds[0][-2])  # the last frame repeats the previous flow
    assert (conds[2][..., :2] == 128).all()  # one frame: zero flow
    assert ConditionModel(MediaConfig(flow="none", depth="none"))([_clip(square)]) == [None]


def test_raft_requires_a_checkpoint():
    with pytest.raises(ValueError, match="raft_checkpoint"):
        ConditionModel(MediaConfig(flow="raft"))


@pytest.fixture(scope="module")
def raft_ckpt(tmp_path_factory):
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("raft") / "raft_small.pth"
    torch.save(raft_small(weights=None).state_dict(), path)  # torchvision's official layout
    return path


def test_raft_loads_official_layout_strictly_and_batches(raft_ckpt, tmp_path):
    cfg = MediaConfig(flow="raft", raft_checkpoint=str(raft_ckpt), raft_updates=2, depth="none", condition_batch=64)
    model = ConditionModel(cfg)
    saved = torch.load(raft_ckpt, weights_only=True)
    for k, v in model.raft.state_dict().items():
        assert torch.equal(v.cpu(), saved[k]), k
    assert model.method == {"flow": "raft", "depth": "none", "flow_model": "raft_small"}
    big = _texture(200, 200, seed=3)
    # few pairs keep the CPU cost down (RAFT needs frames of at least 128 px)
    a = np.stack([big[20:148, 20 + 2 * t:148 + 2 * t] for t in range(3)])
    b = np.stack([big[30 + t:158 + t, 40:168] for t in range(2)])
    together = model([_clip(a), _clip(b)])
    alone = [model([_clip(a)])[0], model([_clip(b)])[0]]
    model.cfg = dataclasses.replace(cfg, condition_batch=2)  # same weights, 2 pairs per forward
    small_batches = model([_clip(a), _clip(b)])
    for x, y, z in zip(together, alone, small_batches):
        assert x.shape == y.shape and x.dtype == np.uint8
        assert np.abs(x.astype(int) - y.astype(int)).max() <= 1  # float summation order only
        assert np.abs(x.astype(int) - z.astype(int)).max() <= 1
    # a state dict in another layout is refused, not half-loaded
    bad = {("module.x." + k): v for k, v in saved.items()}
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(RuntimeError):
        ConditionModel(dataclasses.replace(cfg, raft_checkpoint=str(tmp_path / "bad.pth")))


# Parameter names and shapes of the official isl-org/MiDaS midas_v21_small_256.pt, written out from
# the MiDaS source (MidasNet_small: features=64, expand=True; _make_efficientnet_backbone over
# gen-efficientnet tf_efficientnet_lite3; _make_scratch([32, 48, 136, 384], 64, expand=True)).
OFFICIAL_MIDAS_SMALL_SPOT = {
    "pretrained.layer1.0.weight": (32, 3, 3, 3),  # conv_stem
    "pretrained.layer1.1.running_var": (32,),  # bn1 (layer1.2 is act1: no parameters)
    "pretrained.layer1.3.0.conv_dw.weight": (32, 1, 3, 3),  # blocks[0]: depthwise-separable
    "pretrained.layer1.3.0.conv_pw.weight": (24, 32, 1, 1),
    "pretrained.layer1.4.0.conv_pw.weight": (144, 24, 1, 1),  # blocks[1]: inverted residual, x6
    "pretrained.layer1.4.1.conv_pwl.weight": (32, 192, 1, 1),
    "pretrained.layer2.0.2.conv_pwl.weight": (48, 288, 1, 1),  # blocks[2] (3 repeats at depth 1.4)
    "pretrained.layer3.1.4.bn3.weight": (136,),  # blocks[4]
    "pretrained.layer4.1.0.conv_pwl.weight": (384, 1392, 1, 1),  # blocks[6]
    "scratch.layer1_rn.weight": (64, 32, 3, 3),
    "scratch.layer4_rn.weight": (512, 384, 3, 3),
    "scratch.refinenet4.out_conv.weight": (256, 512, 1, 1),
    "scratch.refinenet4.resConfUnit1.conv1.bias": (512,),
    "scratch.refinenet1.out_conv.weight": (64, 64, 1, 1),
    "scratch.output_conv.0.weight": (32, 64, 3, 3),
    "scratch.output_conv.2.weight": (32, 32, 3, 3),
    "scratch.output_conv.4.weight": (1, 32, 1, 1),
    "scratch.output_conv.4.bias": (1,),
}


@pytest.fixture(scope="module")
def midas_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = build_midas("midas_v21_small")
    sd = model.state_dict()
    for k, shape in OFFICIAL_MIDAS_SMALL_SPOT.items():
        assert tuple(sd[k].shape) == shape, k
    prefixes = {k.split(".")[0] + "." + k.split(".")[1] for k in sd}
    assert prefixes == {"pretrained.layer1", "pretrained.layer2", "pretrained.layer3", "pretrained.layer4",
                        "scratch.layer1_rn", "scratch.layer2_rn", "scratch.layer3_rn", "scratch.layer4_rn",
                        "scratch.refinenet1", "scratch.refinenet2", "scratch.refinenet3", "scratch.refinenet4",
                        "scratch.output_conv"}
    # random but not degenerate: a positive output bias keeps the final ReLU from zeroing everything
    with torch.no_grad():
        sd["scratch.output_conv.4.bias"].fill_(0.5)
    path = tmp_path_factory.mktemp("midas") / "midas_v21_small_256.pt"
    torch.save(sd, path)
    return path


def test_midas_loads_official_layout_strictly_shapes_and_batching(midas_ckpt, tmp_path):
    cfg = MediaConfig(flow="dis", depth="midas", midas_checkpoint=str(midas_ckpt), condition_batch=8)
    model = ConditionModel(cfg)
    assert model.method == {"flow": "dis", "depth": "midas", "depth_model": "midas_v21_small"}
    saved = torch.load(midas_ckpt, weights_only=True)
    for k, v in model.midas.state_dict().items():
        assert torch.equal(v.cpu(), saved[k]), k
    big = _texture(300, 200, seed=5)
    # small frames keep the CPU cost down; the network is fully convolutional (input = 2x clip size)
    sq = np.stack([big[10:74, 10 + 2 * t:74 + 2 * t] for t in range(3)])
    pt = np.stack([big[20 + t:132 + t, 30:94] for t in range(2)])
    together = model([_clip(sq), _clip(pt, "portrait")])
    model.cfg = dataclasses.replace(cfg, condition_batch=1)  # same weights, one frame per forward
    one_by_one = model([_clip(sq), _clip(pt, "portrait")])
    for x, z, r in zip(together, one_by_one, (sq, pt)):
        assert x.shape == r.shape and x.dtype == np.uint8
        assert x[..., 2].min() == 0 and x[..., 2].max() == 255  # per-clip min-max
        assert np.abs(x.astype(int) - z.astype(int)).max() <= 1
    # the official checkpoint wrapper {"model": ..., "optimizer": ...} loads too; a missing key does not
    torch.save({"model": saved, "optimizer": {}}, tmp_path / "wrapped.pt")
    unwrapped = load_state_dict_file(str(tmp_path / "wrapped.pt"))
    assert unwrapped.keys() == saved.keys() and all(torch.equal(unwrapped[k], saved[k]) for k in saved)
    partial = {k: v for k, v in saved.items() if not k.startswith("scratch.output_conv")}
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(RuntimeError, match="output_conv"):
        ConditionModel(dataclasses.replace(cfg, midas_checkpoint=str(tmp_path / "partial.pt")))


# Official isl-org/MiDaS v3 DPT-Large (dpt_large_384.pt / dpt_large-midas-2f21e586.pt) names and shapes,
# from the MiDaS source: _make_vit_b16_backbone(vit_large_patch16_384, features=[256, 512, 1024, 1024],
# hooks=[5, 11, 17, 23], vit_features=1024, use_readout="project"), _make_scratch(..., 256), the DPT head.
OFFICIAL_DPT_LARGE_SPOT = {
    "pretrained.model.cls_token": (1, 1, 1024),
    "pretrained.model.pos_embed": (1, 577, 1024),  # 24x24 patches + class token
    "pretrained.model.patch_embed.proj.weight": (1024, 3, 16, 16),
    "pretrained.model.blocks.23.attn.qkv.weight": (3072, 1024),
    "pretrained.model.head.weight": (1000, 1024),
    "pretrained.act_postprocess1.0.project.0.weight": (1024, 2048),
    "pretrained.act_postprocess1.3.weight": (256, 1024, 1, 1),
    "pretrained.act_postprocess1.4.weight": (256, 256, 4, 4),  # ConvTranspose2d x4
    "pretrained.act_postprocess2.4.weight": (512, 512, 2, 2),  # ConvTranspose2d x2
    "pretrained.act_postprocess3.3.weight": (1024, 1024, 1, 1),
    "pretrained.act_postprocess4.4.weight": (1024, 1024, 3, 3),  # stride-2 conv
    "scratch.layer1_rn.weight": (256, 256, 3, 3),
    "scratch.layer4_rn.weight": (256, 1024, 3, 3),
    "scratch.refinenet1.resConfUnit2.conv2.bias": (256,),
    "scratch.output_conv.0.weight": (128, 256, 3, 3),
    "scratch.output_conv.2.weight": (32, 128, 3, 3),
    "scratch.output_conv.4.weight": (1, 32, 1, 1),
}


def test_dpt_large_has_the_official_layout_and_a_small_dpt_runs_and_reloads(tmp_path):
    with torch.device("meta"):  # names and shapes only: no 1.3 GB of weights on a test machine
        large = build_midas("dpt_large_384").state_dict()
    for k, shape in OFFICIAL_DPT_LARGE_SPOT.items():
        assert tuple(large[k].shape) == shape, k
    assert not any(k.startswith("pretrained.act_postprocess") and k.split(".")[2] in ("1", "2") for k in large)
    # the same module code over a small ViT: forward, non-square inputs, strict reload, batching
    torch.manual_seed(0)
    small = build_midas("dpt_large_384", vit_name="vit_small_patch16_384").eval()
    torch.save(small.state_dict(), tmp_path / "dpt_small.pt")
    again = build_midas("dpt_large_384", vit_name="vit_small_patch16_384").eval()
    again.load_state_dict(load_state_dict_file(str(tmp_path / "dpt_small.pt")), strict=True)
    x = torch.randn(3, 3, 128, 96)
    with torch.inference_mode():
        batched = again(x)
        single = torch.cat([again(x[i:i + 1]) for i in range(3)])
        ref = small(x)
    assert batched.shape == (3, 128, 96) and (batched >= 0).all()
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batched, ref)
