"""Autoregressive sampling from the prefix LM (paper §4, §7.2).

    gen = generate(model, "t2v", request_row("t2v", text_emb=emb, text_mask=mask),
                   SamplingConfig(temperature=1.0, top_k=0, top_p=0.9, cfg_scale=4.0, seed=0))
    gen.video_codes  # LongTensor [B, t, h, w] raw MAGVIT-v2 codes, ready for VideoTokenizer.decode

How it decodes:
- the task's layout (pipeline.tasks) fixes everything but the generated codes: the prefix goes
  through the model once (bidirectional), then one position at a time through a KV cache;
- special tokens of the output (<eov_o>, <boa_o>, <eos>, ...) are forced, and every sampled
  position is restricted to its modality's ids: visual ids for video, and for audio the ids of
  the RVQ level that position belongs to (level-major layout), so the output always decodes;
- classifier-free guidance (per modality: cfg_scale at visual positions, audio_cfg_scale at
  audio ones, defaulting to cfg_scale) runs the conditional and the unconditional sequence (text mask all
  False, i.e. the learned null text) as one batch of 2B through the same cache and mixes
  logits = cond + (s - 1) * (cond - uncond), which is exactly the conditional logits at s = 1;
- temperature (0 = greedy), top-k and top-p filter the mixed logits; draws come from one
  torch.Generator seeded by `seed`, so the same seed gives the same tokens.

Longer videos (§7.2): `extend_video` decodes the last 5 frames, COMMIT-encodes them as the fp5
condition (the frame-prediction task the model was trained on) and generates the next clip;
each round adds 12 frames.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from videopoet.pipeline import vocab as V
from videopoet.pipeline.tasks import TASK_NAMES, Layout, build_layout

FP_CONDITION_FRAMES = 5


@dataclass
class SamplingConfig:
    temperature: float = 1.0  # 0: greedy
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    cfg_scale: float | None = None  # None: no guidance; s: cond + (s - 1) * (cond - uncond)
    seed: int = 0
    audio_cfg_scale: float | None = None  # guidance at audio positions; None: cfg_scale there too

    def scale_for(self, lo: int) -> float | None:
        """The guidance scale of an output position whose ids start at `lo` (per modality)."""
        if lo >= V.AUDIO_RANGE[0] and self.audio_cfg_scale is not None:
            return self.audio_cfg_scale
        return self.cfg_scale

    @property
    def guided(self) -> bool:
        return self.cfg_scale is not None or self.audio_cfg_scale is not None

    def validate(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature} must be >= 0")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k} must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must lie in (0, 1]")


@dataclass
class Generation:
    tokens: torch.Tensor  # [B, L] the whole sequences, prefix included
    layout: Layout  # layout of the first row (all rows share prefix_len and length)
    video_codes: torch.Tensor | None  # [B, t, h, w] raw visual codes, or None
    audio_codes: torch.Tensor | None  # [B, 4, F] raw audio codes, or None
    step_logits: list[torch.Tensor] | None = None  # per sampled position: mixed logits [B, hi - lo]
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------------
# requests


def _latent_grid(num_frames: int, video_format: str) -> tuple[int, int, int]:
    return 1 + (num_frames - 1) // 4, (28 if video_format == "portrait" else 16), 16


def request_row(task: str, *, num_frames: int | None = None, video_format: str = "square",
                text_emb=None, text_mask=None, first_frame_tokens=None, condition_tokens=None,
                audio_tokens=None, audio_frames: int | None = None, video_tokens=None) -> dict[str, Any]:
    """A token-shard-like row holding the inputs of `task`; what the model generates is zeros.

    condition_tokens fill the column the task reads (fp1/fp5/inpaint/outpaint/style tokens, raw
    codes [t*h*w]); audio_tokens are raw level-major codes [4*F]; text_emb float [64, text_dim].
    """
    if task not in TASK_NAMES:
        raise ValueError(f"task={task!r}: unknown; tasks: {', '.join(TASK_NAMES)}")
    frames = num_frames or (1 if task == "t2i" else 17)
    t, h, w = _latent_grid(frames, video_format)
    if audio_frames is None:
        audio_frames = 0 if audio_tokens is None else int(np.asarray(audio_tokens).size) // V.AUDIO_LEVELS
    if task in ("v2a", "avcont") and audio_tokens is None:
        audio_frames = int(frames / 8 * 50)  # 50 Hz SoundStream frames of the clip
        audio_tokens = np.zeros(V.AUDIO_LEVELS * audio_frames, dtype=np.int64)
    row: dict[str, Any] = {
        "key": f"request-{task}", "video_format": video_format, "num_frames": frames,
        "latent_t": t, "latent_h": h, "latent_w": w,
        "video_tokens": np.zeros(t * h * w, np.int64) if video_tokens is None else np.asarray(video_tokens).reshape(-1),
        "first_frame_tokens": None if first_frame_tokens is None else np.asarray(first_frame_tokens).reshape(-1),
        "audio_tokens": None if audio_tokens is None else np.asarray(audio_tokens).reshape(-1),
        "audio_frames": audio_frames,
        "text_emb": text_emb, "text_mask": text_mask,
    }
    if task == "style":  # a request's first frame is used when given (training picks a share of clips)
        row["style_first_frame"] = first_frame_tokens is not None
    cond_column = {"fp1": "fp1_tokens", "fp5": "fp5_tokens", "inpaint": "inpaint_tokens",
                   "outpaint": "outpaint_tokens", "style": "style_tokens", "avcont": "fp1_tokens"}
    if condition_tokens is not None:
        if task not in cond_column:
            raise ValueError(f"task {task!r} takes no condition tokens")
        row[cond_column[task]] = np.asarray(condition_tokens).reshape(-1)
    return row


# ---------------------------------------------------------------------------------------------
# filtering and drawing


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set to -inf everything outside the top-k and outside the smallest set holding top_p of the mass."""
    if top_k and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs >= top_p  # the mass before this token already reaches top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def draw(logits: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator | Sequence[torch.Generator]
         ) -> torch.Tensor:
    """One id per row of logits [B, N] (indices into N); `generator` one for all rows, or one per row."""
    if cfg.temperature == 0:
        return logits.argmax(-1)
    logits = filter_logits(logits.float() / cfg.temperature, cfg.top_k, cfg.top_p)
    # Gumbel-max: argmax(logits + Gumbel noise) is a draw from softmax(logits). Over 262,144 visual
    # ids it is several times faster than torch.multinomial on the CPU, and uses one generator call.
    if isinstance(generator, torch.Generator):
        u = torch.rand(logits.shape, generator=generator, device=logits.device)
    else:  # per row: row i draws what a batch of one seeded like generator[i] would
        u = torch.stack([torch.rand(logits.shape[1:], generator=g, device=logits.device) for g in generator])
    u = u.clamp_(min=1e-20)
    return (logits - torch.log(-torch.log(u))).argmax(-1)


