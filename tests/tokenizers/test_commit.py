"""COMMIT: fills, latent masks, and no leakage of masked pixels into condition tokens."""

import pytest
import torch

from videopoet.tokenizers.commit import (
    TASKS,
    commit_condition_tokens,
    commit_latent_masks,
    condition_video,
    latent_mask,
    pixel_mask,
)
from videopoet.tokenizers.magvit2 import VideoTokenizer


@pytest.fixture(scope="module")
def tokenizer():
    torch.manual_seed(0)
    return VideoTokenizer.from_recipe("tiny")


def _video(seed=0, t=17, h=32, w=32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, t, h, w, generator=g) * 2 - 1


@pytest.mark.parametrize("task", TASKS)
def test_condition_tokens_ignore_masked_pixels(tokenizer, task):
    video = _video()
    keep = pixel_mask(task, 17, 32, 32)  # [T, H, W]
    other = torch.where(keep, video, _video(seed=5))  # same condition pixels, new masked pixels
    assert not torch.equal(other, video)
    a = commit_condition_tokens(tokenizer, video, (task,))[task]
    b = commit_condition_tokens(tokenizer, other, (task,))[task]
    assert torch.equal(a, b)
    # ...while the target tokens (the whole video) do change
    assert not torch.equal(tokenizer.encode(video), tokenizer.encode(other))
    # and the condition pixels themselves are kept verbatim in the condition video
    cond = condition_video(video, task)
    assert torch.equal(cond[:, :, keep], video[:, :, keep])


def test_fills():
    video = _video(h=16, w=16)
    fp5 = condition_video(video, "fp5")
    assert torch.equal(fp5[:, :, 5:], video[:, :, 4:5].expand(-1, -1, 12, -1, -1))
    inp = condition_video(video, "inpaint")
    assert (inp[:, :, :, 4:12, 4:12] == -1).all()
    out = condition_video(video, "outpaint")
    assert torch.equal(out[:, :, :, 0, 4:12], video[:, :, :, 4, 4:12])  # top edge replicated up
    assert torch.equal(out[:, :, :, 4:12, 15], video[:, :, :, 4:12, 11])  # right edge replicated
    assert torch.equal(out[:, :, :, 0, 0], video[:, :, :, 4, 4])  # corner from the box corner


def test_latent_masks_match_pixel_masks(tokenizer):
    masks = commit_latent_masks(tokenizer, 17, 128, 128)
    assert set(masks) == set(TASKS)
    assert masks["fp1"].shape == (5, 16, 16)
    assert masks["fp1"].any(dim=(1, 2)).tolist() == [True, False, False, False, False]
    assert masks["fp5"].any(dim=(1, 2)).tolist() == [True, True, False, False, False]
    assert masks["fp5"][:2].all()
    hole = ~masks["inpaint"][0]
    assert hole[4:12, 4:12].all() and hole.sum() == 64
    assert torch.equal(masks["outpaint"][0], hole)
    # portrait 224 x 128: box rows 56..168 -> latent 7..21, cols 32..96 -> latent 4..12
    lm = latent_mask("outpaint", 17, 224, 128)
    assert lm.shape == (5, 28, 16) and lm[0, 7:21, 4:12].all() and lm[0].sum() == 14 * 8
    # every condition latent cell covers only condition pixels
    pm = pixel_mask("inpaint", 17, 128, 128)[0]
    for i, j in masks["inpaint"][0].nonzero().tolist():
        assert pm[8 * i: 8 * i + 8, 8 * j: 8 * j + 8].all()


@pytest.mark.parametrize("task,latents", [("fp1", 1), ("fp5", 2)])
def test_frame_prediction_condition_tokens_equal_target_tokens_on_the_mask(tokenizer, task, latents):
    # causal tokenizer: latents determined by the condition frames alone are the target's latents
    video = _video()
    cond = commit_condition_tokens(tokenizer, video, (task,))[task]
    target = tokenizer.encode(video)
    assert torch.equal(cond[:, :latents], target[:, :latents])
    assert not torch.equal(cond[:, latents:], target[:, latents:])


def test_images_get_spatial_tasks_only(tokenizer):
    tokens = commit_condition_tokens(tokenizer, _video(t=1))
    assert set(tokens) == {"inpaint", "outpaint"}
    assert tokens["inpaint"].shape == (2, 1, 4, 4)
    with pytest.raises(ValueError, match="fp5"):
        condition_video(_video(t=5), "fp5")
    with pytest.raises(ValueError, match="task"):
        pixel_mask("nope", 1, 8, 8)
