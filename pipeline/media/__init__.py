"""Media decoding: a video or image file -> 8 fps clip windows (RGB + 16 kHz mono audio).

One interface (`probe_and_decode`), two frame decoders (PyAV, decord; PyAV is the default, see
docs/architecture.md "Media decoding" for the measurements and the reason). Probing and audio always
use PyAV.

The 8 fps pick (exact, works for variable frame rate)
-----------------------------------------------------
Source frame j (in presentation order) is shown during its presentation interval
[t_j, t_{j+1}) where t_j = pts_j * time_base (exact rationals, no float rounding); the last frame's
interval ends at t_last + its duration (the packet duration, else the median frame gap). Let t_0 be
the first frame's time. Window w of T frames starts at offset o_w = w * stride (stride = T/8 s by
default: non-overlapping windows; else `clip_stride_s`) and its output frame i is the source frame
whose interval contains t_0 + o_w + i/8. At 24 fps that is exactly source frame 3i; at 29.97 fps
floor(i * 30000 / (8 * 1001)). A window exists when its last output time lies inside the decoded
stream. When more windows fit than `clips_per_video`, N evenly spaced ones are kept (window
floor((k + 0.5) * M / N) for k < N of M): clips spread over the video rather than its first seconds.

On H.264/HEVC the PyAV backend indexes the packets first (demux only), applies this rule to the
index and does not decode the non-reference frames that no window picks (`skip_unneeded_frames`);
the clips are bit-identical to decoding every frame (see `_decode_pyav`).

Spatial formats: the frame is scaled to cover the target and centre-cropped: "square" 128x128,
"portrait" 128 wide x 224 high. Shrinking is area averaging: with PyAV one libswscale pass from YUV
to RGB at the cover size, then the crop; with decord (full-size RGB) the crop is cut in source
pixels and resized with OpenCV INTER_AREA. Enlarging is OpenCV INTER_CUBIC (area would degenerate
to bilinear there).

Audio: PyAV decodes every audio packet (a packet that fails to decode is skipped and counted, its
time filled with silence so later samples stay aligned), libswresample (PyAV AudioResampler)
resamples to 16 kHz and `downmix_weights` (BS.775-style, normalised: no clipping) mixes to mono.
Sample k sits at time a_0 + k/16000 where a_0 is the first audio frame's time, so a window starting
at t_0 + o_w takes samples from round((t_0 + o_w - a_0) * 16000), exactly T * 2000 of them (34,000
for 17 frames, 82,000 for 41). Zeros are padded only before the audio stream starts or past its end,
and a note says so.

Failures raise MediaError(stage, error_class, message). `decode_with_timeout` runs the decode in a
persistent worker process that is killed and restarted when one input passes the time limit (a
native hang that holds the GIL, e.g. decord #373, cannot be interrupted any other way).
"""

from __future__ import annotations

import bisect
import math
import multiprocessing as mp
import os
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np

CLIP_FPS = 8
AUDIO_RATE = 16000
FORMATS = {"square": (128, 128), "portrait": (128, 224)}  # name -> (width, height)
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
GAP_TOLERANCE_S = 0.002  # audio timestamps further apart than this count as a gap
WORKER_START_TIMEOUT_S = 120.0


@dataclass
class MediaConfig:
    """How inputs become clips. Nested inside the ingest config as `media`."""

    fps: int = 8
    clip_frames: tuple[int, ...] = (17,)  # 17 (2.125 s) and/or 41 (5.125 s)
    clips_per_video: int = 4  # max windows per video per length (0 = as many as fit)
    clip_stride_s: float | None = None  # None: non-overlapping windows; else stride in seconds
    formats: tuple[str, ...] = ("square",)  # "square" 128x128, "portrait" 128w x 224h
    decoder: Literal["pyav", "decord"] = "pyav"  # docs/architecture.md "Media decoding": why PyAV
    audio: bool = True
    flow: Literal["dis", "raft", "none"] = "dis"
    depth: Literal["midas", "none"] = "none"
    raft_checkpoint: str | None = None
    raft_model: Literal["raft_small", "raft_large"] = "raft_small"
    midas_checkpoint: str | None = None
    midas_model: Literal["midas_v21_small", "dpt_large_384"] = "midas_v21_small"
    decode_timeout_s: float = 120.0  # per input; <= 0 decodes in the calling process, no limit
    max_pixels: int = 7680 * 4320  # 8K UHD; larger frames are rejected (stage "probe")
    min_side: int = 16  # smaller frames are rejected (stage "probe")
    strict_duration: bool = True  # a header claiming much more than decodes fails ("decode")
    duration_tolerance_s: float = 1.0  # ... "much more" = more than max(this, 10% of the claim)
    max_flow_px: float = 16.0  # flow (px at clip size) clipped to +-this, linear to 0..255, 128 = 0
    raft_updates: int = 12  # RAFT refinement iterations (torchvision's default)
    condition_batch: int = 16  # frame pairs / frames per RAFT or MiDaS forward
    decode_threads: int = 0  # PyAV codec threads (0 = FFmpeg's choice)
    # PyAV, H.264/HEVC: do not decode non-reference frames that no window picks (the decoder's
    # skip_frame, set per packet); same clips, bit for bit, as decoding every frame
    skip_unneeded_frames: bool = True
    seek: Literal["auto", "always", "never"] = "auto"  # PyAV: seek to each window instead of decoding
    # everything; "auto" = when the video is >= 30 s and the kept windows cover <= 1/3 of it

    def validate(self) -> None:
        if self.fps != CLIP_FPS:
            raise ValueError(f"media.fps={self.fps}: only {CLIP_FPS} fps is supported (the paper's clip rate)")
        if not self.clip_frames or any(t < 1 for t in self.clip_frames):
            raise ValueError(f"media.clip_frames={self.clip_frames!r}: need at least one length >= 1")
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise ValueError(f"media.formats={self.formats!r}: allowed {sorted(FORMATS)}")
        if self.clips_per_video < 0:
            raise ValueError(f"media.clips_per_video={self.clips_per_video}: must be >= 0 (0 = all)")
        if self.clip_stride_s is not None and self.clip_stride_s <= 0:
            raise ValueError(f"media.clip_stride_s={self.clip_stride_s}: must be > 0 or null")


