"""Opening and probing an input: path checks, open-error diagnosis, stream facts, exact rational times."""

from __future__ import annotations

import os
from fractions import Fraction

from videopoet.pipeline.media.config import MediaConfig
from videopoet.pipeline.media.errors import MediaError


def _open_error(path: str) -> MediaError:
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(12)
    if head[4:8] == b"ftyp":
        return MediaError("open", "TruncatedContainer",
                          f"{path}: an MP4/MOV file without a readable index (moov); truncated download? "
                          f"({size} bytes)")
    from videopoet.pipeline.sources import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS

    if os.path.splitext(path)[1].lower() not in VIDEO_EXTENSIONS + AUDIO_EXTENSIONS:
        # a directory input lists every file that is not known non-media; FFmpeg had the last word
        return MediaError("open", "NotMedia", f"{path}: not a media file FFmpeg can read ({size} bytes)")
    return MediaError("open", "UnrecognizedFormat", f"{path}: not a media container FFmpeg can read ({size} bytes)")


def _check_path(path: str) -> None:
    if not os.path.exists(path):
        raise MediaError("open", "FileNotFound", f"{path}: no such file")
    if not os.path.isfile(path):
        raise MediaError("open", "NotAFile", f"{path}: not a regular file")
    if os.path.getsize(path) == 0:
        raise MediaError("open", "ZeroByteFile", f"{path}: the file is empty (0 bytes)")


def _frac_time(pts: int | None, tb: Fraction | None) -> Fraction | None:
    if pts is None or tb is None:
        return None
    return Fraction(pts * tb.numerator, tb.denominator)


def _claimed_duration(container, stream) -> Fraction | None:
    if stream.duration and stream.time_base:
        return stream.duration * Fraction(stream.time_base)
    if container.duration:
        return Fraction(container.duration, 1_000_000)
    return None


def _probe(container, path: str, cfg: MediaConfig) -> dict:
    if not container.streams.video:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
        raise MediaError("probe", "NoVideoStream", f"{path}: no video stream (streams: {kinds})")
    v = container.streams.video[0]
    w, h = v.codec_context.width, v.codec_context.height
    if not w or not h:
        raise MediaError("probe", "NoFrameSize", f"{path}: the video stream has no frame size")
    if w * h > cfg.max_pixels:
        raise MediaError("probe", "ResolutionTooLarge",
                         f"{path}: {w}x{h} = {w * h} pixels exceeds max_pixels={cfg.max_pixels}")
    if min(w, h) < cfg.min_side:
        raise MediaError("probe", "ResolutionTooSmall", f"{path}: {w}x{h} is smaller than min_side={cfg.min_side}")
    if v.codec_context.codec is None:
        raise MediaError("probe", "UnsupportedCodec", f"{path}: no decoder for the video codec")
    avg = v.average_rate or v.guessed_rate or v.base_rate
    if avg and v.time_base and v.guessed_rate and avg == 1 / v.time_base and avg != v.guessed_rate:
        # a demuxer that fills the average rate with its time base's rate (FFmpeg's DV: 60000 fps
        # for a 25 fps stream in 1/60000 units) does not know the rate; the guessed rate (r_frame_rate) does
        avg = v.guessed_rate
    return {
        "width": w, "height": h,
        "claimed_duration": _claimed_duration(container, v),
        "claimed_frames": int(v.frames or 0),
        "average_fps": float(avg) if avg else None,
        "has_audio_stream": bool(container.streams.audio),
        "format": container.format.name,
    }


def _probe_only(path: str, cfg: MediaConfig) -> dict:
    import av

    try:
        container = av.open(path, metadata_errors="ignore")
    except av.error.FFmpegError:
        raise _open_error(path) from None
    with container:
        return _probe(container, path, cfg)


def _packet_index(path: str) -> tuple[list[Fraction] | None, int]:
    """A demux-only pass over the first video stream: the sorted times of its coded packets (pts,
    else dts; None when a packet has neither or two share one) and the number of zero-size packets
    with a timestamp (AVI's "repeat the previous frame" chunks). The decoder outputs frames in
    presentation order, so the k-th frame it outputs is shown at the k-th of these times, whatever
    timestamp the frame itself carries (MPEG-4 Part 2 packed B-frames: missing, repeated or out of
    order)."""
    import av

    times: list[Fraction] = []
    empty, ok = 0, True
    try:
        with av.open(path, metadata_errors="ignore") as container:
            vstream = container.streams.video[0]
            tb = Fraction(vstream.time_base) if vstream.time_base else None
            for packet in container.demux(vstream):
                stamp = packet.pts if packet.pts is not None else packet.dts
                if not packet.size:
                    empty += stamp is not None
                    continue
                t = _frac_time(stamp, tb)
                if t is None:
                    ok = False
                else:
                    times.append(t)
    except (av.error.FFmpegError, IndexError):
        return None, empty
    times.sort()
    if not ok or not times or any(a == b for a, b in zip(times, times[1:])):
        return None, empty
    return times, empty
