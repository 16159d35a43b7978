"""`videopoet train-tokenizer audio`: train the SoundStream audio tokenizer on clip shards.

    videopoet train-tokenizer audio --data CLIP_SHARDS [--config tiny|paper|FILE.yaml] [--out DIR] [key=value ...]

Losses (SoundStream, arXiv 2107.03312 §3.4; docs/architecture.md, "Audio tokenizer"):
  G = rec_weight * L_rec + adv_weight * L_adv + feat_weight * L_feat + RVQ commitment
  L_rec   multi-scale mel: windows 2^6..2^11, hop window/4, 64 mels;
          sum_s mean|S_s(x) - S_s(x_hat)| + sqrt(s/2) * mean_t ||log S_s(x) - log S_s(x_hat)||_2
  L_adv   hinge, averaged over discriminators: 3 MelGAN-style waveform discriminators (x1, x1/2,
          x1/4 average-pooled) and an STFT discriminator (W 1024, H 256, real+imag channels)
  L_feat  mean |D_k^l(x) - D_k^l(x_hat)| over every discriminator layer (real features detached)
  Weights 1 / 1 / 100 (the paper's), not lucidrains' 1e-5 multi-spectral weight; plus an optional
  time-domain L1 (`loss.wave_weight`, EnCodec's l_t; on in `tiny` only). The adversarial
  terms start after `loss.gan_start_step` (reconstruction-only warm-up).

Outputs under --out:
  tokenizer/                  the latest AudioTokenizer checkpoint (kind "soundstream"; what
                              `videopoet tokenize` loads), written at every save and at the end
  checkpoints/step_NNNNNNNN/  the shared training-checkpoint layout (videopoet.training.checkpoints,
                              kind "soundstream-train"): state.pt = model, discriminators, both
                              optimisers, step, RNG states, data position
  losses.jsonl                one line per step (step, losses), also logged to MLflow
A second run with the same --out resumes from the newest checkpoint (a different config is refused,
naming the differing keys). `--num-workers 0` (default) trains in this process; 1 runs the same
worker as one Ray Train worker; more (DDP) is not implemented for this job and is refused.

Data: audio of the clips in --data (clips without audio are skipped). Each clip is held out for
evaluation when sha1(key) falls in the `data.holdout_fraction`; held-out clips are never trained
on. Training crops `data.segment_samples` at a position drawn from a generator seeded by
(seed, epoch, clip index), so the stream, and therefore a resumed run, is exactly reproducible.
Shard order is reshuffled every epoch.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.nn import functional as F

from videopoet.config import ConfigError, from_dict, to_dict
from videopoet.eval import baselines, visqol
from videopoet.eval.audio_metrics import codebook_usage, mel_distance, si_snr
from videopoet.paths import output_dir
from videopoet.pipeline.clip_shards import iter_clip_shard, iter_clips, list_shards
from videopoet.pipeline.media.writer import write_wav
from videopoet.tokenizers.audio_losses import Discriminators, MultiScaleMelLoss
from videopoet.tokenizers.soundstream import AudioTokenizer, int16_to_float
from videopoet.tokenizers.soundstream_config import (  # noqa: F401  (the job's config, re-exported)
    RECIPES_TRAIN as RECIPES,
)
from videopoet.tokenizers.soundstream_config import (
    TRAIN_STATE_KIND,
    AudioTrainConfig,
    DataConfig,
)
from videopoet.tracking import Tracker
from videopoet.training.checkpoints import CheckpointManager, load_state_file, save_state_file
from videopoet.training.driver import run_training, write_summary
from videopoet.training.launch import stop_requested, worker_context
from videopoet.training.loop import Cadence, run_loop
from videopoet.training.step_log import StepLog

# --------------------------------------------------------------------------------------------------
# data


def _mix(*values: int) -> int:
    """A 62-bit seed from integers (the same on every machine and Python run)."""
    digest = hashlib.sha1(",".join(str(v) for v in values).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 2


def is_holdout(key: str, fraction: float) -> bool:
    h = int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big")
    return h / 2 ** 64 < fraction


class AudioCropStream:
    """Endless deterministic stream of training crops; `state()` / `load_state()` give exact resume.

    Position = (epoch, index in that epoch's shard order, clip index in the shard). Shard order is a
    permutation seeded by (seed, epoch); a clip's crop offset by (seed, epoch, shard, clip)."""

    def __init__(self, root: str | Path, segment: int, fraction: float, seed: int):
        self.shards = list_shards(root)
        if not self.shards:
            raise FileNotFoundError(f"--data {root}: no clip shards (*.tar) found")
        self.segment, self.fraction, self.seed = segment, fraction, seed
        self.epoch, self.shard_pos, self.clip_pos = 0, 0, 0

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "shard_pos": self.shard_pos, "clip_pos": self.clip_pos}

    def load_state(self, state: dict[str, int]) -> None:
        self.epoch, self.shard_pos, self.clip_pos = int(state["epoch"]), int(state["shard_pos"]), int(state["clip_pos"])

    def _order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.shards), generator=g).tolist()

    def __iter__(self) -> Iterator:
        while True:
            order = self._order(self.epoch)
            yielded = False
            while self.shard_pos < len(order):
                shard_index = order[self.shard_pos]
                for i, clip in enumerate(iter_clip_shard(self.shards[shard_index])):
                    if i < self.clip_pos:
                        continue
                    self.clip_pos = i + 1
                    if clip.audio is None or len(clip.audio) == 0 or is_holdout(clip.key, self.fraction):
                        continue
                    wave = int16_to_float(clip.audio)
                    if wave.shape[-1] < self.segment:
                        wave = torch.nn.functional.pad(wave, (0, self.segment - wave.shape[-1]))
                    g = torch.Generator().manual_seed(_mix(self.seed, self.epoch, shard_index, i))
                    start = int(torch.randint(0, wave.shape[-1] - self.segment + 1, (1,), generator=g))
                    yielded = True
                    yield wave[:, start:start + self.segment]
                self.shard_pos += 1
                self.clip_pos = 0
            self.epoch += 1
            self.shard_pos = 0
            if not yielded:
                raise ValueError(f"{self.shards[0].parent}: no training audio (clips without audio or all held out)")

    def batches(self, batch_size: int) -> Iterator[tuple[Any, dict[str, int]]]:
        """Yield (wave [B, 1, S], the stream position after this batch)."""
        buf = []
        for crop in self:
            buf.append(crop)
            if len(buf) == batch_size:
                yield torch.stack(buf), self.state()
                buf = []