# ---------------------------------------------------------------------------------------------
# decoding


def _text_tensors(rows: Sequence[dict], text_dim: int, device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if all(r.get("text_emb") is None for r in rows):
        return None, None
    embs, masks = [], []
    for r in rows:
        emb = r.get("text_emb")
        if emb is None:
            embs.append(torch.zeros(V.TEXT_SLOTS, text_dim))
            masks.append(torch.zeros(V.TEXT_SLOTS, dtype=torch.bool))
            continue
        emb = torch.as_tensor(np.asarray(emb, dtype=np.float32)).reshape(V.TEXT_SLOTS, -1)
        if emb.shape[-1] != text_dim:
            raise ValueError(f"text_emb width {emb.shape[-1]} != the model's text_dim {text_dim} "
                             "(use the text encoder the model was trained with)")
        embs.append(emb)
        mask = r.get("text_mask")
        masks.append(torch.ones(V.TEXT_SLOTS, dtype=torch.bool) if mask is None
                     else torch.as_tensor(np.asarray(mask, dtype=bool)))
    return torch.stack(embs).to(device), torch.stack(masks).to(device)


@torch.no_grad()
def generate(model, task: str, rows: dict | Sequence[dict], cfg: SamplingConfig | None = None, *,
             device=None, progress: bool = False, record_logits: bool = False,
             max_new_tokens: int | None = None, row_seeds: Sequence[int] | None = None) -> Generation:
    """Sample the output of `task` for each request row (see request_row) with a KV cache.

    `max_new_tokens` stops after that many output positions (a preview): the tokens hold what was
    sampled, the rest stays a placeholder, and video_codes/audio_codes are None. `row_seeds` (one per
    row) gives every row its own generator instead of one seeded by cfg.seed, so a row's draws do not
    depend on the batch it is in (the eval job seeds each example by its index).
    """
    cfg = cfg or SamplingConfig()
    cfg.validate()
    rows = [rows] if isinstance(rows, dict) else list(rows)
    model.eval()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if model.cfg.vocab_size != V.VOCAB_SIZE:
        raise ValueError(f"model vocab_size={model.cfg.vocab_size}; sampling needs the unified {V.VOCAB_SIZE}")
    layouts = [build_layout(task, r) for r in rows]
    layout = layouts[0]
    for other in layouts[1:]:
        if (len(other), other.prefix_len, other.text_start) != (len(layout), layout.prefix_len, layout.text_start):
            raise ValueError("all rows of one generate() call need the same layout shape (same format, inputs, text)")
    B, L, P = len(rows), len(layout), layout.prefix_len
    tokens = torch.as_tensor(np.stack([lay.tokens for lay in layouts]), device=device)
    text_emb, text_mask = _text_tensors(rows, model.cfg.text_dim, device)
    guided = cfg.guided
    if guided and layout.text_start is None:
        raise ValueError(f"classifier-free guidance needs text; the {task!r} layout of this request has none")
    if guided:
        # second half: the same prompt with every text slot masked (the learned null text)
        uncond_mask = torch.zeros(B, V.TEXT_SLOTS, dtype=torch.bool, device=device)
        text_mask = torch.cat([text_mask if text_mask is not None else uncond_mask, uncond_mask])
        text_emb = None if text_emb is None else torch.cat([text_emb, text_emb])
    n_seq = 2 * B if guided else B

    if row_seeds is None:
        generator = torch.Generator(device=device).manual_seed(cfg.seed)
    else:
        if len(row_seeds) != B:
            raise ValueError(f"row_seeds: {len(row_seeds)} seeds for {B} rows")
        generator = [torch.Generator(device=device).manual_seed(int(s)) for s in row_seeds]
    cache = model.new_kv_cache(n_seq, L, device=device)
    prompt = tokens[:, :P].repeat(2, 1) if guided else tokens[:, :P]
    hidden = model(prompt, P, text_emb, text_mask, layout.text_start, kv_cache=cache)[:, -1]
    plan = layout.output_plan()
    partial = max_new_tokens is not None and max_new_tokens < len(plan)
    if partial:
        plan = plan[:max_new_tokens]
    step_logits: list[torch.Tensor] | None = [] if record_logits else None
    start = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(plan), desc=f"sample {task}", unit="tok")
    for i, (forced, lo, hi) in enumerate(plan):
        pos = P + i
        if forced >= 0:
            nxt = torch.full((B,), forced, dtype=tokens.dtype, device=device)
        else:
            logits = model.logits(hidden, lo, hi).float()
            if guided:
                cond, uncond = logits[:B], logits[B:]
                scale = cfg.scale_for(lo)
                logits = cond if scale is None else cond + (scale - 1.0) * (cond - uncond)
            if step_logits is not None:
                step_logits.append(logits.cpu())
            nxt = lo + draw(logits, cfg, generator)
        tokens[:, pos] = nxt
        if bar is not None:
            bar.update(1)
        if pos + 1 < P + len(plan):
            feed = nxt[:, None].repeat(2, 1) if guided else nxt[:, None]
            hidden = model(feed, P, kv_cache=cache)[:, -1]
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
        print(f"sampled {B} x {len(plan)} tokens ({task}, cfg_scale={cfg.cfg_scale}) in {seconds:.1f} s "
              f"({B * len(plan) / max(seconds, 1e-9):.1f} tok/s)")

    video_codes = audio_codes = None
    out = tokens.cpu().numpy()
    for seg in layout.segments:
        if not seg.output or partial:
            continue
        ids = out[:, seg.start: seg.start + seg.length]
        if seg.kind == "visual":
            t, h, w = int(rows[0]["latent_t"]), int(rows[0]["latent_h"]), int(rows[0]["latent_w"])
            video_codes = torch.as_tensor(V.visual_codes(ids)).reshape(B, t, h, w)
        elif seg.kind == "audio":
            audio_codes = torch.as_tensor(np.stack([V.audio_codes(r) for r in ids]))
    return Generation(tokens.cpu(), layout, video_codes, audio_codes, step_logits, seconds)


