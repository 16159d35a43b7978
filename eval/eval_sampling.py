"""The LM side of `eval generate`: a protocol's examples -> LM request rows -> sampled, decoded uint8 clips.

    generate_samples(protocol, cfg, requests, seeds, models) -> [uint8 [17, H, W, 3]]

`requests` are (ExampleRef, condition clip or None) pairs; `cfg` carries the sampling settings (temperature,
top_k, top_p, cfg_scale, batch_size of eval_job.EvalGenerateConfig); `models` has lm, vt (MAGVIT-v2), text
(the frozen text encoder or None) and device. Conditions are built as in training: fp5 from the first 5 frames
(trainer.sampling.fp5_condition), inpaint/outpaint from the COMMIT-masked clip, style from DIS flow of the
source clip (the ConditionModel ingest runs; no depth), each padded to the LM's 17 frames. Every row is
seeded by its own seed (trainer.sampling.generate `row_seeds`), so a sample does not depend on its batch.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from videopoet.eval.protocols import ExampleRef, Protocol

LM_FRAMES = 17  # the LM's clip length (1 + 4k latent frames); the metrics take the protocol's first `frames`


def pad_frames(rgb: np.ndarray, frames: int) -> np.ndarray:
    """Repeat the last frame up to `frames` (the tokenizer takes 1 + 4k frames; COMMIT's 'edge' fill)."""
    if rgb.shape[0] >= frames:
        return rgb[:frames]
    return np.concatenate([rgb, np.repeat(rgb[-1:], frames - rgb.shape[0], axis=0)])


def style_condition(rgb: np.ndarray, fps: int) -> np.ndarray:
    """(flow x, flow y, depth) of the source clip by the ConditionModel ingest runs (DIS flow, no depth)."""
    from videopoet.pipeline.conditions import ConditionModel
    from videopoet.pipeline.media import MediaConfig
    from videopoet.pipeline.media.clip import DecodedClip

    rgb = pad_frames(rgb, LM_FRAMES)
    clip = DecodedClip(window_index=0, num_frames=rgb.shape[0], format="square", start_time_s=0.0, rgb=rgb,
                       audio=None, source_fps=float(fps), source_frame_indices=list(range(rgb.shape[0])))
    cfg = MediaConfig(clip_frames=(rgb.shape[0],), formats=("square",), flow="dis", depth="none")
    return ConditionModel(cfg)([clip])[0]


def request_for(protocol: Protocol, ref: ExampleRef, cond: np.ndarray | None, m: Any) -> dict[str, Any]:
    """The LM request row of one example: its caption's embedding and its task's condition tokens."""
    from videopoet.tokenizers.magvit2 import video_to_tensor
    from videopoet.trainer.sampling import fp5_condition, request_row

    task = protocol.task
    kw: dict[str, Any] = {}
    if m.text is not None and ref.caption:
        emb, mask, _ = m.text.encode([ref.caption])
        kw.update(text_emb=emb[0].float().numpy(), text_mask=mask[0].numpy())
    with torch.no_grad():
        if task == "fp5":
            video = video_to_tensor(cond).unsqueeze(0).to(m.vt.device)
            kw["condition_tokens"] = fp5_condition(m.vt, video[:, :, :5], LM_FRAMES)[0].cpu().numpy()
        elif task in ("inpaint", "outpaint", "style"):
            if task == "style":
                cond = style_condition(cond, protocol.fps)
            video = video_to_tensor(pad_frames(cond, LM_FRAMES)).unsqueeze(0).to(m.vt.device)
            kw["condition_tokens"] = m.vt.encode(video).flatten().cpu().numpy()
    return request_row(task, num_frames=LM_FRAMES, **kw)


def generate_samples(protocol: Protocol, cfg: Any, requests: Sequence[tuple[ExampleRef, np.ndarray | None]],
                     seeds: Sequence[int], m: Any) -> list[np.ndarray]:
    """LM samples (uint8 [17, H, W, 3]) of the examples, in batches of rows that share a layout."""
    from videopoet.tokenizers.magvit2 import tensor_to_video
    from videopoet.trainer.sampling import SamplingConfig, generate

    rows = [request_for(protocol, ref, cond, m) for ref, cond in requests]
    out: list[np.ndarray | None] = [None] * len(rows)
    shapes: dict[Any, list[int]] = {}
    for i, row in enumerate(rows):
        shapes.setdefault(row.get("text_emb") is not None, []).append(i)
    for with_text, members in shapes.items():
        # guidance mixes with the null text: only rows that have a caption can be guided
        scfg = SamplingConfig(cfg.temperature, cfg.top_k, cfg.top_p, cfg.cfg_scale if with_text else None,
                              protocol.seed)
        for s in range(0, len(members), cfg.batch_size):
            part = members[s:s + cfg.batch_size]
            gen = generate(m.lm, protocol.task, [rows[i] for i in part], scfg, device=m.device,
                           row_seeds=[seeds[i] for i in part])
            with torch.no_grad():
                video = m.vt.decode(gen.video_codes.to(m.device)).float().cpu()
            for i, v in zip(part, video):
                out[i] = tensor_to_video(v).numpy()
    return out  # type: ignore[return-value]