def load_eval_waves(root: str | Path, cfg: DataConfig) -> tuple[list, bool]:
    """Up to `eval_clips` held-out clips (whole); falls back to the first training clips when the
    data has no held-out clip (a tiny data set), saying so."""
    held, first = [], []
    for clip in iter_clips(root):
        if clip.audio is None or len(clip.audio) < 2048:
            continue
        wave = int16_to_float(clip.audio)
        if is_holdout(clip.key, cfg.holdout_fraction):
            held.append((clip.key, wave))
            if len(held) >= cfg.eval_clips:
                break
        elif len(first) < cfg.eval_clips:
            first.append((clip.key, wave))
    return (held, True) if held else (first, False)


# --------------------------------------------------------------------------------------------------
# evaluation


def evaluate(model, eval_waves: list, visqol_cache: dict[str, float] | None = None) -> dict[str, float]:
    """Held-out mel distance, SI-SNR (through encode -> decode, the public path) and code usage; with
    `visqol_cache` (a dict) also ViSQOL speech of the reconstructions and of Opus at 6 kbps on the same clips
    (the Opus figures are computed once per clip and kept in the dict: the held-out clips do not change);
    clips shorter than visqol.MIN_SECONDS get no ViSQOL."""
    mels, snrs, all_codes, mos, mos_opus = [], [], [], [], []
    use_visqol = visqol_cache is not None and visqol.unavailable_reason() is None
    for key, wave in eval_waves:
        x = wave.unsqueeze(0)  # [1, 1, S]
        codes = model.encode(x)
        y = model.decode(codes, length=x.shape[-1]).cpu()
        mels.append(float(mel_distance(x, y)[0]))
        snrs.append(float(si_snr(x, y)[0]))
        all_codes.append(codes.cpu().flatten(2))
        if use_visqol and x.shape[-1] >= visqol.MIN_SECONDS * model.cfg.sample_rate:
            ref = x.reshape(-1).cpu().numpy()
            mos.append(visqol.score(ref, y.reshape(-1).float().numpy(), "speech", model.cfg.sample_rate))
            if key not in visqol_cache:
                opus, _ = baselines.opus_roundtrip(ref, model.cfg.sample_rate, 6000)
                visqol_cache[key] = visqol.score(ref, opus, "speech", model.cfg.sample_rate)
            mos_opus.append(visqol_cache[key])
    metrics = {"eval/mel_distance": sum(mels) / len(mels), "eval/si_snr_db": sum(snrs) / len(snrs)}
    if mos:
        metrics["eval/visqol_speech"] = sum(mos) / len(mos)
        metrics["eval/visqol_speech_opus_6kbps"] = sum(mos_opus) / len(mos_opus)
    codes = torch.cat([c.permute(1, 0, 2).reshape(c.shape[1], -1) for c in all_codes], dim=1).unsqueeze(0)
    for level, usage in enumerate(codebook_usage(codes, model.cfg.codebook_size)):
        metrics[f"usage/level{level}_eval_used_fraction"] = usage["used_fraction"]
        metrics[f"usage/level{level}_eval_perplexity"] = usage["perplexity"]
    for level, layer in enumerate(model.rvq.layers):
        alive = (layer._codebook.cluster_size >= model.cfg.dead_code_threshold).float().mean()
        metrics[f"usage/level{level}_alive_fraction"] = float(alive)
    return metrics