class MediaError(Exception):
    """A failed input: the job records stage, error_class and message and goes on."""

    def __init__(self, stage: str, error_class: str, message: str):
        super().__init__(f"[{stage}/{error_class}] {message}")
        self.stage, self.error_class, self.message = stage, error_class, message

    def __reduce__(self):  # crosses the worker-process pipe
        return (MediaError, (self.stage, self.error_class, self.message))


@dataclass
class DecodedClip:
    """One window of one input in one spatial format, before conditions."""

    window_index: int
    num_frames: int
    format: str
    start_time_s: float  # window start, seconds after the first video frame
    rgb: np.ndarray  # uint8 [T, H, W, 3]
    audio: np.ndarray | None  # int16 [T / 8 * 16000]; None when the input has no audio stream
    source_fps: float
    source_frame_indices: list[int]  # presentation-order indices of the picked source frames
    notes: list[str] = field(default_factory=list)
    source_width: int = 0
    source_height: int = 0
    source_duration_s: float | None = None  # decoded video duration

    @property
    def has_audio(self) -> bool:
        return self.audio is not None


def __getattr__(name: str):  # ConditionModel lives in conditions.py (torch); import it only on use
    if name == "ConditionModel":
        from videopoet.pipeline.conditions import ConditionModel

        return ConditionModel
    raise AttributeError(name)


# ----------------------------------------------------------------------------- geometry


def crop_box(src_w: int, src_h: int, out_w: int, out_h: int) -> tuple[int, int, int, int]:
    """(x0, y0, w, h) of the centred source region that scales to cover out_w x out_h."""
    scale = max(out_w / src_w, out_h / src_h)
    w = min(src_w, max(1, round(out_w / scale)))
    h = min(src_h, max(1, round(out_h / scale)))
    return (src_w - w) // 2, (src_h - h) // 2, w, h


def resize_crop(img: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """Scale-to-cover + centre crop, antialiased (INTER_AREA shrinking, INTER_CUBIC enlarging)."""
    import cv2

    x0, y0, w, h = crop_box(img.shape[1], img.shape[0], out_w, out_h)
    region = img[y0:y0 + h, x0:x0 + w]
    interp = cv2.INTER_AREA if (w >= out_w and h >= out_h) else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(region, (out_w, out_h), interpolation=interp))


# ----------------------------------------------------------------------------- window planning


def _stride(cfg: MediaConfig, frames: int) -> Fraction:
    if cfg.clip_stride_s is None:
        return Fraction(frames, CLIP_FPS)
    return Fraction(cfg.clip_stride_s).limit_denominator(1_000_000)


def count_windows(span: Fraction, frames: int, stride: Fraction) -> int:
    """Windows w >= 0 whose last output time o_w + (T-1)/8 is < span (the decoded duration)."""
    last = Fraction(frames - 1, CLIP_FPS)
    if span <= last:
        return 0
    return math.ceil((span - last) / stride)


def select_windows(m: int, n: int) -> list[int]:
    """N of M window indices, evenly spread (all when n == 0 or m <= n)."""
    if n == 0 or m <= n:
        return list(range(m))
    return [math.floor((k + Fraction(1, 2)) * m / n) for k in range(n)]


class _Picker:
    """Maps decoded frame intervals to the output times the planned windows need."""

    def __init__(self, cfg: MediaConfig, planned: dict[int, list[int]] | None):
        self.cfg = cfg
        self.planned = planned  # frames -> selected window indices; None = every window
        self.strides = {t: _stride(cfg, t) for t in cfg.clip_frames}
        # With the windows planned, every needed time is known up front: a sorted list read with a
        # cursor (callers go through the frames in time order) instead of window arithmetic in
        # Fractions for every decoded frame (~10% of the decode worker's CPU on 720p).
        self.planned_times: list[Fraction] | None = None
        if planned is not None:
            self.planned_times = sorted({w * self.strides[frames] + Fraction(i, CLIP_FPS)
                                         for frames, ws in planned.items() for w in ws for i in range(frames)})
            self._cursor = 0

    def times_in(self, a: Fraction, b: Fraction) -> list[Fraction]:
        """Output offsets (from t_0) of all needed frames that fall in [a, b)."""
        if self.planned_times is not None:
            taus, k = self.planned_times, self._cursor
            if k > 0 and taus[k - 1] >= a:  # called out of order: find the place again
                k = bisect.bisect_left(taus, a)
            while k < len(taus) and taus[k] < a:
                k += 1
            start = k
            while k < len(taus) and taus[k] < b:
                k += 1
            self._cursor = k
            return taus[start:k]
        out: set[Fraction] = set()
        for frames, stride in self.strides.items():
            lo = max(0, math.ceil((a - Fraction(frames - 1, CLIP_FPS)) / stride))
            hi = math.floor(b / stride)
            windows = range(lo, hi + 1)
            if self.planned is not None:
                sel = self.planned[frames]
                windows = [w for w in sel if lo <= w <= hi]
            for w in windows:
                o = w * stride
                i_lo = max(0, math.ceil((a - o) * CLIP_FPS))
                i_hi = min(frames - 1, math.ceil((b - o) * CLIP_FPS) - 1)
                for i in range(i_lo, i_hi + 1):
                    tau = o + Fraction(i, CLIP_FPS)
                    if a <= tau < b:
                        out.add(tau)
        return sorted(out)


# ----------------------------------------------------------------------------- probing


def _open_error(path: str) -> MediaError:
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(12)
    if head[4:8] == b"ftyp":
        return MediaError("open", "TruncatedContainer",
                          f"{path}: an MP4/MOV file without a readable index (moov); truncated download? ({size} bytes)")
    return MediaError("open", "UnrecognizedFormat", f"{path}: not a media container FFmpeg can read ({size} bytes)")


