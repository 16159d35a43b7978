"""The one MP4/WAV writer: uint8 RGB frames (+ mono audio) -> H.264 (+ AAC) .mp4, and audio -> 16-bit .wav.

    write_mp4(path, rgb_uint8[T, H, W, 3], audio=None, fps=8, audio_rate=16000)
    write_wav(path, audio, sample_rate=16000)

`audio` is mono: int16 PCM, or float in [-1, 1] (a NumPy array or a torch tensor, any shape that
flattens to [S]). Odd frame sizes are padded by one edge row/column (H.264 4:2:0 needs even sizes).
`encode_audio` is the audio-frame loop shared with the sample-media generator
(videopoet.pipeline.samples), which opens its own bit-exact containers and streams.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

FPS = 8
AUDIO_RATE = 16_000


def _as_numpy(x):
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    import numpy as np

    return np.asarray(x)


def _as_float(audio):
    """Mono float32 [S] in [-1, 1] from int16 PCM or float samples."""
    import numpy as np

    a = _as_numpy(audio).reshape(-1)
    if a.dtype == np.int16:
        return a.astype(np.float32) / 32768.0
    return a.astype(np.float32)


def encode_audio(out, stream, signal, rate: int, layout: str = "mono") -> None:
    """Encode float32 [S] `signal` (repeated over the layout's channels) into `stream` of `out`, then flush."""
    import av
    import numpy as np

    channels = 1 if layout == "mono" else 2
    frame_size = stream.codec_context.frame_size or 1024
    fmt = stream.codec_context.format
    n, pos = len(signal), 0
    while pos < n:
        chunk = signal[pos:pos + frame_size]
        data = np.repeat(chunk[None, :], channels, axis=0)
        if fmt.name.startswith("s16"):
            data = np.clip(data * 32767, -32768, 32767).astype(np.int16)
        else:
            data = data.astype(np.float32)
        if not fmt.is_planar:
            data = np.ascontiguousarray(data.T).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(data, format=fmt.name, layout=layout)
        frame.sample_rate = rate
        frame.pts = pos
        frame.time_base = Fraction(1, rate)
        for pkt in stream.encode(frame):
            out.mux(pkt)
        pos += frame_size
    for pkt in stream.encode(None):
        out.mux(pkt)


def write_mp4(path: str | Path, rgb, audio=None, fps: int = FPS, audio_rate: int = AUDIO_RATE, *,
              crf: int | None = 16) -> None:
    """uint8 [T, H, W, 3] (+ mono int16 or float [S]) -> H.264 (+ AAC) .mp4 with PyAV.

    crf=None leaves libx264 at its defaults (crf 23); the parent directory is created."""
    import av
    import numpy as np

    rgb = _as_numpy(rgb)
    _, h, w, _ = rgb.shape
    if h % 2 or w % 2:
        rgb = np.pad(rgb, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height = int(rgb.shape[2]), int(rgb.shape[1])
        vs.pix_fmt = "yuv420p"
        if crf is not None:
            vs.options = {"crf": str(crf), "preset": "medium"}
        as_ = None
        if audio is not None:
            as_ = out.add_stream("aac", rate=audio_rate)
            as_.layout = "mono"
        for i, frame in enumerate(rgb):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = i
            for pkt in vs.encode(vf):
                out.mux(pkt)
        for pkt in vs.encode(None):
            out.mux(pkt)
        if as_ is not None:
            encode_audio(out, as_, _as_float(audio), audio_rate, "mono")


def write_wav(path: str | Path, audio, sample_rate: int = AUDIO_RATE) -> None:
    """Mono int16 or float [-1, 1] samples -> 16-bit PCM .wav (standard-library `wave`: no encoder tag)."""
    import wave

    import numpy as np

    a = _as_numpy(audio).reshape(-1)
    pcm = a.astype("<i2") if a.dtype == np.int16 else (np.clip(a, -1.0, 1.0) * 32767.0).astype("<i2")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.tobytes())
