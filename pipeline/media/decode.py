"""probe_and_decode: one input (local path or fsspec URL) -> its DecodedClips, whichever backend decodes it."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from videopoet.pipeline.media.audio import _cut_audio
from videopoet.pipeline.media.clip import DecodedClip
from videopoet.pipeline.media.config import AUDIO_RATE, CLIP_FPS, MediaConfig
from videopoet.pipeline.media.decord_backend import _decode_decord
from videopoet.pipeline.media.errors import MediaError
from videopoet.pipeline.media.images import _decode_image, _is_image
from videopoet.pipeline.media.probe import _check_path, _probe_only
from videopoet.pipeline.media.pyav import _decode_pyav, _replan
from videopoet.pipeline.media.windows import _plan, _stride, count_windows, select_windows


def probe_and_decode(path: str, cfg: MediaConfig, *, is_image: bool | None = None) -> list[DecodedClip]:
    """Decode one input into clips (one per selected window and format). Raises MediaError.

    `path` is a local path or an fsspec URL (fetched to a temporary file first). Images give one
    1-frame 128x128 clip. No time limit here: use `decode_with_timeout` for untrusted input."""
    if "://" in str(path) and not str(path).startswith("file://"):
        return _decode_remote(str(path), cfg, is_image)
    path = str(path)[7:] if str(path).startswith("file://") else str(path)
    _check_path(path)
    if is_image is None:
        is_image = _is_image(path)
    if is_image:
        return _decode_image(path, cfg)
    import av

    try:
        if cfg.decoder == "decord":
            info = _probe_only(path, cfg)
            planned = _plan(cfg, info["claimed_duration"])
            video, audio, info = _decode_decord(path, cfg, planned, cfg.audio and info["has_audio_stream"])
            span = video.end - video.times[0]
            if _replan(cfg, info, planned, span, None):  # a bogus header duration: plan from what decodes
                planned = _plan(cfg, span)
                video, audio, info = _decode_decord(path, cfg, planned, cfg.audio and info["has_audio_stream"])
        else:
            video, audio, info, planned = _decode_pyav(path, cfg)
    except av.error.FFmpegError as err:  # anything FFmpeg raises outside the per-packet handling
        raise MediaError("decode", type(err).__name__, f"{path}: FFmpeg failed while decoding ({err})") from None
    except MemoryError:
        raise MediaError("decode", "OutOfMemory", f"{path}: ran out of memory while decoding") from None
    t0 = video.times[0]
    span = video.end - t0
    notes = list(video.notes)
    claimed = info["claimed_duration"]
    tolerance = Fraction(cfg.duration_tolerance_s).limit_denominator(1000)
    if claimed is not None and span - claimed > max(tolerance, claimed / 10):
        notes.append(f"the container claims {float(claimed):.3f} s but {float(span):.3f} s decode: "
                     "windows planned from what decodes")
    if claimed is not None and claimed - span > max(tolerance, claimed / 10):
        frames_txt = "" if video.sparse else f" ({len(video.times)} frames)"
        msg = (f"{path}: the container claims {float(claimed):.3f} s but only {float(span):.3f} s"
               f"{frames_txt} decode")
        if cfg.strict_duration:
            raise MediaError("decode", "DurationMismatch", msg)
        notes.append(msg.split(": ", 1)[1])
    elif not video.sparse and info["claimed_frames"] and len(video.times) < 0.9 * info["claimed_frames"] - 2 and (
            float(span) * (info["average_fps"] or 0) < 0.9 * info["claimed_frames"] - 2):
        # frames missing inside a timeline that covers the claimed frame slots are not missing:
        # AVI's zero-size "repeat the previous frame" chunks (static content) leave gaps between
        # timestamps, and each decoded frame is held until the next one's time, as players do
        msg = f"{path}: the header claims {info['claimed_frames']} frames but only {len(video.times)} decode"
        if cfg.strict_duration:
            raise MediaError("decode", "FrameCountMismatch", msg)
        notes.append(msg.split(": ", 1)[1])
    if audio is not None:
        for part in (audio if isinstance(audio, list) else [audio]):
            notes.extend(n for n in part.notes if n not in notes)
    if cfg.audio and info["has_audio_stream"] and audio is None:
        notes.append("audio stream present but not decodable: clip has no audio")

    fps_src = (len(video.times) / float(span)) if span > 0 else (info["average_fps"] or 0.0)
    if info["average_fps"] and (len(video.times) > 1 or video.sparse):
        fps_src = info["average_fps"]
    clips: list[DecodedClip] = []
    for frames in cfg.clip_frames:
        stride = _stride(cfg, frames)
        m = count_windows(span, frames, stride)
        if planned is not None:
            chosen = [w for w in planned[frames] if w < m]
            if len(chosen) < len(planned[frames]):
                notes.append(f"{len(planned[frames]) - len(chosen)} planned {frames}-frame window(s) "
                             f"past the decoded end ({float(span):.3f} s) dropped")
        else:
            chosen = select_windows(m, cfg.clips_per_video)
        for w in chosen:
            o = w * stride
            taus = [o + Fraction(i, CLIP_FPS) for i in range(frames)]
            if any(tau not in video.picks for tau in taus):  # defensive: never a KeyError for bad input
                notes.append(f"{frames}-frame window {w} dropped: a frame time did not decode")
                continue
            idx = [video.picks[tau] for tau in taus]
            clip_audio, audio_notes = (None, [])
            if audio is not None:
                clip_audio, audio_notes = _cut_audio(audio, t0 + o, frames * AUDIO_RATE // CLIP_FPS)
            for fmt in cfg.formats:
                rgb = np.stack([video.images[(j, fmt)] for j in idx])
                clips.append(DecodedClip(
                    window_index=w, num_frames=frames, format=fmt, start_time_s=float(o), rgb=rgb,
                    audio=clip_audio, source_fps=float(fps_src), source_frame_indices=idx,
                    notes=notes + audio_notes, source_width=info["width"], source_height=info["height"],
                    source_duration_s=float(span)))
    if not clips:
        need = Fraction(min(cfg.clip_frames) - 1, CLIP_FPS)
        why = "" if span <= need else f" ({'; '.join(notes) or 'no window could be cut'})"
        raise MediaError("too_short", "TooShort",
                         f"{path}: {float(span):.3f} s of video decodes; one {min(cfg.clip_frames)}-frame clip "
                         f"at {CLIP_FPS} fps needs more than {float(need):.3f} s{why}")
    return clips


def _decode_remote(url: str, cfg: MediaConfig, is_image: bool | None) -> list[DecodedClip]:
    import tempfile

    import fsspec

    suffix = Path(url.split("?")[0]).suffix
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
        try:
            with fsspec.open(url, "rb") as src:
                while chunk := src.read(1 << 22):
                    tmp.write(chunk)
        except FileNotFoundError:
            raise MediaError("open", "FileNotFound", f"{url}: no such file") from None
        except Exception as err:
            raise MediaError("open", "FetchError", f"{url}: cannot fetch ({type(err).__name__}: {err})") from None
        tmp.flush()
        clips = probe_and_decode(tmp.name, cfg, is_image=is_image)
    for c in clips:
        c.notes = [n.replace(tmp.name, url) for n in c.notes]
    return clips