def _sniff_image(path: str) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(16)
    return (head.startswith(b"\x89PNG") or head.startswith(b"\xff\xd8\xff") or head.startswith(b"GIF8")
            or (head[:4] == b"RIFF" and head[8:12] == b"WEBP") or head.startswith(b"BM"))


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


# ----------------------------------------------------------------------------- decoding


@dataclass
class _VideoResult:
    times: list[Fraction]  # presentation time of every decoded frame (t_0 first)
    end: Fraction  # end of the last frame's interval
    picks: dict[Fraction, int]  # output offset -> source frame index
    images: dict[tuple[int, str], np.ndarray]  # (source index, format) -> uint8 [H, W, 3]
    notes: list[str]
    sparse: bool = False  # seek mode: `times` holds only the frames decoded, not all of them
    segments: list[tuple[Fraction, Fraction]] = field(default_factory=list)  # seek mode: decoded time ranges


@dataclass
class _AudioResult:
    samples: np.ndarray  # float32 mono 16 kHz
    start: Fraction  # time of sample 0
    notes: list[str]


def downmix_weights(channels: list[str]) -> np.ndarray:
    """Mono downmix weights per channel name (FFmpeg names): ITU-R BS.775 style, front L/R 1,
    centre and surrounds 1/sqrt(2), LFE 0; normalised to sum 1 so the same full-scale signal on
    every channel stays full scale (no clipping, no gain)."""
    w = []
    for name in channels:
        if name in ("LFE", "LFE2", "LFE1", "LOW_FREQUENCY"):
            w.append(0.0)
        elif name in ("FL", "FR", "FC", "MONO", "NONE") and (name != "FC" or len(channels) == 1):
            w.append(1.0)
        else:
            w.append(math.sqrt(0.5))
    arr = np.asarray(w, np.float32)
    if arr.sum() <= 0:
        arr = np.ones(len(channels), np.float32)
    return (arr / arr.sum()).astype(np.float32)


class _AudioCollector:
    def __init__(self, stream, origin: Fraction | None = None):
        self.origin = origin  # seek mode: align the first sample to this timeline's resampler phase
        self.stream = stream
        self.tb = Fraction(stream.time_base) if stream.time_base else None
        self.resampler = None  # made at the first frame, for that frame's channel layout
        self.weights: np.ndarray | None = None
        self.start: Fraction | None = None
        self.fed = 0  # input samples fed (including silence for gaps)
        self.rate: int | None = None
        self.chunks: list[np.ndarray] = []
        self.bad_packets = 0
        self.gaps = 0
        self.gap_s = 0.0

    def _resample(self, frame) -> None:
        import av

        if self.resampler is None:
            # resample only (planar float, same layout); the downmix is ours: libswresample's
            # default stereo->mono matrix sums at +3 dB and clips full-scale material
            self.resampler = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=AUDIO_RATE)
            self.weights = downmix_weights([c.name for c in frame.layout.channels])
        for out in self.resampler.resample(frame):
            self.chunks.append(self.weights @ out.to_ndarray())

    def packet(self, packet) -> None:
        import av

        try:
            frames = packet.decode()
        except (av.error.FFmpegError, ValueError):
            self.bad_packets += 1
            return
        for frame in frames:
            if self.start is None:
                t = _frac_time(frame.pts, self.tb)
                if self.origin is not None and t is not None:
                    frame, t = self._align(frame, t)
                    if frame is None:
                        continue
                self.start = t if t is not None else Fraction(0)
                self.rate = frame.sample_rate
                self._start_f, self._tb_f = float(self.start), float(self.tb or 0)
            elif (frame.pts is not None and self.tb is not None and frame.sample_rate == self.rate
                  # float pre-check (exact rationals cost ~1/4 of the collector's time per frame);
                  # a possible gap is then decided exactly
                  and frame.pts * self._tb_f - self._start_f - self.fed / self.rate > GAP_TOLERANCE_S / 2):
                gap = _frac_time(frame.pts, self.tb) - (self.start + Fraction(self.fed, self.rate))
                if gap > GAP_TOLERANCE_S:
                    n = int(round(gap * self.rate))
                    self._silence(frame, n)
                    self.gaps += 1
                    self.gap_s += float(gap)
            frame.pts = None  # the collector keeps the timeline itself
            self.fed += frame.samples
            try:
                self._resample(frame)
            except (av.error.FFmpegError, ValueError):
                self.bad_packets += 1

    def _align(self, frame, t: Fraction):
        """Drop leading samples so the first one sits where a decode from the stream start would
        put an input sample of the same resampler phase (48 kHz -> 16 kHz: every 3rd sample):
        seek-mode audio then equals full-decode audio instead of being shifted by a fraction of a
        sample."""
        import av

        rate = frame.sample_rate
        period = rate // math.gcd(rate, AUDIO_RATE)
        offset = round((t - self.origin) * rate)
        k = (-offset) % period
        if k == 0:
            return frame, t
        if k >= frame.samples:
            return None, t
        arr = frame.to_ndarray()
        ch = len(frame.layout.channels)
        arr = arr[:, k:] if frame.format.is_planar else arr[:, k * ch:]
        new = av.AudioFrame.from_ndarray(np.ascontiguousarray(arr), format=frame.format.name, layout=frame.layout.name)
        new.sample_rate = rate
        return new, t + Fraction(k, rate)

    def _silence(self, like, n: int) -> None:
        import av

        while n > 0:
            k = min(n, 4096)
            fmt = like.format.name
            ch = len(like.layout.channels)
            dtype = {"s16": np.int16, "s16p": np.int16, "s32": np.int32, "s32p": np.int32,
                     "flt": np.float32, "fltp": np.float32, "dbl": np.float64, "dblp": np.float64,
                     "u8": np.uint8, "u8p": np.uint8}[fmt]
            shape = (ch, k) if like.format.is_planar else (1, k * ch)
            zero = np.full(shape, 128 if dtype is np.uint8 else 0, dtype)
            f = av.AudioFrame.from_ndarray(zero, format=fmt, layout=like.layout.name)
            f.sample_rate = like.sample_rate
            self._resample(f)
            self.fed += k
            n -= k

    def finish(self, path: str) -> _AudioResult | None:
        import av

        try:
            if self.resampler is not None:
                self.chunks.extend(self.weights @ f.to_ndarray() for f in self.resampler.resample(None))
        except (av.error.FFmpegError, ValueError):
            pass
        notes = []
        if self.bad_packets:
            notes.append(f"skipped {self.bad_packets} corrupt audio packet(s) (filled with silence)")
        if self.gaps:
            notes.append(f"filled {self.gaps} audio gap(s) ({self.gap_s:.3f} s) with silence")
        if self.start is None:
            return _AudioResult(np.zeros(0, np.float32), Fraction(0), notes + ["audio stream decoded to nothing"])
        samples = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)
        return _AudioResult(samples.astype(np.float32, copy=False), self.start, notes)