# --------------------------------------------------------------------------------------------------
# the trainer (videopoet.training.interface.StatefulTrainer)


class AudioTokenizerTrainer:
    """One process, one device: model, discriminators, optimisers, the data stream and the held-out clips."""

    def __init__(self, cfg: AudioTrainConfig, data: str | Path, device: str | None = None,
                 eval_waves: list | None = None):
        self.cfg = cfg
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        torch.manual_seed(cfg.data.seed)
        self.model = AudioTokenizer(cfg.model).to(self.device)
        self.model.reset_codebooks()  # k-means on the first real batch (SoundStream)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.model.seed + 1)
            self.disc = Discriminators(cfg.disc).to(self.device)
        self.rec_loss = MultiScaleMelLoss(cfg.loss, cfg.model.sample_rate).to(self.device)
        betas = tuple(cfg.optim.betas)
        self.opt_g = torch.optim.AdamW(self.model.parameters(), lr=cfg.optim.lr, betas=betas, weight_decay=0.0)
        self.opt_d = torch.optim.AdamW(self.disc.parameters(), lr=cfg.optim.disc_lr, betas=betas, weight_decay=0.0)
        self.stream = AudioCropStream(data, cfg.data.segment_samples, cfg.data.holdout_fraction, cfg.data.seed)
        self.eval_waves = eval_waves or []
        self._visqol_cache: dict[str, float] = {}  # key -> ViSQOL of Opus 6 kbps (the clips do not change)
        self.step = 0
        self._batches: Iterator | None = None

    # -- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {
            "model": self.model.state_dict(), "disc": self.disc.state_dict(),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "step": self.step, "data": self.stream.state(), "rng_cpu": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.disc.load_state_dict(state["disc"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step = int(state["step"])
        self.stream.load_state(state["data"])
        self._batches = None
        torch.set_rng_state(state["rng_cpu"])
        if "rng_cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])

    def save_payload(self, directory: Path) -> None:
        save_state_file(directory, self.state_dict())

    def load_payload(self, directory: Path) -> None:
        self.load_state_dict(load_state_file(directory))

    def export(self, directory: Path) -> str:
        return self.model.save(directory, extra={"step": self.step, "train_config": to_dict(self.cfg)})

    def evaluate(self) -> dict[str, float]:
        if not self.eval_waves:
            return {}
        return evaluate(self.model, self.eval_waves, self._visqol_cache if self.cfg.eval_visqol else None)

    # -- one step ------------------------------------------------------------------------------------
    def train_step(self, wave=None) -> dict[str, float]:
        """One generator (+ discriminator) step on `wave` [B, 1, S], by default the stream's next batch."""
        if wave is None:
            if self._batches is None:
                self._batches = self.stream.batches(self.cfg.data.batch_size)
            wave, _ = next(self._batches)
        cfg = self.cfg
        wave = wave.to(self.device)
        self.model.train()
        recon, _, commit = self.model(wave)
        target = wave[..., : recon.shape[-1]]
        rec = self.rec_loss(target, recon)
        loss = cfg.loss.rec_weight * rec + commit
        logs = {"loss/rec_mel": rec.item(), "loss/commit": commit.item()}
        if cfg.loss.wave_weight:
            wave_l1 = (target - recon).abs().mean()
            loss = loss + cfg.loss.wave_weight * wave_l1
            logs["loss/wave_l1"] = wave_l1.item()
        gan = self.step >= cfg.loss.gan_start_step
        if gan:
            self.disc.requires_grad_(False)
            fake_outs = self.disc(recon)
            with torch.no_grad():
                real_outs = self.disc(target)
            adv = sum(F.relu(1 - logits).mean() for logits, _ in fake_outs) / len(fake_outs)
            feat_terms = [(fr.detach() - ff).abs().mean() for (_, frs), (_, ffs) in zip(real_outs, fake_outs)
                          for fr, ff in zip(frs, ffs)]
            feat = sum(feat_terms) / len(feat_terms)
            loss = loss + cfg.loss.adv_weight * adv + cfg.loss.feat_weight * feat
            logs.update({"loss/g_adv": adv.item(), "loss/feat": feat.item()})
            self.disc.requires_grad_(True)
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        logs["grad_norm/g"] = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip))
        self.opt_g.step()
        logs["loss/g_total"] = loss.item()
        if gan:
            real_outs = self.disc(target)
            fake_outs = self.disc(recon.detach())
            d_loss = sum(F.relu(1 - r).mean() + F.relu(1 + f).mean()
                         for (r, _), (f, _) in zip(real_outs, fake_outs)) / len(real_outs)
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            torch.nn.utils.clip_grad_norm_(self.disc.parameters(), cfg.optim.grad_clip)
            self.opt_d.step()
            logs["loss/d"] = d_loss.item()
        self.model.mark_modified()
        self.step += 1
        return logs


