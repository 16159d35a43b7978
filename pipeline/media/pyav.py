"""The PyAV frame decoder: probe, plan and decode in one open; skip mode leaves out unpicked non-reference frames."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from videopoet.pipeline.media.audio import _AudioCollector, _AudioResult, _decode_audio_ranges
from videopoet.pipeline.media.clip import _VideoResult
from videopoet.pipeline.media.config import MediaConfig
from videopoet.pipeline.media.errors import MediaError
from videopoet.pipeline.media.frames import FrameConverter, _displayed_size, _frame_formats_pyav
from videopoet.pipeline.media.probe import _frac_time, _open_error, _packet_index, _probe
from videopoet.pipeline.media.pyav_seek import _decode_pyav_sparse, _use_seek
from videopoet.pipeline.media.windows import _Picker, _plan

SKIPPABLE_CODECS = ("h264", "hevc")  # decoders that honour skip_frame = NONREF
# seek mode trusts frame timestamps; these codecs' B-frames may be packed (DivX/Xvid) with bad ones
REORDER_UNSAFE_CODECS = ("mpeg4", "msmpeg4v3", "msmpeg4v2", "msmpeg4v1", "h263")
INDEX_OPEN_OPTIONS = {"analyzeduration": "0", "probesize": "32"}


def _last_duration(times: list[Fraction], duration: Fraction | None, fallback: Fraction) -> Fraction:
    """The last frame's display duration: its own when known, else the median of the last gaps."""
    if duration is not None and duration > 0:
        return duration
    gaps = np.diff([float(x) for x in times[-9:]]) if len(times) > 1 else []
    return Fraction(float(np.median(gaps))).limit_denominator(1_000_000) if len(gaps) else fallback