def _displayed_size(info: dict, frame) -> None:
    """Report the size as displayed: a 90/270 degree display rotation swaps width and height."""
    if int(round(getattr(frame, "rotation", 0) or 0)) % 180 == 90 and not info.get("rotated"):
        info["width"], info["height"], info["rotated"] = info["height"], info["width"], True


def _rotate_displayed(img: np.ndarray, rotation: int) -> np.ndarray:
    # display-matrix rotation (phones store portrait video as rotated landscape): PyAV gives the
    # counterclockwise angle the player applies; np.rot90 turns counterclockwise too
    if rotation in (90, 180, 270):
        img = np.ascontiguousarray(np.rot90(img, k=rotation // 90))
    return img


def _frame_formats_pyav(frame, formats, reformatter) -> dict[str, np.ndarray]:
    """The frame in each output format. Shrinking (the usual case) is one libswscale pass from YUV
    straight to RGB at the cover size (area filter), then a centre crop: converting the full frame
    to RGB and resizing it afterwards cost 4-5x more CPU (bench/ingest.py; 720p source). Enlarging
    a frame smaller than the format goes through resize_crop (bicubic). `reformatter` (one
    av.video.reformatter.VideoReformatter per input) keeps the libswscale context between frames;
    `frame.reformat` builds a new one per call (7-13% of the conversion's CPU)."""
    rotation = int(round(getattr(frame, "rotation", 0) or 0)) % 360
    src_w, src_h = frame.width, frame.height
    disp_w, disp_h = (src_h, src_w) if rotation in (90, 270) else (src_w, src_h)
    out: dict[str, np.ndarray] = {}
    full = None
    for fmt in formats:
        out_w, out_h = FORMATS[fmt]
        if disp_w < out_w or disp_h < out_h:
            if full is None:
                full = _rotate_displayed(frame.to_ndarray(format="rgb24"), rotation)
            out[fmt] = resize_crop(full, out_w, out_h)
            continue
        scale = max(out_w / disp_w, out_h / disp_h)
        cover_w, cover_h = max(out_w, round(disp_w * scale)), max(out_h, round(disp_h * scale))
        sw, sh = (cover_h, cover_w) if rotation in (90, 270) else (cover_w, cover_h)
        img = reformatter.reformat(frame, width=sw, height=sh, format="rgb24", interpolation="AREA")
        img = _rotate_displayed(img.to_ndarray(), rotation)
        x0, y0 = (cover_w - out_w) // 2, (cover_h - out_h) // 2
        out[fmt] = np.ascontiguousarray(img[y0:y0 + out_h, x0:x0 + out_w])
    return out


SKIPPABLE_CODECS = ("h264", "hevc")  # decoders that honour skip_frame = NONREF
INDEX_OPEN_OPTIONS = {"analyzeduration": "0", "probesize": "32"}


def _last_duration(times: list[Fraction], duration: Fraction | None, fallback: Fraction) -> Fraction:
    """The last frame's display duration: its own when known, else the median of the last gaps."""
    if duration is not None and duration > 0:
        return duration
    gaps = np.diff([float(x) for x in times[-9:]]) if len(times) > 1 else []
    return Fraction(float(np.median(gaps))).limit_denominator(1_000_000) if len(gaps) else fallback


@dataclass
class _SkipPlan:
    """Which video packets (by pts) a pick needs, from a demux-only pass over the file."""

    times: list[Fraction]  # every frame's presentation time, sorted
    index: dict[int, int]  # pts -> presentation index
    needs: dict[int, list[Fraction]]  # pts of a needed frame -> the output offsets it fills
    end: Fraction


def _skip_plan(path: str, cfg: MediaConfig, planned, info: dict, vstream, fallback_dt: Fraction) -> _SkipPlan | None:
    """Index the video packets (pts, duration) without decoding and apply the pick rule to them.
    None when the packets cannot stand in for the decoded frames (a pts missing or repeated, an
    edit list discarding packets): the caller then decodes every frame. The pass costs an open
    and a demux (~1% of decoding a 720p file); it paid off even on the 96x72 sample files."""
    import av

    if (not cfg.skip_unneeded_frames or vstream.codec_context.name not in SKIPPABLE_CODECS
            or not vstream.time_base):
        return None
    tb = Fraction(vstream.time_base)
    pts: list[int] = []
    last_pts, last_duration = None, 0  # the last frame in presentation order and its packet duration
    try:
        # no stream probing: only packet timestamps are read (13 -> 2 ms to open bigbuckbunny.mp4)
        with av.open(path, metadata_errors="ignore", options=INDEX_OPEN_OPTIONS) as container:
            for packet in container.demux(container.streams.video[0]):
                if not packet.size:
                    continue
                if packet.pts is None or packet.is_discard or packet.is_corrupt:
                    return None
                pts.append(packet.pts)
                if last_pts is None or packet.pts > last_pts:
                    last_pts, last_duration = packet.pts, packet.duration or 0
    except av.error.FFmpegError:
        return None
    pts.sort()
    if not pts or any(a == b for a, b in zip(pts, pts[1:])):
        return None
    times = [_frac_time(p, tb) for p in pts]
    end = times[-1] + _last_duration(times, last_duration * tb if last_duration else None, fallback_dt)
    picker = _Picker(cfg, planned)
    needs: dict[int, list[Fraction]] = {}
    for j, p in enumerate(pts):
        b = times[j + 1] if j + 1 < len(times) else end
        need = picker.times_in(times[j] - times[0], b - times[0])
        if need:
            needs[p] = need
    return _SkipPlan(times, {p: j for j, p in enumerate(pts)}, needs, end)


def _decode_pyav(path: str, cfg: MediaConfig, *, allow_skip: bool = True, one_thread: bool = False
                 ) -> tuple[_VideoResult, _AudioResult | None, dict, dict | None]:
    """Probe, plan and decode in one open of the container (opening costs as much as decoding a
    few frames: a second full open per input was ~5% of the CPU on short clips; skip mode's packet
    index opens the file again without stream probing, ~1 ms). Returns (video, audio, probe info,
    planned windows).

    With a skip plan (H.264/HEVC, `skip_unneeded_frames`), each video packet goes to the decoder
    with skip_frame NONREF unless the pick needs its frame: non-reference frames nobody picks are
    never decoded (a 60 s 720p 30 fps x264 file: 649 of 1,800 frames; the whole job then costs
    what decoding every frame does). Reference frames always decode, so the needed frames get the
    same pixels. The packet index stands in for the skipped frames' times; if what decodes does not fit it (a
    frame outside the index, out of order, a needed frame missing, a corrupt packet or a frame the
    decoder had to conceal errors in, which may copy from a skipped frame), the input is decoded
    again without skipping.

    A stream with errors is decoded once more on one codec thread: what FFmpeg's error concealment
    copies into a damaged frame depends on the timing of its frame threads (two threaded decodes
    of the same corrupt file differed under load), and the same input must give the same clips."""
    import av
    from av.video.reformatter import VideoReformatter

    try:
        container = av.open(path, metadata_errors="ignore")
    except av.error.FFmpegError:
        raise _open_error(path) from None
    with container:
        info = _probe(container, path, cfg)
        planned = _plan(cfg, info["claimed_duration"])
        want_audio = cfg.audio and info["has_audio_stream"]
        vstream = container.streams.video[0]
        vstream.thread_type = "AUTO"
        if one_thread:
            vstream.codec_context.thread_count = 1
        elif cfg.decode_threads:
            vstream.codec_context.thread_count = cfg.decode_threads
        if _use_seek(cfg, planned, info):
            video = _decode_pyav_sparse(container, vstream, path, cfg, planned, info)
            if video is not None:
                return video, (_decode_audio_ranges(path, video.segments) if want_audio else None), info, planned
            container.seek(0)  # the sparse pass could not verify the file: decode it all
        astream = container.streams.audio[0] if (want_audio and container.streams.audio) else None
        audio = _AudioCollector(astream) if astream is not None else None
        picker = _Picker(cfg, planned)
        tb = Fraction(vstream.time_base) if vstream.time_base else None
        fallback_dt = Fraction(1, 25)
        if vstream.average_rate:
            fallback_dt = 1 / Fraction(vstream.average_rate)
        plan = _skip_plan(path, cfg, planned, info, vstream, fallback_dt) if allow_skip else None
        reformatter = VideoReformatter()
        codec = vstream.codec_context
        skipping = False
        times: list[Fraction] = []
        picks: dict[Fraction, int] = {}
        images: dict[tuple[int, str], np.ndarray] = {}
        notes: list[str] = []
        bad_video = dropped = concealed = 0
        prev = None  # (index, frame, time)
        plan_ok, plan_last, plan_hits, plan_decoded, last_frame = True, -1, 0, 0, None

        def keep(j: int, frame, need: list[Fraction]) -> None:
            for fmt, img in _frame_formats_pyav(frame, cfg.formats, reformatter).items():
                images[(j, fmt)] = img
            for tau in need:
                picks[tau] = j

        def settle(j: int, frame, a: Fraction, b: Fraction) -> None:
            need = picker.times_in(a - times[0], b - times[0])
            if need:
                keep(j, frame, need)

        streams = [vstream] + ([astream] if astream is not None else [])
        last_duration: Fraction | None = None
        try:
            for packet in container.demux(streams):
                if astream is not None and packet.stream.index == astream.index:
                    if packet.dts is not None or packet.size:
                        audio.packet(packet)
                    continue
                if plan is not None and packet.size:
                    skip = packet.pts not in plan.needs
                    if skip != skipping:
                        codec.skip_frame = "NONREF" if skip else "DEFAULT"
                        skipping = skip
                try:
                    frames = packet.decode()
                except (av.error.FFmpegError, ValueError):
                    bad_video += 1
                    continue
                for frame in frames:
                    if frame.is_corrupt:
                        concealed += 1
                    if plan is not None:
                        j = plan.index.get(frame.pts, -1)
                        if j <= plan_last or concealed:  # (concealment may copy from a skipped frame)
                            plan_ok = False
                            break
                        plan_last, last_frame = j, frame
                        plan_decoded += 1
                        need = plan.needs.get(frame.pts)
                        if need:
                            plan_hits += 1
                            keep(j, frame, need)
                        continue
                    t = _frac_time(frame.pts, tb)
                    if t is None:
                        t = times[-1] + fallback_dt if times else Fraction(0)
                    if times and t <= times[-1]:
                        dropped += 1
                        continue
                    times.append(t)
                    if prev is not None:
                        settle(prev[0], prev[1], prev[2], t)
                    prev = (len(times) - 1, frame, t)
                    last_duration = frame.duration * tb if (frame.duration and tb) else None
                if not plan_ok:
                    break
        except av.error.FFmpegError as err:  # demuxing stopped mid-file: keep what decoded, say so
            if plan is not None:
                plan_ok = False
            notes.append(f"demuxing stopped early: {type(err).__name__}")
        if plan is not None:
            if not plan_ok or bad_video or plan_hits != len(plan.needs) or last_frame is None:
                # the index did not hold: decode everything (on one thread if errors were concealed)
                return _decode_pyav(path, cfg, allow_skip=False, one_thread=bool(concealed))
            _displayed_size(info, last_frame)
            notes.append(f"skip mode: decoded {plan_decoded} of {len(plan.times)} frames "
                         "(non-reference frames that no window picks were not decoded)")
            video = _VideoResult(plan.times, plan.end, picks, images, notes)
            return video, (audio.finish(path) if audio is not None else None), info, planned
        if prev is None:
            raise MediaError("decode", "NoFramesDecoded", f"{path}: the video stream decoded to no frames")
        if concealed and not one_thread and vstream.codec_context.thread_count != 1:
            return _decode_pyav(path, cfg, allow_skip=False, one_thread=True)
        end = prev[2] + _last_duration(times, last_duration, fallback_dt)
        _displayed_size(info, prev[1])
        settle(prev[0], prev[1], prev[2], end)
        if bad_video:
            notes.append(f"skipped {bad_video} corrupt video packet(s)")
        if concealed:
            notes.append(f"{concealed} video frame(s) decoded with errors (concealed by the decoder)")
        if dropped:
            notes.append(f"dropped {dropped} video frame(s) with non-increasing timestamps")
        video = _VideoResult(times, end, picks, images, notes)
        return video, (audio.finish(path) if audio is not None else None), info, planned


SEEK_MIN_DURATION_S = 30
SEEK_MARGINS_S = (Fraction(1, 2), Fraction(2), Fraction(8))


def _use_seek(cfg: MediaConfig, planned, info: dict) -> bool:
    if cfg.seek == "never" or planned is None or info["claimed_duration"] is None:
        return False
    if cfg.seek == "always":
        return True
    claimed = info["claimed_duration"]
    kept = sum(len(ws) * Fraction(t, CLIP_FPS) for t, ws in planned.items())
    return claimed >= SEEK_MIN_DURATION_S and kept <= claimed / 3


def _decode_pyav_sparse(container, vstream, path: str, cfg: MediaConfig, planned, info: dict) -> _VideoResult | None:
    """Seek to each run of kept windows (a keyframe at least 0.5 s before it), decode only through
    its last picked frame, and probe the stream end by seeking near the claimed end. Same pick rule
    and same pixels as the sequential pass; source frame indices are round((t - t_0) * average
    fps), exact for constant frame rate. Returns None when the file cannot be handled this way
    (the caller then decodes everything)."""
    import av
    from av.video.reformatter import VideoReformatter

    tb = Fraction(vstream.time_base) if vstream.time_base else None
    rate = Fraction(vstream.average_rate) if vstream.average_rate else None
    if tb is None or rate is None:
        return None
    dt = 1 / rate
    try:
        first = next(container.decode(vstream))
    except (StopIteration, av.error.FFmpegError):
        return None
    t0 = _frac_time(first.pts, tb)
    _displayed_size(info, first)
    if t0 is None:
        return None
    taus = _Picker(cfg, planned).planned_times
    reformatter = VideoReformatter()
    segments: list[list[Fraction]] = []
    for tau in taus:  # runs of needed times less than 2 s apart share one seek
        if segments and tau - segments[-1][-1] < 2:
            segments[-1].append(tau)
        else:
            segments.append([tau])
    picks: dict[Fraction, int] = {}
    images: dict[tuple[int, str], np.ndarray] = {}
    decoded = 0

    def index(t: Fraction) -> int:
        return int(round((t - t0) * rate))

    def settle(frame, a: Fraction, b: Fraction, need: list[Fraction]) -> None:
        hit = [tau for tau in need if a - t0 <= tau < b - t0]
        if not hit:
            return
        j = index(a)
        for fmt, img in _frame_formats_pyav(frame, cfg.formats, reformatter).items():
            images[(j, fmt)] = img
        for tau in hit:
            picks[tau] = j

    def run(need: list[Fraction], margin: Fraction) -> bool:
        """Decode one segment; False when the seek landed after its first needed time."""
        nonlocal decoded
        target = t0 + need[0] - margin
        container.seek(max(0, math.floor(target / tb)), stream=vstream, backward=True)
        prev = None
        for frame in container.decode(vstream):
            decoded += 1
            t = _frac_time(frame.pts, tb)
            if t is None:
                return False
            if prev is None:
                if t > t0 + need[0]:
                    return False
            elif t > prev[1]:
                settle(prev[0], prev[1], t, need)
                if t > t0 + need[-1]:
                    return True
            prev = (frame, t)
        if prev is not None:  # the stream ended inside the segment
            d = prev[0].duration * tb if prev[0].duration else dt
            settle(prev[0], prev[1], prev[1] + d, need)
        return True

    try:
        for need in segments:
            for margin in SEEK_MARGINS_S + (need[0] + 1,):
                if run(need, margin):
                    break
            else:
                return None
        # where does the stream really end? decode the last few seconds
        claimed = info["claimed_duration"]
        container.seek(max(0, math.floor((t0 + claimed - 3) / tb)), stream=vstream, backward=True)
        last = None
        for frame in container.decode(vstream):
            decoded += 1
            t = _frac_time(frame.pts, tb)
            if t is not None and (last is None or t > last[1]):
                last = (frame, t)
    except av.error.FFmpegError:
        return None
    if last is None or last[1] < t0 + claimed - 3 - 1:
        return None  # nothing decodes near the claimed end: let the full pass find out why
    end = last[1] + (last[0].duration * tb if last[0].duration else dt)
    note = f"seek mode: decoded {decoded} of ~{int(claimed * rate)} frames"
    ranges = [(t0 + need[0], t0 + need[-1] + Fraction(1, CLIP_FPS)) for need in segments]
    return _VideoResult([t0], end, picks, images, [note], sparse=True, segments=ranges)


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
    return {
        "width": w, "height": h,
        "claimed_duration": _claimed_duration(container, v),
        "claimed_frames": int(v.frames or 0),
        "average_fps": float(avg) if avg else None,
        "has_audio_stream": bool(container.streams.audio),
    }


def _probe_only(path: str, cfg: MediaConfig) -> dict:
    import av

    try:
        container = av.open(path, metadata_errors="ignore")
    except av.error.FFmpegError:
        raise _open_error(path) from None
    with container:
        return _probe(container, path, cfg)


def _decode_decord(path: str, cfg: MediaConfig, planned, want_audio: bool):
    """decord for the frames; PyAV for probing and audio (decord's audio reader is less robust)."""
    import decord

    info = _probe_only(path, cfg)
    try:
        vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=max(0, cfg.decode_threads))
        n = len(vr)
        if n == 0:
            raise MediaError("decode", "NoFramesDecoded", f"{path}: the video stream decoded to no frames")
        stamps = vr.get_frame_timestamp(range(n))  # [n, 2] start, end seconds
    except MediaError:
        raise
    except Exception as err:
        raise MediaError("decode", "DecordError", f"{path}: decord failed ({str(err).splitlines()[0][:200]})") from None
    times = [Fraction(float(s)).limit_denominator(1_000_000) for s in stamps[:, 0]]
    end = Fraction(float(stamps[-1, 1])).limit_denominator(1_000_000)
    if end <= times[-1]:
        end = times[-1] + (times[-1] - times[-2] if n > 1 else Fraction(1, 25))
    picker = _Picker(cfg, planned)
    picks: dict[Fraction, int] = {}
    bounds = times[1:] + [end]
    for j in range(n):
        for tau in picker.times_in(times[j] - times[0], bounds[j] - times[0]):
            picks[tau] = j
    idx = sorted(set(picks.values()))
    images: dict[tuple[int, str], np.ndarray] = {}
    try:
        for start in range(0, len(idx), 32):
            part = idx[start:start + 32]
            batch = vr.get_batch(part).asnumpy()
            for j, img in zip(part, batch):
                for fmt in cfg.formats:
                    images[(j, fmt)] = resize_crop(img, *FORMATS[fmt])
    except Exception as err:
        raise MediaError("decode", "DecordError", f"{path}: decord failed ({str(err).splitlines()[0][:200]})") from None
    del vr
    audio = None
    if want_audio and info["has_audio_stream"]:
        audio = _decode_audio_only(path)
    return _VideoResult(times, end, picks, images, []), audio, info


def _decode_audio_only(path: str) -> _AudioResult | None:
    import av

    with av.open(path, metadata_errors="ignore") as container:
        if not container.streams.audio:
            return None
        astream = container.streams.audio[0]
        col = _AudioCollector(astream)
        try:
            for packet in container.demux(astream):
                if packet.dts is not None or packet.size:
                    col.packet(packet)
        except av.error.FFmpegError:
            col.bad_packets += 1
        return col.finish(path)


AUDIO_SEEK_MARGIN_S = Fraction(1, 2)  # decoded before a range: covers AAC/Opus warm-up after a seek


def _decode_audio_ranges(path: str, ranges: list[tuple[Fraction, Fraction]]) -> list[_AudioResult] | None:
    """Seek mode's audio: decode only around each [a, b) time range (absolute seconds), one
    collector (own timeline, own resampler) per range."""
    import av

    out: list[_AudioResult] = []
    with av.open(path, metadata_errors="ignore") as container:
        if not container.streams.audio:
            return None
        astream = container.streams.audio[0]
        tb = Fraction(astream.time_base) if astream.time_base else None
        if tb is None:
            return None
        origin = astream.start_time * tb if astream.start_time is not None else Fraction(0)
        for a, b in ranges:
            col = _AudioCollector(astream, origin)
            try:
                if a - AUDIO_SEEK_MARGIN_S > origin or out:
                    container.seek(max(0, math.floor((a - AUDIO_SEEK_MARGIN_S) / tb)), stream=astream, backward=True)
                # else: the first range starts at the top of the freshly opened file: no seek, so the
                # encoder-delay trimming the demuxer does at the stream start applies as usual
                for packet in container.demux(astream):
                    if packet.pts is not None and packet.pts * tb > b + AUDIO_SEEK_MARGIN_S:
                        break
                    if packet.dts is not None or packet.size:
                        col.packet(packet)
            except av.error.FFmpegError:
                col.bad_packets += 1
            res = col.finish(path)
            if res is not None:
                out.append(res)
    return out


def _segment_for(audio: _AudioResult | list[_AudioResult], t_start: Fraction) -> _AudioResult:
    if not isinstance(audio, list):
        return audio
    before = [x for x in audio if x.start <= t_start]
    return max(before, key=lambda x: x.start) if before else audio[0]


def _to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 32767.0), -32768, 32767).astype(np.int16)