# --------------------------------------------------------------------------------------------------
# the job: driver (train) and worker (train_worker)


def train_worker(loop_config: dict[str, Any]) -> dict[str, Any]:
    """Resume or start, train to cfg.steps (or the absolute `stop_after`), save, sample; the summary."""
    cfg = from_dict(AudioTrainConfig, loop_config["config"])
    out, data, quiet = Path(loop_config["out"]), loop_config["data"], loop_config["quiet"]
    ctx = worker_context()
    tracker = Tracker.attach(loop_config["run_id"]) if ctx.is_main else Tracker.disabled()
    eval_waves, held_out = load_eval_waves(data, cfg.data)
    if not eval_waves:
        raise ValueError(f"--data {data}: no clip with audio")
    if not held_out:
        print("warning: no held-out clip in --data (too few clips); evaluating on training clips", file=sys.stderr)
    trainer = AudioTokenizerTrainer(cfg, data, device=loop_config.get("device") or str(ctx.device),
                                    eval_waves=eval_waves)
    manager = CheckpointManager.for_config(out, kind=TRAIN_STATE_KIND, cfg=cfg, keep=cfg.keep_checkpoints)
    resume = manager.resume_point()
    if resume is not None:
        trainer.load_payload(resume[0])
        if not quiet:
            print(f"resuming from {resume[0]} (step {trainer.step})")
    tracker.set_tags({"resumed_from_step": trainer.step, "eval_set": "held-out" if held_out else "training clips"})
    cadence = Cadence(max_steps=cfg.steps, log_every=cfg.log_every, eval_every=cfg.eval_every,
                      save_every=cfg.save_every, stop_after=loop_config.get("stop_after"))
    t0 = time.perf_counter()
    with StepLog(out / "losses.jsonl", tracker, resumed_step=trainer.step, last_step=cadence.end) as step_log:
        def save() -> None:
            step_log.flush()
            manager.save(trainer.step, trainer.save_payload, extra={"step": trainer.step})
            trainer.export(out / "tokenizer")

        result = run_loop(trainer, cadence, save=save, log=step_log.log, on_eval=step_log.on_eval,
                          stop_requested=stop_requested(loop_config, ctx), any_rank=ctx.any_rank,
                          progress=None if quiet else "train audio tokenizer")
    metrics = dict(step_log.eval_metrics)
    if not metrics:
        metrics = trainer.evaluate()
    wav_dir = out / "samples"
    wav_dir.mkdir(exist_ok=True)
    for key, wave in eval_waves[:2]:
        codes = trainer.model.encode(wave.unsqueeze(0).to(trainer.device))
        write_wav(wav_dir / f"{key}_original.wav", wave)
        write_wav(wav_dir / f"{key}_reconstructed.wav", trainer.model.decode(codes, length=wave.shape[-1]))
    tracker.log_artifacts(wav_dir, "audio")
    content_hash = trainer.model.content_hash
    tracker.set_tags({"tokenizer.content_hash": content_hash, "tokenizer.path": str((out / "tokenizer").resolve())})
    summary = {"run_id": loop_config["run_id"], "step": trainer.step, "steps_this_run": result.steps_run,
               "stopped": result.stopped, "seconds": time.perf_counter() - t0,
               "tokenizer": str(out / "tokenizer"), "content_hash": content_hash, **metrics}
    if ctx.is_main:
        write_summary(out, summary)
    return summary


