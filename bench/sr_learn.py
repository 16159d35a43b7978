"""SR learning bench (issue 15): does the tiny SR transformer beat tokenizing the bicubic-upsampled LR video?

    python bench/sr_learn.py                       # 9-minute CPU budget, JSON to bench/results/sr_learn.json
    python bench/sr_learn.py --minutes 3 --clips 128 --held-out 16 --out /tmp/sr.json   # a quick look
    python bench/sr_learn.py --tokenizer-only --minutes 10 --work /tmp/tok   # only train + check a tokenizer,
    python bench/sr_learn.py --tokenizer /tmp/tok/tokenizer_run/tokenizer     # then give SR the whole budget

The issue 15 acceptance run (docs/results/2026-12-04-sr-learning.md, "Third attempt"): every shape striped, a
4x-spatial tokenizer trained separately, then the SR bench in under 10 minutes:

    python bench/sr_learn.py --tokenizer-only --stripes 1.0 --minutes 9 --threads 2 --work /tmp/tok \
        --tokenizer-image-steps 3000 --tokenizer-override 'model.channel_mult=[1,2,2]' \
        'model.temporal_down=[True,True]' 'model.entropy_weight=0.005' 'batch_size=8'
    python bench/sr_learn.py --tokenizer /tmp/tok/tokenizer_run/tokenizer --stripes 1.0 --minutes 9.5 \
        --threads 2 --batch 8 --sr-override optim.lr=0.003

In one process on the CPU, nothing downloaded:
1. data: moving-shape HR clips (bench/tokenizer.py's generator, imported) of 9 x 64 x 64, colours snapped
   to `--levels` per channel (see below); the first `--held-out` clips are held out of every training.
   LR = pipeline.sr_downsample.downsample_2x (torch bicubic, antialias, rounded to uint8): 9 x 32 x 32.
2. tokenizer: the tiny MAGVIT-v2 trained by tokenizers.train_video.train (GAN off) for a third of the
   budget on random 32 x 32 crops of the training HR clips (fully convolutional: a crop keeps the pixel
   scale and makes a step 4-5x cheaper than a 64 x 64 clip), or --tokenizer DIR.
3. tokens: HR tokens (3, 8, 8), LR tokens (3, 4, 4) of the LR clip at LR size, and the baseline: the
   tokens of the LR clip bicubic-upsampled back to 64 x 64 (rounded to uint8). A second baseline starts
   from what the SR model is given, the LR tokens: their decode, bicubic-upsampled, tokenized (the path a
   cascade without SR would take from the LM's tokens). The first baseline sees the LR pixels, which the
   LR tokens only approximate, so it is the harder one.
4. SR: the tiny SR recipe (hr_grid / windows set to the grid) trained for the rest of the budget by the
   production trainer (trainer.sr.train.SRTrainer: MAGVIT masking, LR noise, condition drops, AdamW,
   warm-up + cosine LR) on SR shards written with pipeline.sr_shards.write_sr_shard. Text: an all-zero
   embedding with text_mask all False (the model's null text slots), so text guidance has nothing to do.
5. held-out report: exact-token and per-group (9-bit lo / hi) accuracy and decoded PSNR against the HR
   video for the SR model (MaskGIT 24 steps at guidance 1 = conditional, temperature 1 and 0; argmax of
   one all-masked pass), the two baselines and a lookup table (each HR token predicted from its parent LR
   token alone: how much one LR token says), with the plain bicubic upsample in pixels and the tokenizer's
   own reconstruction of the HR clip (the ceiling of any token prediction) for reference.

--tokenizer-only trains the tokenizer (step 2) for the whole budget less a check reserve, then checks it on
`--check-clips` extra clips generated after the bench's clips (never trained on, and not the SR held-out set):
its ceiling (decode of the HR tokens), the baseline's decoded PSNR and exact-token accuracy, and plain bicubic
in pixels. A tokenizer only makes the SR comparison meaningful if its ceiling sits clearly above the baseline.

Why colours are snapped (--levels 4: 0/85/170/255 per channel; --levels 0 keeps bench/tokenizer.py's
continuous colours): the SR model sees token ids, so it can only map codes it has seen. With continuous
colours nearly every code of a held-out clip is new (the tokenizer bench counted 320 distinct codes in 384
held-out tokens), a regime that a few hundred clips cannot cover; production data (millions of clips)
repeats codes. Snapping colours gives the same geometry and motion with codes that recur.
"""