def _cut_audio(audio: _AudioResult | list[_AudioResult], t_start: Fraction, n: int) -> tuple[np.ndarray, list[str]]:
    audio = _segment_for(audio, t_start)
    first = round((t_start - audio.start) * AUDIO_RATE)
    out = np.zeros(n, np.float32)
    a, b = max(first, 0), min(first + n, len(audio.samples))
    if b > a:
        out[a - first:b - first] = audio.samples[a:b]
    notes = []
    if first < 0:
        notes.append(f"audio starts {-first} samples after the window: zero-padded")
    if first + n > len(audio.samples):
        notes.append(f"audio ends {first + n - max(len(audio.samples), first)} samples before the window end: zero-padded")
    return _to_int16(out), notes


def _plan(cfg: MediaConfig, claimed: Fraction | None) -> dict[int, list[int]] | None:
    if claimed is None:
        return None
    return {t: select_windows(count_windows(claimed, t, _stride(cfg, t)), cfg.clips_per_video)
            for t in cfg.clip_frames}


def _decode_image(path: str, cfg: MediaConfig) -> list[DecodedClip]:
    from PIL import Image, ImageOps

    Image.MAX_IMAGE_PIXELS = cfg.max_pixels
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > cfg.max_pixels:
                raise MediaError("image", "ResolutionTooLarge", f"{path}: {w}x{h} exceeds max_pixels={cfg.max_pixels}")
            if min(w, h) < cfg.min_side:
                raise MediaError("image", "ResolutionTooSmall", f"{path}: {w}x{h} is smaller than min_side={cfg.min_side}")
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "P"):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im)
            img = np.asarray(im.convert("RGB"))
    except MediaError:
        raise
    except Image.DecompressionBombError as err:
        raise MediaError("image", "ResolutionTooLarge", f"{path}: {err}") from None
    except Exception as err:
        raise MediaError("image", "UnreadableImage", f"{path}: cannot read as an image ({type(err).__name__}: {err})") from None
    rgb = resize_crop(img, *FORMATS["square"])[None]
    return [DecodedClip(window_index=0, num_frames=1, format="square", start_time_s=0.0, rgb=rgb, audio=None,
                        source_fps=0.0, source_frame_indices=[0], notes=[], source_width=img.shape[1],
                        source_height=img.shape[0], source_duration_s=None)]