def train(cfg: AudioTrainConfig, data: str | Path, out: str | Path, *, stop_after: int | None = None,
          device: str | None = None, run_name: str | None = None, quiet: bool = False,
          num_workers: int = 0) -> dict[str, Any]:
    """Train (or resume) up to cfg.steps; `stop_after` (an absolute step) ends this invocation early,
    checkpointed. `num_workers`: 0 = this process, 1 = one Ray Train worker. Returns a summary."""
    if num_workers > 1:
        raise ConfigError(f"--num-workers={num_workers}: the audio tokenizer trains on one worker "
                          "(0 = in-process, 1 = one Ray Train worker); data-parallel DDP is not implemented")
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    frames = cfg.data.batch_size * (cfg.data.segment_samples // cfg.model.hop)
    if cfg.model.dead_code_threshold > frames / cfg.model.codebook_size:
        print(f"warning: {frames} frames per step is {frames / cfg.model.codebook_size:.2f} per code, below "
              f"model.dead_code_threshold={cfg.model.dead_code_threshold}: codes will be re-drawn every step; "
              "raise data.batch_size or lower the threshold", file=sys.stderr)
    t0 = time.perf_counter()
    summary = run_training(train_worker, cfg, job="train-tokenizer-audio", kind=TRAIN_STATE_KIND, run_dir=out,
                           num_workers=num_workers, run_name=run_name,
                           loop_config={"data": str(Path(data).resolve()), "stop_after": stop_after,
                                        "device": device, "quiet": quiet})
    elapsed = time.perf_counter() - t0
    if not quiet:
        steps_done = summary["steps_this_run"]
        audio_s = steps_done * cfg.data.batch_size * cfg.data.segment_samples / cfg.model.sample_rate
        print(f"train-tokenizer audio: {steps_done} steps in {elapsed:.1f} s "
              f"({steps_done / max(elapsed, 1e-9):.2f} steps/s, {audio_s / max(elapsed, 1e-9):.1f} s of audio/s); "
              f"step {summary['step']}/{cfg.steps}; held-out mel distance {summary['eval/mel_distance']:.3f}, "
              f"SI-SNR {summary['eval/si_snr_db']:.2f} dB{_visqol_text(summary)}; tokenizer {summary['tokenizer']} "
              f"({summary['content_hash'][:12]})")
    return summary


def _visqol_text(summary: dict[str, Any]) -> str:
    if "eval/visqol_speech" not in summary:
        return ""
    return (f", ViSQOL speech {summary['eval/visqol_speech']:.2f} (Opus 6 kbps "
            f"{summary['eval/visqol_speech_opus_6kbps']:.2f})")


def run(args) -> int:
    """`videopoet train-tokenizer audio` (arguments: videopoet.tokenizers.cli)."""
    cfg = RECIPES.get(args.config, list(args.overrides))
    list_shards(args.data)  # an ingest output, its shards/, a .tar or a glob; else one line (UsageError)
    output_dir(args.out, "--out")
    train(cfg, args.data, args.out, device=args.device, run_name=args.run_name, num_workers=args.num_workers,
          stop_after=args.stop_after)
    return 0