def _replan(cfg: MediaConfig, info: dict, planned, span: Fraction, plan_span: Fraction | None) -> bool:
    """Whether the windows must be planned again from the decoded span: the container claimed
    much less than decodes (a bogus header duration), so the plan left out windows that exist."""
    claimed = info["claimed_duration"]
    if plan_span is not None or planned is None or claimed is None:
        return False
    tolerance = Fraction(cfg.duration_tolerance_s).limit_denominator(1000)
    if span - claimed <= max(tolerance, claimed / 10):
        return False
    return _plan(cfg, span) != planned


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
    if picker.planned_times is not None:
        # per needed time, not per packet, and in integers: frame j shows over [rel_j, rel_j+1) time
        # base units and, rel being integers, tau falls in it iff rel_j <= floor(tau / tb) < rel_j+1
        # (Fraction arithmetic per packet was ~1/10 of the decode worker's CPU at 426x240)
        rel = [p - pts[0] for p in pts]
        span = end - times[0]
        num, den = tb.numerator, tb.denominator
        for tau in picker.planned_times:
            if tau >= span:
                break
            j = bisect.bisect_right(rel, (tau.numerator * den) // (tau.denominator * num)) - 1
            needs.setdefault(pts[j], []).append(tau)
    else:
        for j, p in enumerate(pts):
            b = times[j + 1] if j + 1 < len(times) else end
            need = picker.times_in(times[j] - times[0], b - times[0])
            if need:
                needs[p] = need
    return _SkipPlan(times, {p: j for j, p in enumerate(pts)}, needs, end)


def _decode_pyav(path: str, cfg: MediaConfig, *, allow_skip: bool = True, one_thread: bool = False,
                 retime: list[Fraction] | None = None, plan_span: Fraction | None = None,
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
    of the same corrupt file differed under load), and the same input must give the same clips.

    Frame times: the decoder outputs frames in presentation order. When a frame's own timestamp is
    missing or not after the previous frame's (MPEG-4 Part 2 packed B-frames in AVI/MKV), the
    input is decoded again with `retime`: the k-th frame output is shown at the k-th of the video
    packets' sorted times (probe._packet_index), else at the previous time plus the frame's
    duration. No frame is dropped. When more decodes than the container claims (a bogus header
    duration), the windows are planned again from the decoded span (`plan_span`) and the input is
    decoded once more."""
    import av

    try:
        container = av.open(path, metadata_errors="ignore")
    except av.error.FFmpegError:
        raise _open_error(path) from None
    with container:
        info = _probe(container, path, cfg)
        planned = _plan(cfg, plan_span if plan_span is not None else info["claimed_duration"])
        want_audio = cfg.audio and info["has_audio_stream"]
        vstream = container.streams.video[0]
        vstream.thread_type = "AUTO"
        if one_thread:
            vstream.codec_context.thread_count = 1
        elif cfg.decode_threads:
            vstream.codec_context.thread_count = cfg.decode_threads
        if retime is None and plan_span is None and _use_seek(cfg, planned, info) and (
                vstream.codec_context.name not in REORDER_UNSAFE_CODECS):
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
        plan = _skip_plan(path, cfg, planned, info, vstream, fallback_dt) if (allow_skip and retime is None) else None
        again = {"allow_skip": False, "one_thread": one_thread, "retime": retime, "plan_span": plan_span}
        converter = FrameConverter()
        codec = vstream.codec_context
        skipping = False
        times: list[Fraction] = []
        picks: dict[Fraction, int] = {}
        images: dict[tuple[int, str], np.ndarray] = {}
        notes: list[str] = []
        bad_video = concealed = 0
        prev = None  # (index, frame, time)
        plan_ok, plan_last, plan_hits, plan_decoded, last_frame = True, -1, 0, 0, None

        def keep(j: int, frame, need: list[Fraction]) -> None:
            for fmt, img in _frame_formats_pyav(frame, cfg.formats, converter).items():
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
                    if retime is not None:  # presentation order; the packets' times
                        k = len(times)
                        t = retime[k] if k < len(retime) else (
                            times[-1] + (last_duration or fallback_dt) if times else Fraction(0))
                        if times and t <= times[-1]:
                            t = times[-1] + (last_duration or fallback_dt)
                    else:
                        t = _frac_time(frame.pts, tb)
                        if t is None or (times and t <= times[-1]):
                            # a timestamp missing, repeated or out of order: decode again, timed
                            # by presentation order (frames are never dropped)
                            packet_times, _ = _packet_index(path)
                            again.update(retime=packet_times or [])
                            return _decode_pyav(path, cfg, **again)
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
                return _decode_pyav(path, cfg, **{**again, "one_thread": bool(concealed)})
            if _replan(cfg, info, planned, plan.end - plan.times[0], plan_span):
                return _decode_pyav(path, cfg, **{**again, "allow_skip": True, "plan_span": plan.end - plan.times[0]})
            _displayed_size(info, last_frame)
            notes.append(f"skip mode: decoded {plan_decoded} of {len(plan.times)} frames "
                         "(non-reference frames that no window picks were not decoded)")
            video = _VideoResult(plan.times, plan.end, picks, images, notes)
            return video, (audio.finish(path) if audio is not None else None), info, planned
        if prev is None:
            raise MediaError("decode", "NoFramesDecoded", f"{path}: the video stream decoded to no frames")
        if concealed and not one_thread and vstream.codec_context.thread_count != 1:
            return _decode_pyav(path, cfg, **{**again, "one_thread": True})
        end = prev[2] + _last_duration(times, last_duration, fallback_dt)
        if _replan(cfg, info, planned, end - times[0], plan_span):
            return _decode_pyav(path, cfg, **{**again, "plan_span": end - times[0]})
        _displayed_size(info, prev[1])
        settle(prev[0], prev[1], prev[2], end)
        if bad_video:
            notes.append(f"skipped {bad_video} corrupt video packet(s)")
        if concealed:
            notes.append(f"{concealed} video frame(s) decoded with errors (concealed by the decoder)")
        if retime is not None:
            notes.append("frame timestamps missing, repeated or out of order: frames timed by presentation order"
                         + (" and the packet times" if retime else " and frame durations"))
        video = _VideoResult(times, end, picks, images, notes)
        return video, (audio.finish(path) if audio is not None else None), info, planned