def _is_image(path: str) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS or _sniff_image(path)


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
    if claimed is not None and claimed - span > max(Fraction(cfg.duration_tolerance_s).limit_denominator(1000), claimed / 10):
        frames_txt = "" if video.sparse else f" ({len(video.times)} frames)"
        msg = (f"{path}: the container claims {float(claimed):.3f} s but only {float(span):.3f} s"
               f"{frames_txt} decode")
        if cfg.strict_duration:
            raise MediaError("decode", "DurationMismatch", msg)
        notes.append(msg.split(": ", 1)[1])
    elif not video.sparse and info["claimed_frames"] and len(video.times) < 0.9 * info["claimed_frames"] - 2:
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
        raise MediaError("too_short", "TooShort",
                         f"{path}: {float(span):.3f} s of video decodes; one {min(cfg.clip_frames)}-frame clip "
                         f"at {CLIP_FPS} fps needs more than {float(need):.3f} s")
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


# ----------------------------------------------------------------------------- time limit


def _worker_main(conn) -> None:
    import av  # noqa: F401  (imports happen before "ready", so they never count against an input)
    import cv2  # noqa: F401

    conn.send("ready")
    while True:
        try:
            req = conn.recv()
        except (EOFError, OSError):
            return
        if req is None:
            return
        path, cfg, is_image = req
        try:
            result = ("ok", probe_and_decode(path, cfg, is_image=is_image))
        except MediaError as err:
            result = ("media_error", err)
        except Exception as err:  # report, never die: the parent records it as a failed input
            result = ("error", (type(err).__name__, str(err)[:500]))
        try:
            conn.send(result)
        except Exception as err:
            conn.send(("error", (type(err).__name__, f"could not return the result: {err}")))


