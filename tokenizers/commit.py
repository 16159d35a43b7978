"""COMMIT encoding (MAGVIT v1, arXiv 2212.05199): condition tokens from a masked, padded video.

For each task the condition video is the input with everything outside the condition region
replaced by a fill that depends only on the condition region (so no target pixel leaks into it):

| task     | condition region                         | fill for the rest                                  |
|----------|------------------------------------------|----------------------------------------------------|
| fp1      | frame 0                                  | 'edge': frame 0 repeated                           |
| fp5      | frames 0..4                              | 'edge': frame 4 repeated                           |
| inpaint  | everything but the central H/2 x W/2 box | 'constant': black (MAGVIT's 0 in [0,1] = -1 here)  |
| outpaint | the central H/2 x W/2 box                | 'edge': the box's border pixels replicated outward |

Condition tokens = tokenizer.encode(condition video); target tokens = tokenizer.encode(video).
The latent mask marks the latent positions that are condition: for frame prediction the latent
frames determined by the condition frames alone (frame 0 -> latent 0; frames 4k-3..4k -> latent k,
so 1 frame -> 1 latent frame and 5 frames -> 2), for the spatial tasks the latent cells whose whole
8x8 pixel block is inside the condition region. All tasks are tokenized in one batched pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TASKS = ("fp1", "fp5", "inpaint", "outpaint")
FP_FRAMES = {"fp1": 1, "fp5": 5}
INPAINT_FILL = -1.0  # black in [-1, 1]


def _box(h: int, w: int) -> tuple[int, int, int, int]:
    """Central H/2 x W/2 box (top, bottom, left, right)."""
    return h // 4, h // 4 + h // 2, w // 4, w // 4 + w // 2


def pixel_mask(task: str, frames: int, height: int, width: int) -> torch.Tensor:
    """Bool [T, H, W]: True where pixels are condition (kept), False where they are masked."""
    mask = torch.zeros(frames, height, width, dtype=torch.bool)
    if task in FP_FRAMES:
        mask[: FP_FRAMES[task]] = True
        return mask
    top, bottom, left, right = _box(height, width)
    if task == "inpaint":
        mask[:] = True
        mask[:, top:bottom, left:right] = False
    elif task == "outpaint":
        mask[:, top:bottom, left:right] = True
    else:
        raise ValueError(f"COMMIT task {task!r}: expected one of {', '.join(TASKS)}")
    return mask


def condition_video(video: torch.Tensor, task: str) -> torch.Tensor:
    """[B, 3, T, H, W] in [-1, 1] -> the padded condition video of `task` (same shape)."""
    _, _, t, h, w = video.shape
    if task in FP_FRAMES:
        n = FP_FRAMES[task]
        if t <= n:
            raise ValueError(f"COMMIT {task}: needs more than {n} frames, the video has {t}")
        last = video[:, :, n - 1: n].expand(-1, -1, t - n, -1, -1)
        return torch.cat([video[:, :, :n], last], dim=2)
    top, bottom, left, right = _box(h, w)
    if task == "inpaint":
        out = video.clone()
        out[:, :, :, top:bottom, left:right] = INPAINT_FILL
        return out
    if task == "outpaint":
        centre = video[:, :, :, top:bottom, left:right]
        return F.pad(centre, (left, w - right, top, h - bottom, 0, 0), mode="replicate")
    raise ValueError(f"COMMIT task {task!r}: expected one of {', '.join(TASKS)}")


def latent_mask(task: str, frames: int, height: int, width: int,
                temporal_factor: int = 4, spatial_factor: int = 8) -> torch.Tensor:
    """Bool [t, h, w]: True at latent positions that are condition tokens for `task`."""
    t = 1 + (frames - 1) // temporal_factor
    h, w = height // spatial_factor, width // spatial_factor
    if task in FP_FRAMES:
        mask = torch.zeros(t, h, w, dtype=torch.bool)
        mask[: 1 + (FP_FRAMES[task] - 1) // temporal_factor] = True
        return mask
    pix = pixel_mask(task, 1, height, width)[0].float()
    # a latent cell is condition when its whole pixel block is (min-pool of the pixel mask)
    cells = -F.max_pool2d(-pix[None, None], spatial_factor)[0, 0] > 0.5
    return cells.unsqueeze(0).expand(t, h, w).clone()


def tasks_for(frames: int) -> tuple[str, ...]:
    """The COMMIT tasks that apply to a clip of `frames` frames (images get the spatial ones)."""
    return tuple(task for task in TASKS if task not in FP_FRAMES or frames > FP_FRAMES[task])


@torch.no_grad()
def commit_condition_tokens(tokenizer, video: torch.Tensor,
                            tasks: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    """Condition tokens {task: LongTensor[B, t, h, w]} of `video` [B, 3, T, H, W] in [-1, 1].

    Default tasks: fp1, fp5, inpaint, outpaint (the frame-prediction ones only when the clip is
    longer than their condition). One tokenizer call encodes every task's condition video.
    """
    tasks = tasks_for(video.shape[2]) if tasks is None else tuple(tasks)
    if not tasks:
        return {}
    conds = torch.cat([condition_video(video, task) for task in tasks], dim=0)
    tokens = tokenizer.encode(conds)
    return dict(zip(tasks, tokens.chunk(len(tasks), dim=0)))


def commit_latent_masks(tokenizer, frames: int, height: int, width: int,
                        tasks: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    """{task: Bool[t, h, w]} latent condition masks for clips of this shape and this tokenizer."""
    tasks = tasks_for(frames) if tasks is None else tuple(tasks)
    cfg = tokenizer.cfg
    return {task: latent_mask(task, frames, height, width, cfg.temporal_factor, cfg.spatial_factor)
            for task in tasks}