# ---------------------------------------------------------------------------------------------
# longer videos (paper §7.2)


def fp5_condition(video_tokenizer, last_frames: torch.Tensor, num_frames: int = 17) -> torch.Tensor:
    """COMMIT fp5 condition tokens [B, t*h*w] from the last 5 frames [B, 3, 5, H, W] in [-1, 1]."""
    from videopoet.tokenizers.commit import condition_video

    if last_frames.shape[2] != FP_CONDITION_FRAMES:
        raise ValueError(f"expected {FP_CONDITION_FRAMES} condition frames, got {last_frames.shape[2]}")
    pad = last_frames[:, :, -1:].expand(-1, -1, num_frames - FP_CONDITION_FRAMES, -1, -1)
    video = condition_video(torch.cat([last_frames, pad], dim=2), "fp5")
    return video_tokenizer.encode(video).flatten(1)


@torch.no_grad()
def extend_video(model, video_tokenizer, video_codes: torch.Tensor, rounds: int, cfg: SamplingConfig | None = None,
                 *, text_emb=None, text_mask=None, video_format: str = "square", progress: bool = False
                 ) -> tuple[torch.Tensor, list[Generation]]:
    """Continue generated videos by frame prediction from their last frames (paper §7.2).

    video_codes [B, t, h, w] (a 17-frame clip's codes) -> (pixels float [B, 3, 17 + 12 * rounds, H, W]
    in [-1, 1], the Generation of every new clip). Each round decodes the newest clip, takes its last 5 frames
    as the fp5 COMMIT condition and generates the next 17 frames, whose first 5 repeat the condition.
    """
    cfg = cfg or SamplingConfig()
    frames = video_tokenizer.decode(video_codes)  # [B, 3, T, H, W]
    num_frames = frames.shape[2]
    pieces, gens = [frames.cpu()], []
    current = frames
    for r in range(rounds):
        cond = fp5_condition(video_tokenizer, current[:, :, -FP_CONDITION_FRAMES:], num_frames).cpu().numpy()
        rows = [request_row("fp5", num_frames=num_frames, video_format=video_format, condition_tokens=c,
                            text_emb=None if text_emb is None else text_emb[i],
                            text_mask=None if text_mask is None else text_mask[i]) for i, c in enumerate(cond)]
        round_cfg = SamplingConfig(cfg.temperature, cfg.top_k, cfg.top_p,
                                   cfg.cfg_scale if text_emb is not None else None, cfg.seed + r + 1)
        gen = generate(model, "fp5", rows, round_cfg, progress=progress)
        current = video_tokenizer.decode(gen.video_codes)
        pieces.append(current[:, :, FP_CONDITION_FRAMES:].cpu())
        gens.append(gen)
    return torch.cat(pieces, dim=2), gens