from __future__ import annotations

import os
import sys

# `python bench/sr_learn.py` puts bench/ first on sys.path, where bench/tokenize.py would shadow the
# standard library's `tokenize` (imported by dataclasses -> inspect, and by linecache): drop the script's
# folder before anything imports it.
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != os.path.dirname(os.path.realpath(__file__))]

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from videopoet.eval.video_metrics import psnr  # noqa: E402
from videopoet.pipeline.clip_shards import Clip, write_clip_shard  # noqa: E402
from videopoet.pipeline.sr_downsample import downsample_2x  # noqa: E402
from videopoet.pipeline.sr_shards import TEXT_SLOTS, write_sr_shard  # noqa: E402
from videopoet.tokenizers.lfq import join_tokens, split_tokens  # noqa: E402
from videopoet.tokenizers.magvit2 import VideoTokenizer, tensor_to_video, video_to_tensor  # noqa: E402
from videopoet.tokenizers.train_video import RECIPES as TOKENIZER_RECIPES  # noqa: E402
from videopoet.tokenizers.train_video import train as train_tokenizer  # noqa: E402
from videopoet.trainer.sr.config import RECIPES_TRAIN as SR_RECIPES  # noqa: E402
from videopoet.trainer.sr.model import MASK_ID  # noqa: E402
from videopoet.trainer.sr.sampling import SRSamplingConfig, sample  # noqa: E402
from videopoet.trainer.sr.train import SRTrainer  # noqa: E402

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"