class DecodeWorker:
    """A persistent decode process; killed and restarted when an input passes its time limit or
    crashes the decoder. Start cost (spawn + imports) is paid once, not per input."""

    def __init__(self):
        self._proc = None
        self._conn = None
        self.restarts = 0

    def _start(self) -> None:
        ctx = mp.get_context("spawn")  # fork is unsafe in threaded hosts (Ray, Beam)
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_worker_main, args=(child,), daemon=True, name="videopoet-decode")
        me = mp.current_process()
        was_daemon = me._config.get("daemon")
        try:
            # inside a daemonic host process (a multiprocessing.Pool worker, some runners'
            # workers) multiprocessing refuses children; our child is killed with us anyway
            # (daemon=True + kill on timeout), so lift the flag just for the start
            me._config["daemon"] = False
            self._proc.start()
        finally:
            if was_daemon is not None:
                me._config["daemon"] = was_daemon
            else:
                me._config.pop("daemon", None)
        child.close()
        self._conn = parent
        if not parent.poll(WORKER_START_TIMEOUT_S) or parent.recv() != "ready":
            self.kill()
            raise RuntimeError(f"the decode worker did not start within {WORKER_START_TIMEOUT_S} s")

    def kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(5)
            self._conn.close()
        self._proc = self._conn = None

    def close(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            try:
                self._conn.send(None)
                self._proc.join(2)
            except Exception:
                pass
        self.kill()

    def decode(self, path: str, cfg: MediaConfig, is_image: bool | None, timeout_s: float) -> list[DecodedClip]:
        if self._proc is None or not self._proc.is_alive():
            if self._proc is not None:
                self.restarts += 1
            self.kill()
            self._start()
        t0 = time.monotonic()
        self._conn.send((str(path), cfg, is_image))
        if not self._conn.poll(timeout_s):
            self.kill()
            self.restarts += 1
            raise MediaError("timeout", "DecodeTimeout",
                             f"{path}: decoding took longer than decode_timeout_s={timeout_s:g} s; worker killed")
        try:
            kind, payload = self._conn.recv()
        except (EOFError, OSError):
            code = self._proc.exitcode if self._proc is not None else None
            self.kill()
            raise MediaError("decode", "DecoderCrashed",
                             f"{path}: the decoder process died (exit code {code}) after "
                             f"{time.monotonic() - t0:.1f} s") from None
        if kind == "ok":
            return payload
        if kind == "media_error":
            raise payload
        raise MediaError("decode", payload[0], f"{path}: unexpected decoder error ({payload[1]})")


_local = threading.local()


def decode_with_timeout(path: str, cfg: MediaConfig, is_image: bool | None = None) -> list[DecodedClip]:
    """probe_and_decode under cfg.decode_timeout_s (a per-thread worker process, reused across
    inputs); raises MediaError(stage="timeout") when the limit passes. decode_timeout_s <= 0 decodes
    in this process without a limit."""
    if cfg.decode_timeout_s is None or cfg.decode_timeout_s <= 0:
        return probe_and_decode(path, cfg, is_image=is_image)
    worker = getattr(_local, "worker", None)
    if worker is None:
        worker = _local.worker = DecodeWorker()
    return worker.decode(path, cfg, is_image, cfg.decode_timeout_s)