# ---------------------------------------------------------------------------------------------
# loading the consolidated LM export


LM_CHECKPOINT_KIND = "videopoet-lm"


def trained_tasks(path) -> tuple[str, ...] | None:
    """The tasks the export was trained on (its train config's data.tasks), or None when it does not say.

    An empty data.tasks list means "every task the shards could serve": also None (not knowable here).
    """
    from videopoet.checkpoint import read_meta

    extra = read_meta(path).get("extra") or {}
    data = (extra.get("train_config") or {}).get("data") or {}
    tasks = data.get("tasks") or []
    return tuple(tasks) or None


def load_lm(path, device=None):
    """A VideoPoetLM from a consolidated export (videopoet.checkpoint, kind 'videopoet-lm').

    meta.json's config is a train config with a `model` section or a model config itself.
    """
    from videopoet.checkpoint import load_checkpoint
    from videopoet.config import from_dict
    from videopoet.trainer.model import ModelConfig, VideoPoetLM

    tensors, meta = load_checkpoint(path, kind=LM_CHECKPOINT_KIND)
    conf = meta.get("config") or {}
    conf = conf.get("model", conf) if isinstance(conf, dict) else {}
    model = VideoPoetLM(from_dict(ModelConfig, conf))
    state = {k.removeprefix("module."): v for k, v in tensors.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (model.cfg.tie_embeddings and k == "head.weight")]
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit the model config "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval()