def _moving_shapes_generator():
    """bench/tokenizer.py's `_moving_shapes` (bench/ is scripts, not a package: loaded by path)."""
    spec = importlib.util.spec_from_file_location("bench_tokenizer", BENCH / "tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._moving_shapes


def stripe_shapes(rgb: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Period-2 horizontal stripes on a random `fraction` of the shapes: detail a 2x downsample removes.

    A striped shape alternates two colours in {0, 255}^3 that differ in one channel (0 on even rows, 255 on
    odd ones), so its LR version is a flat colour with ~128 in that channel, which no flat shape has after
    `snap_colours`: the LR video says which stripes to draw, the bicubic upsample cannot draw them."""
    shape_px = rgb.min(-1) >= 100  # _moving_shapes: background channels < 100, shape channels >= 100
    odd_rows = (np.arange(rgb.shape[1]) % 2 == 1)[None, :, None]
    out = rgb.copy()
    for colour in np.unique(rgb[shape_px], axis=0):
        if rng.random() >= fraction:
            continue
        even = np.where(colour >= 178, 255, 0).astype(np.uint8)
        odd = even.copy()
        channel = int(rng.integers(3))
        even[channel], odd[channel] = 0, 255
        where = shape_px & np.all(rgb == colour, axis=-1)
        out[where & ~odd_rows], out[where & odd_rows] = even, odd
    return out


def snap_colours(rgb: np.ndarray, levels: int) -> np.ndarray:
    """Every channel to the nearest of `levels` evenly spaced values in 0..255 (0: unchanged)."""
    if levels <= 0:
        return rgb
    step = 255.0 / (levels - 1)
    return (np.round(rgb / step) * step).round().clip(0, 255).astype(np.uint8)


def upsample_2x(rgb: np.ndarray) -> np.ndarray:
    """uint8 [T, h, w, 3] -> uint8 [T, 2h, 2w, 3]: torch bicubic, rounded (the baseline's input)."""
    t, h, w, _ = rgb.shape
    frames = torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2).float()
    big = F.interpolate(frames, size=(2 * h, 2 * w), mode="bicubic", align_corners=False)
    return big.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def random_crop(rgb: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    _, h, w, _ = rgb.shape
    y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    return np.ascontiguousarray(rgb[:, y:y + size, x:x + size])


@torch.inference_mode()
def encode(tok: VideoTokenizer, videos: list[np.ndarray], batch: int) -> torch.Tensor:
    return torch.cat([tok.encode(torch.stack([video_to_tensor(v) for v in videos[i:i + batch]]))
                      for i in range(0, len(videos), batch)])


@torch.inference_mode()
def decode(tok: VideoTokenizer, tokens: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([tok.decode(tokens[i:i + batch]) for i in range(0, len(tokens), batch)])


def token_accuracy(pred: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Exact-token accuracy (both 9-bit groups right) and each group's, over every position."""
    p_lo, p_hi = split_tokens(pred)
    t_lo, t_hi = split_tokens(truth)
    return {"acc_token": float((pred == truth).float().mean()), "acc_lo": float((p_lo == t_lo).float().mean()),
            "acc_hi": float((p_hi == t_hi).float().mean())}


def parent_lookup(hr_train: torch.Tensor, lr_train: torch.Tensor, lr_held: torch.Tensor) -> torch.Tensor:
    """How much one LR token says about its 2 x 2 HR tokens: each HR position predicted by the HR token most often
    seen in training under the same (parent LR token, position within the parent); unseen: the commonest HR token.
    HR [N, T, H, W], LR [N, T, H/2, W/2] -> predicted HR [N_held, T, H, W]."""
    def keys(lr: torch.Tensor) -> np.ndarray:
        up = lr.repeat_interleave(2, -2).repeat_interleave(2, -1).numpy().astype(np.int64)
        child = (np.arange(up.shape[-2])[:, None] % 2) * 2 + np.arange(up.shape[-1])[None, :] % 2
        return up * 4 + child
    k, v = keys(lr_train).reshape(-1), hr_train.numpy().reshape(-1)
    pairs, counts = np.unique(np.stack([k, v], 1), axis=0, return_counts=True)
    best: dict[int, tuple[int, int]] = {}
    for (key, hr_id), c in zip(pairs.tolist(), counts.tolist()):
        if c > best.get(key, (0, -1))[0]:
            best[key] = (c, hr_id)
    fallback = int(np.bincount(v).argmax())
    held = keys(lr_held)
    return torch.from_numpy(np.vectorize(lambda key: best.get(key, (0, fallback))[1])(held)).long()


@torch.inference_mode()
def argmax_one_pass(model, lr_tokens: torch.Tensor, text, text_mask) -> torch.Tensor:
    """Every HR position masked, one conditional forward, argmax of each group."""
    tokens = torch.full((lr_tokens.shape[0], *model.cfg.hr_grid), MASK_ID, dtype=torch.long)
    lo, hi = model.logits(model(tokens, lr_tokens, text, text_mask))
    return join_tokens(lo.argmax(-1), hi.argmax(-1))


def log(t0: float, message: str) -> None:
    print(f"[{time.perf_counter() - t0:6.1f} s] {message}", flush=True)


def train_video_tokenizer(args, train_hr: list[np.ndarray], work: Path, seconds: float, t0: float) -> Path:
    """The tiny tokenizer on random 32x32 crops of the training HR clips, GAN off, for `seconds`."""
    rng = np.random.default_rng(args.seed + 7)
    crop = min(args.size, 32)
    crops = [Clip(key=f"crop{i:05d}", rgb=random_crop(v, crop, rng), meta={"caption": "moving shapes"})
             for i, v in enumerate(train_hr)]
    if args.tokenizer_with_lr:  # the LR clips too: the SR model's condition is this tokenizer's LR tokens
        crops += [Clip(key=f"lr{i:05d}", rgb=random_crop(downsample_2x(v), crop, rng),
                       meta={"caption": "moving shapes"}) for i, v in enumerate(train_hr)]
    data = work / "tokenizer_clips"
    for s in range(4):
        write_clip_shard(data / f"shard-{s:05d}.tar", crops[s::4])
    big = 1_000_000  # the time limit ends the run; no LR decay in this trainer
    cfg = TOKENIZER_RECIPES.get("tiny", [
        f"steps={big}", f"image_steps={args.tokenizer_image_steps}", "loss.gan_weight=0",
        f"data.frames={args.frames}", f"data.height={crop}", f"data.width={crop}", "data.eval_clips=0",
        f"eval_every={big}", f"save_every={big}", "log_every=50", *args.tokenizer_override])
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    log(t0, f"training the tiny video tokenizer on {len(crops)} {args.frames}x{crop}x{crop} crops for {seconds:.0f} s")
    history = train_tokenizer(cfg, data, work / "tokenizer_run", time_limit_s=seconds)
    steps = history[-1]["step"] if history else 0
    recon = [h["loss/recon"] for h in history[-20:] if "loss/recon" in h]
    log(t0, f"tokenizer: {steps} steps, last recon loss {np.mean(recon) if recon else float('nan'):.4f}")
    return work / "tokenizer_run" / "tokenizer"


def make_clips(args, indices) -> list[np.ndarray]:
    """HR clips number `indices`: moving shapes, `--stripes` of the shapes striped, colours snapped."""
    moving_shapes = _moving_shapes_generator()
    hr = []
    for i in indices:
        seed = args.seed * 100_000 + i
        rgb = moving_shapes(f"c{i}", seed, args.frames, args.size).rgb
        hr.append(snap_colours(stripe_shapes(rgb, args.stripes, np.random.default_rng(seed)), args.levels))
    return hr


def tokenizer_check(tok: VideoTokenizer, hr: list[np.ndarray], batch: int) -> dict[str, float]:
    """What a tokenizer leaves an SR model to win on these clips: the decode of their HR tokens (the ceiling of
    any token prediction) against the baseline (tokens of the bicubic upsample of the LR clip)."""
    lr = [downsample_2x(v) for v in hr]
    hr_tok = encode(tok, hr, batch)
    base_tok = encode(tok, [upsample_2x(v) for v in lr], batch)
    x = torch.stack([video_to_tensor(v) for v in hr])
    bicubic = torch.stack([video_to_tensor(upsample_2x(v)) for v in lr])
    ceiling = float(psnr(decode(tok, hr_tok, batch), x).mean())
    baseline = float(psnr(decode(tok, base_tok, batch), x).mean())
    lr_recon = decode(tok, encode(tok, lr, batch), batch)
    lr_x = torch.stack([video_to_tensor(v) for v in lr])
    return {"clips": len(hr), "tokenizer_recon_of_hr_psnr": ceiling, "baseline_decoded_psnr": baseline,
            "psnr_headroom_over_baseline_db": ceiling - baseline, "bicubic_pixels_psnr": float(psnr(bicubic, x).mean()),
            "tokenizer_recon_of_lr_psnr": float(psnr(lr_recon, lr_x).mean()),
            **{f"baseline_{k}": v for k, v in token_accuracy(base_tok, hr_tok).items()}}


def run_tokenizer_only(args) -> dict:
    """Train the tokenizer for the whole budget (less a check reserve) and check it on fresh clips."""
    t0 = time.perf_counter()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_sr_tokenizer_"))
    work.mkdir(parents=True, exist_ok=True)
    hr = make_clips(args, range(args.held_out, args.clips))  # the SR bench's training clips only
    seconds = 60 * args.minutes - args.check_reserve_s - (time.perf_counter() - t0)
    tok_path = train_video_tokenizer(args, hr, work, seconds, t0)
    tok = VideoTokenizer.load(tok_path).eval()
    check = tokenizer_check(tok, make_clips(args, range(args.clips, args.clips + args.check_clips)),
                            args.encode_batch)
    log(t0, "tokenizer check on " + ", ".join(f"{k} {v:.3f}" for k, v in check.items()))
    return {"bench": "sr_learn_tokenizer", "device": f"{platform.machine()} ({os.cpu_count()} cores, "
                                                     f"{torch.get_num_threads()} torch threads)",
            "minutes_budget": args.minutes, "seconds_total": time.perf_counter() - t0,
            "tokenizer_train_seconds": seconds, "tokenizer_override": list(args.tokenizer_override),
            "tokenizer_with_lr": args.tokenizer_with_lr,
            "train_clips": len(hr), "clip": [args.frames, args.size, args.size], "colour_levels": args.levels,
            "striped_fraction": args.stripes, "tokenizer": str(tok_path),
            "grid": list(tok.latent_shape(args.frames, args.size, args.size)), "check": check}


def sr_rows(keys, hr_tokens, lr_tokens, text_dim: int) -> list[dict]:
    zeros = np.zeros((TEXT_SLOTS, text_dim), np.float32)
    no_text = np.zeros(TEXT_SLOTS, bool)
    return [{"key": k, "hr_tokens": h.reshape(-1).numpy(), "lr_tokens": low.reshape(-1).numpy(),
             "text_emb": zeros, "text_mask": no_text} for k, h, low in zip(keys, hr_tokens, lr_tokens)]


def run(args) -> dict:
    t0 = time.perf_counter()
    deadline = t0 + 60 * args.minutes
    torch.manual_seed(args.seed)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_sr_learn_"))
    work.mkdir(parents=True, exist_ok=True)

    # 1. data
    hr = make_clips(args, range(args.clips))
    lr = [downsample_2x(v) for v in hr]
    n_held = args.held_out
    held, train = slice(0, n_held), slice(n_held, None)
    log(t0, f"{args.clips} clips of {args.frames}x{args.size}x{args.size} ({n_held} held out), LR "
            f"{args.frames}x{args.size // 2}x{args.size // 2}, colours: "
            f"{f'{args.levels} levels per channel' if args.levels else 'continuous'}, "
            f"{args.stripes:.0%} of shapes striped")

    # 2. tokenizer
    tok_seconds = 0.0
    if args.tokenizer:
        tok_path = Path(args.tokenizer)
    else:
        tok_seconds = 60 * args.minutes * args.tokenizer_share
        tok_path = train_video_tokenizer(args, hr[train], work, tok_seconds, t0)
    tok = VideoTokenizer.load(tok_path).eval()
    grid = tuple(tok.latent_shape(args.frames, args.size, args.size))

    # 3. tokens
    t_enc = time.perf_counter()
    hr_tok = encode(tok, hr, args.encode_batch)
    lr_tok = encode(tok, lr, args.encode_batch)
    base_tok = encode(tok, [upsample_2x(v) for v in lr[held]], args.encode_batch)
    # the same baseline from what the SR model is given, the LR tokens: their decode, bicubic-upsampled, tokenized
    lr_decoded = [tensor_to_video(v).numpy() for v in decode(tok, lr_tok[held], args.encode_batch)]
    base_from_lr_tok = encode(tok, [upsample_2x(v) for v in lr_decoded], args.encode_batch)
    log(t0, f"tokenized: HR grid {list(grid)}, LR grid {list(lr_tok.shape[1:])} in {time.perf_counter() - t_enc:.0f} s;"
            f" {torch.unique(hr_tok[train]).numel()} distinct HR codes in training, "
            f"{torch.unique(hr_tok[held]).numel()} held out "
            f"({int(np.isin(hr_tok[held].numpy(), hr_tok[train].numpy()).mean() * 100)}% of held-out HR tokens "
            "occur in training)")
    x_held = torch.stack([video_to_tensor(v) for v in hr[held]])
    t_dec = time.perf_counter()
    recon = decode(tok, hr_tok[held], args.encode_batch)
    dec_s = time.perf_counter() - t_dec

    # 4. SR model: the production trainer on SR shards
    cfg = SR_RECIPES.get("tiny", list(args.sr_override))
    t, h, w = grid
    cfg.model = dataclasses.replace(cfg.model, hr_grid=grid, windows=((1, h, 2), (1, 2, w), (t, 2, 2)))
    cfg.data = dataclasses.replace(cfg.data, batch_size=args.batch, seed=args.seed, eval_examples=0)
    cfg.steps = 1_000_000  # replaced by the estimate from the first steps (it sets the cosine LR decay)
    keys = [f"c{i}" for i in range(args.clips)]
    shards = work / "sr_shards"
    text_dim = cfg.model.text_dim
    write_sr_shard(shards / "shard-00000.parquet", sr_rows(keys[train], hr_tok[train], lr_tok[train], text_dim),
                   hr_grid=grid, text_dim=text_dim)
    trainer = SRTrainer(cfg, shards)
    log(t0, f"SR model: {trainer.model.num_params() / 1e6:.2f} M parameters, hr_grid {list(grid)}, windows "
            f"{[list(x) for x in cfg.model.windows]}, batch {cfg.data.batch_size}, lr {cfg.optim.lr}")
    # reserve for evaluation: 6 more decodes of the held-out clips (2 baselines, the lookup, 3 SR) and sampling
    reserve = 6 * dec_s + 15.0
    sr_seconds = deadline - time.perf_counter() - reserve
    if sr_seconds < 30:
        log(t0, f"WARNING: {max(sr_seconds, 0):.0f} s left for SR training: raise --minutes or lower --clips")
    t_sr = time.perf_counter()
    history, next_print, probe = [], t_sr + 20, 10
    while True:
        elapsed = time.perf_counter() - t_sr
        if elapsed > sr_seconds or trainer.step >= cfg.steps:
            break
        history.append(trainer.train_step())
        if trainer.step == probe:  # plan the run from the measured step time: the LR reaches its floor at the end
            cfg.steps = probe + max(1, int((sr_seconds - elapsed) / (elapsed / probe) * 0.97))
            log(t0, f"SR: {elapsed / probe:.3f} s/step, planning {cfg.steps} steps in {sr_seconds:.0f} s")
        if time.perf_counter() > next_print:
            last = history[-20:]
            log(t0, f"SR step {trainer.step}/{cfg.steps}: loss {np.mean([x['loss'] for x in last]):.3f}, masked "
                    f"acc lo {np.mean([x['acc/lo'] for x in last]):.3f} hi {np.mean([x['acc/hi'] for x in last]):.3f} "
                    f"token {np.mean([x['acc/token'] for x in last]):.3f}")
            next_print += 20
    sr_train_s = time.perf_counter() - t_sr

    # 5. held-out evaluation
    model = trainer.model.eval()
    lr_held = lr_tok[held]
    text = torch.zeros(n_held, TEXT_SLOTS, text_dim)
    text_mask = torch.zeros(n_held, TEXT_SLOTS, dtype=torch.bool)
    predictions = {
        "sr_maskgit_t1": sample(model, lr_held, text, text_mask, SRSamplingConfig(steps=args.sample_steps)),
        "sr_maskgit_t0": sample(model, lr_held, text, text_mask,
                                SRSamplingConfig(steps=args.sample_steps, temperature=0.0)),
        "sr_argmax_one_pass": argmax_one_pass(model, lr_held, text, text_mask),
        "baseline_tokenize_bicubic_upsample": base_tok,
        "baseline_from_lr_tokens": base_from_lr_tok,
        "lookup_from_parent_lr_token": parent_lookup(hr_tok[train], lr_tok[train], lr_tok[held]),
    }
    truth = hr_tok[held]
    base_wrong = base_tok != truth  # the positions where an SR model has something to win
    rows = {}
    for name, tokens in predictions.items():
        video = decode(tok, tokens, args.encode_batch)
        rows[name] = {**token_accuracy(tokens, truth), "decoded_psnr": float(psnr(video, x_held).mean()),
                      "acc_token_where_baseline_wrong": float((tokens == truth)[base_wrong].float().mean())
                      if base_wrong.any() else float("nan")}
    bicubic = torch.stack([video_to_tensor(upsample_2x(v)) for v in lr[held]])
    base = rows["baseline_tokenize_bicubic_upsample"]
    reference = {"bicubic_pixels_psnr": float(psnr(bicubic, x_held).mean()),
                 "tokenizer_recon_of_hr_psnr": float(psnr(recon, x_held).mean())}
    # how far the baseline is from what any token prediction can decode to (the HR tokens' own decode)
    reference["psnr_headroom_over_baseline_db"] = reference["tokenizer_recon_of_hr_psnr"] - base["decoded_psnr"]
    sr = rows["sr_maskgit_t1"]
    accepted = sr["acc_token"] > base["acc_token"] and sr["decoded_psnr"] > base["decoded_psnr"]
    last = history[-50:]
    return {
        "bench": "sr_learn", "device": f"{platform.machine()} ({os.cpu_count()} cores, "
                                       f"{torch.get_num_threads()} torch threads)",
        "minutes_budget": args.minutes, "seconds_total": time.perf_counter() - t0,
        "clips": args.clips, "held_out": n_held, "clip": [args.frames, args.size, args.size],
        "lr_clip": [args.frames, args.size // 2, args.size // 2], "colour_levels": args.levels,
        "striped_fraction": args.stripes,
        "hr_grid": list(grid), "lr_grid": list(lr_tok.shape[1:]),
        "tokenizer": str(tok_path) if args.tokenizer else "trained here", "tokenizer_train_seconds": tok_seconds,
        "distinct_hr_codes_train": int(torch.unique(hr_tok[train]).numel()),
        "held_out_hr_tokens_seen_in_training": float(np.isin(truth.numpy(), hr_tok[train].numpy()).mean()),
        "sr_config": dataclasses.asdict(cfg), "sr_params_m": model.num_params() / 1e6,
        "sr_steps": trainer.step, "sr_train_seconds": sr_train_s,
        "sr_final_train": {k: float(np.mean([x[k] for x in last])) for k in ("loss", "acc/lo", "acc/hi", "acc/token")}
        if last else {},
        "sampling": {"steps": args.sample_steps, "text_scale": 1.0, "lr_scale": 1.0, "choice_temperature": 4.5},
        "held_out_results": rows, "reference": reference,
        "accepted_sr_beats_baseline": accepted, "work_dir": str(work),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=9.0, help="whole-run budget (tokenizer + SR + eval)")
    parser.add_argument("--clips", type=int, default=544, help="clips generated, held-out ones included")
    parser.add_argument("--held-out", type=int, default=32)
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--size", type=int, default=64, help="HR height = width (LR is half)")
    parser.add_argument("--levels", type=int, default=4, help="colour levels per channel (0: continuous)")
    parser.add_argument("--stripes", type=float, default=0.5, help="fraction of shapes with period-2 stripes")
    parser.add_argument("--tokenizer", default=None, help="a trained video tokenizer directory (skips training)")
    parser.add_argument("--tokenizer-share", type=float, default=1 / 3, help="share of the budget for the tokenizer")
    parser.add_argument("--tokenizer-only", action="store_true",
                        help="train the tokenizer for the whole budget, check it on --check-clips fresh clips, stop")
    parser.add_argument("--check-clips", type=int, default=32, help="--tokenizer-only: clips of the check")
    parser.add_argument("--check-reserve-s", type=float, default=45.0,
                        help="--tokenizer-only: seconds of the budget kept for the data and the check")
    parser.add_argument("--tokenizer-image-steps", type=int, default=50)
    parser.add_argument("--tokenizer-with-lr", action="store_true",
                        help="train the tokenizer on the LR clips as well as on crops of the HR clips")
    parser.add_argument("--tokenizer-override", nargs="*", default=[],
                        help="tokenizer train config key=value (recipe tiny), e.g. model.channel_mult=[1,2,2]")
    parser.add_argument("--batch", type=int, default=32, help="SR examples per step")
    parser.add_argument("--sample-steps", type=int, default=24)
    parser.add_argument("--encode-batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: a shared 2-core box)")
    parser.add_argument("--work", default=None, help="work directory (default: a new temp dir)")
    parser.add_argument("--sr-override", nargs="*", default=[], help="SR train config key=value (recipe tiny)")
    parser.add_argument("--out", default=None, help="JSON path (default bench/results/sr_learn.json)")
    args = parser.parse_args(argv)
    if args.held_out < 1 or args.clips <= args.held_out + 4:
        parser.error("--clips must exceed --held-out by more than 4 (the training clips)")
    if args.tokenizer_only and (args.tokenizer or args.check_clips < 1):
        parser.error("--tokenizer-only trains a tokenizer (no --tokenizer) and needs --check-clips >= 1")
    torch.set_num_threads(args.threads)
    if args.tokenizer_only:
        result = run_tokenizer_only(args)
        out = Path(args.out) if args.out else RESULTS / "sr_learn_tokenizer.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        check = result["check"]
        print(f"wrote {out}")
        print(f"sr_learn tokenizer: {result['tokenizer']} (grid {result['grid']}); on {check['clips']} fresh clips "
              f"ceiling {check['tokenizer_recon_of_hr_psnr']:.2f} dB vs baseline {check['baseline_decoded_psnr']:.2f} "
              f"dB (headroom {check['psnr_headroom_over_baseline_db']:.2f} dB; bicubic pixels "
              f"{check['bicubic_pixels_psnr']:.2f}), baseline exact-token accuracy {check['baseline_acc_token']:.3f}")
        return 0
    result = run(args)
    out = Path(args.out) if args.out else RESULTS / "sr_learn.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("held_out_results", "reference")}, indent=1))
    print(f"wrote {out}")
    sr, base = result["held_out_results"]["sr_maskgit_t1"], result["held_out_results"][
        "baseline_tokenize_bicubic_upsample"]
    ref = result["reference"]
    print(f"sr_learn: held-out exact-token accuracy SR {sr['acc_token']:.3f} vs baseline {base['acc_token']:.3f}, "
          f"decoded PSNR SR {sr['decoded_psnr']:.2f} vs baseline {base['decoded_psnr']:.2f} dB (bicubic pixels "
          f"{ref['bicubic_pixels_psnr']:.2f}, tokenizer ceiling {ref['tokenizer_recon_of_hr_psnr']:.2f}); "
          f"{result['sr_steps']} SR steps in {result['sr_train_seconds']:.0f} s; "
          f"{'SR beats the baseline' if result['accepted_sr_beats_baseline'] else 'SR does NOT beat the baseline'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
