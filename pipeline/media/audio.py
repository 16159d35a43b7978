"""Audio: every packet decoded with PyAV, resampled to 16 kHz, downmixed to mono, cut to a window's samples.

PyAV decodes every audio packet (a packet that fails to decode is skipped and counted, its
time filled with silence so later samples stay aligned); one FFmpeg filter graph per stream
(`_MonoResampler`) mixes the channels to mono with `downmix_weights` (BS.775-style, normalised: no
clipping) and then resamples the one channel to 16 kHz with libswresample.
Sample k sits at time a_0 + k/16000 where a_0 is the first audio frame's time, so a window starting
at t_0 + o_w takes samples from round((t_0 + o_w - a_0) * 16000), exactly T * 2000 of them (34,000
for 17 frames, 82,000 for 41). Zeros are padded only before the audio stream starts or past its end,
and a note says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from videopoet.pipeline.media.config import AUDIO_RATE
from videopoet.pipeline.media.probe import _frac_time

GAP_TOLERANCE_S = 0.002  # audio timestamps further apart than this count as a gap


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


class _MonoResampler:
    """Audio frames (one sample format, layout and rate) -> float mono 16 kHz frames, all in C:
    FFmpeg's `pan` filter mixes the channels with `downmix_weights` (libswresample's rematrix with
    our matrix: its default stereo -> mono sums at +3 dB and clips full-scale material, its 5.1
    weights are not BS.775's), then the `aresample` FFmpeg inserts ahead of `aformat` converts the
    one channel to 16 kHz. Mixing before resampling resamples one channel instead of 2 or 6 (the
    rate conversion costs per channel). Like av.AudioResampler: resample(frame) -> frames out,
    resample(None) flushes; a frame that does not match the first raises ValueError. Unlike it,
    frames out are PULL_SAMPLES long and are pulled after every PULL_EVERY frames in: each pull
    of a PyAV graph costs Python calls and an EAGAIN exception, which per 1024-sample AAC frame
    cost as much as the resampling (5.1 48 kHz, 10 s: 9.3 -> 4.9 ms)."""

    PULL_EVERY = 32
    PULL_SAMPLES = 4096

    def __init__(self, frame):
        import av

        self.setup = (frame.format.name, frame.layout.name, frame.sample_rate)
        self.graph = av.filter.Graph()
        chain = [self.graph.add("abuffer", sample_rate=str(frame.sample_rate), sample_fmt=frame.format.name,
                                channel_layout=frame.layout.name)]
        channels = [c.name for c in frame.layout.channels]
        if len(channels) > 1:
            # repr of the float32 weights as doubles: pan parses them exactly, swresample's float
            # matrix casts them back to the same float32 values
            gains = "+".join(f"{float(w)!r}*c{i}" for i, w in enumerate(downmix_weights(channels)) if w)
            # mix in float (pan keeps its input's sample format: int16 input would be rounded to
            # int16 once more before resampling); a no-op for AAC/Opus/Vorbis, decoded as fltp
            chain.append(self.graph.add("aformat", sample_fmts="fltp"))
            chain.append(self.graph.add("pan", f"mono|c0={gains}"))
        chain.append(self.graph.add("aformat", sample_fmts="fltp", sample_rates=str(AUDIO_RATE),
                                    channel_layouts="mono"))
        chain.append(self.graph.add("abuffersink"))
        for a, b in zip(chain, chain[1:]):
            a.link_to(b)
        self.graph.configure()
        self.graph.set_audio_frame_size(self.PULL_SAMPLES)
        self.pushed = 0

    def resample(self, frame) -> list:
        import av

        if frame is not None and (frame.format.name, frame.layout.name, frame.sample_rate) != self.setup:
            raise ValueError("an audio frame's format, layout or rate changed mid-stream")
        self.graph.push(frame)
        self.pushed += 1
        if frame is not None and self.pushed % self.PULL_EVERY:
            return []
        out = []
        while True:
            try:
                out.append(self.graph.pull())
            except (EOFError, av.error.BlockingIOError):
                return out


class _AudioCollector:
    def __init__(self, stream, origin: Fraction | None = None):
        self.origin = origin  # seek mode: align the first sample to this timeline's resampler phase
        self.stream = stream
        self.tb = Fraction(stream.time_base) if stream.time_base else None
        self.resampler: _MonoResampler | None = None  # made at the first frame, for its layout and rate
        self.start: Fraction | None = None
        self.fed = 0  # input samples fed (including silence for gaps)
        self.rate: int | None = None
        self.chunks: list[np.ndarray] = []
        self.bad_packets = 0
        self.gaps = 0
        self.gap_s = 0.0

    def _resample(self, frame) -> None:
        if self.resampler is None:
            self.resampler = _MonoResampler(frame)
        for out in self.resampler.resample(frame):
            self.chunks.append(out.to_ndarray()[0])

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
                self.chunks.extend(f.to_ndarray()[0] for f in self.resampler.resample(None))
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
        missing = first + n - max(len(audio.samples), first)
        notes.append(f"audio ends {missing} samples before the window end: zero-padded")
    return _to_int16(out), notes
