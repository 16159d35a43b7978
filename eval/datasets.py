"""Evaluation dataset layouts: read each benchmark's local copy in its own layout, and write small stand-ins in it.

Each reader returns the split's items (`Item`: key, path, caption, label, start frame) in the order the
dataset's own files give, checking only that files exist (listing never decodes video). A missing
annotation file or video folder is a UsageError naming it. The layouts (docs/formats.md
"Evaluation datasets"):

    msrvtt  <root>/MSRVTT_data.json (or test_videodatainfo.json) + <root>/videos/all/<video_id>.mp4
    ucf101  <root>/UCF-101/<Class>/v_<Class>_gXX_cXX.avi + <root>/ucfTrainTestlist/{classInd,testlist01,trainlist01}.txt
    k600    <root>/<split>.csv (label,youtube_id,time_start,time_end[,split]) + <root>/<split>/<id>_<s:06d>_<e:06d>.mp4
    ssv2    <root>/something-something-v2-validation.json + <root>/20bn-something-something-v2/<id>.webm
    davis   <root>/JPEGImages/480p/<video>/00000.jpg ... (DAVIS 2016, 24 fps frames as JPEG)

The stand-in writers (`write_standin`) produce tiny videos (64x48, a few seconds, moving gradients)
in exactly these layouts, with PyAV, so tests run the real readers and decoders.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from videopoet.config import UsageError

DATA_DIR = Path(__file__).resolve().parent / "data"
DAVIS_TABLE = DATA_DIR / "davis_table5.tsv"
UCF_PROMPTS = DATA_DIR / "ucf101_prompts.tsv"
MSRVTT_ANNOTATIONS = ("MSRVTT_data.json", "test_videodatainfo.json")
SSV2_LABELS = "something-something-v2-validation.json"
SSV2_VIDEOS = "20bn-something-something-v2"
DAVIS_FRAMES = "JPEGImages/480p"


@dataclass(frozen=True)
class Item:
    key: str
    path: str
    caption: str = ""
    label: int = -1
    start_frame: int = 0


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise UsageError(f"{path}: missing ({what})")
    return path


def _read_tsv(path: Path) -> list[dict[str, str]]:
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln and not ln.startswith("#")]
    return list(csv.DictReader(lines, delimiter="\t"))


def davis_table() -> list[tuple[str, int, str]]:
    """Table 5 of the paper (Appendix A.5): (video, start frame, prompt), 40 rows in the paper's order."""
    return [(r["video"], int(r["start_frame"]), r["prompt"]) for r in _read_tsv(DAVIS_TABLE)]


def ucf_prompts() -> dict[str, str]:
    """Class name -> text prompt (eval/data/ucf101_prompts.tsv: class names as sentences, not PYoCo's list)."""
    return {r["class"]: r["prompt"] for r in _read_tsv(UCF_PROMPTS)}


def ucf_classes() -> list[str]:
    """The 101 class names in classInd order (from the shipped prompt table)."""
    return [r["class"] for r in sorted(_read_tsv(UCF_PROMPTS), key=lambda r: int(r["index"]))]


# ---------------------------------------------------------------------------------------------- readers


def read_msrvtt(root: Path, split: str) -> list[Item]:
    """MSR-VTT: one item per caption of the split's videos, in the annotation file's sentence order
    (the paper's "first 40,960 captions of the test set" is this order); key '<video_id>/<sen_id>'."""
    ann = next((root / n for n in MSRVTT_ANNOTATIONS if (root / n).exists()), None)
    if ann is None:
        raise UsageError(f"{root / MSRVTT_ANNOTATIONS[0]}: missing (MSR-VTT annotations; "
                         f"{MSRVTT_ANNOTATIONS[1]} is also accepted)")
    data = json.loads(ann.read_text(encoding="utf-8"))
    videos = {v["video_id"] for v in data["videos"] if v.get("split", "test") == split}
    folder = _need(root / "videos" / "all", "MSR-VTT videos folder")
    items = []
    for n, s in enumerate(data["sentences"]):
        if s["video_id"] in videos:
            items.append(Item(f"{s['video_id']}/{s.get('sen_id', n)}", str(folder / f"{s['video_id']}.mp4"),
                              s["caption"]))
    return items


def msrvtt_videos(items: list[Item]) -> list[Item]:
    """One item per distinct video (first caption), sorted by video id: the pool the FVD real set is drawn from."""
    seen: dict[str, Item] = {}
    for it in items:
        vid = it.key.split("/")[0]
        seen.setdefault(vid, Item(vid, it.path, it.caption))
    return [seen[k] for k in sorted(seen)]


def read_ucf101(root: Path, split: str) -> list[Item]:
    """UCF-101 split list (e.g. testlist01, trainlist01) in file order; caption = the class prompt, label 0-based."""
    lists = root / "ucfTrainTestlist"
    class_ind = _need(lists / "classInd.txt", "UCF-101 class index")
    classes = {}
    for line in class_ind.read_text().split("\n"):
        if line.strip():
            idx, name = line.split()
            classes[name] = int(idx) - 1
    split_file = _need(lists / f"{split}.txt", "UCF-101 split list")
    _need(root / "UCF-101", "UCF-101 videos folder")
    prompts = ucf_prompts()
    items = []
    for line in split_file.read_text().split("\n"):
        if not line.strip():
            continue
        rel = line.split()[0].replace("\\", "/")
        name = rel.split("/")[0]
        if name not in classes:
            raise UsageError(f"{split_file}: class {name!r} is not in {class_ind}")
        caption = prompts.get(name) or "a video of " + " ".join(re.findall(r"[A-Z][a-z]*|[a-z]+", name)).lower()
        items.append(Item(Path(rel).stem, str(root / "UCF-101" / rel), caption, classes[name]))
    return items


def k600_video_name(youtube_id: str, start: int, end: int) -> str:
    return f"{youtube_id}_{start:06d}_{end:06d}.mp4"


def read_k600(root: Path, split: str) -> list[Item]:
    """Kinetics-600 <split>.csv rows in file order whose video is present (public copies always miss
    some: they are skipped, not an error); caption = the label text when the csv has one."""
    table = _need(root / f"{split}.csv", "Kinetics-600 annotations")
    folder = _need(root / split, "Kinetics-600 videos folder")
    present = {p.name for p in folder.iterdir()}
    items = []
    with table.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            name = k600_video_name(row["youtube_id"], int(float(row["time_start"])), int(float(row["time_end"])))
            if name in present:
                items.append(Item(name[:-4], str(folder / name), row.get("label", "")))
    return items


def read_ssv2(root: Path, split: str) -> list[Item]:
    """Something-Something v2 validation labels in file order; caption = the filled-in label."""
    if split != "validation":
        raise UsageError(f"ssv2 split {split!r}: only 'validation' is read ({SSV2_LABELS})")
    labels = _need(root / SSV2_LABELS, "Something-Something v2 validation labels")
    folder = _need(root / SSV2_VIDEOS, "Something-Something v2 videos folder")
    return [Item(str(r["id"]), str(folder / f"{r['id']}.webm"), r.get("label", ""))
            for r in json.loads(labels.read_text(encoding="utf-8"))]


def read_davis(root: Path, split: str) -> list[Item]:
    """DAVIS 2016 frames for the 40 Table 5 rows (paper order); key '<video>/<row>', start frame from the table."""
    frames = _need(root / DAVIS_FRAMES, "DAVIS 480p frames folder")
    items = []
    for n, (video, start, prompt) in enumerate(davis_table()):
        first = _need(frames / video / f"{start:05d}.jpg", f"DAVIS frame {start} of {video!r}")
        items.append(Item(f"{video}/{n}", str(first.parent), prompt, -1, start))
    return items


READERS = {"msrvtt": read_msrvtt, "ucf101": read_ucf101, "k600": read_k600, "ssv2": read_ssv2, "davis": read_davis}


def read_items(dataset: str, root: str | Path, split: str) -> list[Item]:
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{root}: not a directory (the local copy of the {dataset} dataset)")
    return READERS[dataset](root, split)


# ---------------------------------------------------------------------------------------------- stand-ins


def _frames(n: int, width: int, height: int, seed: int) -> np.ndarray:
    """uint8 [n, H, W, 3]: a coloured gradient that drifts, different per seed (non-constant, so crops matter)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(40, 200, size=3)
    y, x = np.mgrid[0:height, 0:width]
    out = np.empty((n, height, width, 3), dtype=np.uint8)
    for t in range(n):
        for c in range(3):
            out[t, :, :, c] = np.clip(base[c] + 50 * np.sin((x + 2 * t * (c + 1)) / 7.0 + y / 9.0 + c), 0, 255)
    return out


def write_video(path: Path, frames: np.ndarray, fps: int) -> None:
    """uint8 [T, H, W, 3] -> a video whose codec suits the extension (.webm VP9, .avi MPEG-4, else H.264)."""
    import av

    codec = {".webm": "libvpx-vp9", ".avi": "mpeg4"}.get(path.suffix, "libx264")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "mpeg4":
            stream.options = {"qscale": "2"}
        for i, img in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            vf.pts = i
            for pkt in stream.encode(vf):
                out.mux(pkt)
        for pkt in stream.encode(None):
            out.mux(pkt)


def write_standin(dataset: str, root: Path, n: int, seed: int = 0, width: int = 64, height: int = 48) -> Path:
    """Write n tiny items of `dataset` in its real layout under root; returns the root its reader takes."""
    root.mkdir(parents=True, exist_ok=True)
    if dataset == "msrvtt":
        videos = [{"video_id": f"video{7010 + i}", "split": "test"} for i in range(n)]
        videos.append({"video_id": "video0", "split": "train"})  # a train video the test listing must skip
        sentences = []
        for i, v in enumerate(videos):
            write_video(root / "videos" / "all" / f"{v['video_id']}.mp4", _frames(90, width, height, seed + i), 30)
            for j in range(2):
                sentences.append({"caption": f"clip {i} caption {j}", "video_id": v["video_id"],
                                  "sen_id": len(sentences)})
        (root / "MSRVTT_data.json").write_text(json.dumps({"videos": videos, "sentences": sentences}))
    elif dataset == "ucf101":
        classes = ucf_classes()
        lists = root / "ucfTrainTestlist"
        lists.mkdir(parents=True, exist_ok=True)
        (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
        test, train = [], []
        for i in range(2 * n):
            name = classes[(i * 7) % len(classes)]
            rel = f"{name}/v_{name}_g{8 + i:02d}_c01.avi" if i < n else f"{name}/v_{name}_g{1 + i - n:02d}_c02.avi"
            write_video(root / "UCF-101" / rel, _frames(75, width, height, seed + i), 25)
            (test if i < n else train).append(rel if i < n else f"{rel} {classes.index(name) + 1}")
        (lists / "testlist01.txt").write_text("".join(f"{r}\r\n" for r in test))  # the real lists use CRLF
        (lists / "trainlist01.txt").write_text("".join(f"{r}\r\n" for r in train))
    elif dataset == "k600":
        rows = ["label,youtube_id,time_start,time_end,split"]
        for i in range(n + 1):
            yid, start = f"yt{seed:03d}{i:05d}x", 10 * i
            rows.append(f"class {i % 3},{yid},{start},{start + 10},test")
            if i < n:  # the last row's video is missing, as in every public copy
                write_video(root / "test" / k600_video_name(yid, start, start + 10),
                            _frames(75, width, height, seed + i), 25)
        (root / "test").mkdir(parents=True, exist_ok=True)
        (root / "test.csv").write_text("\n".join(rows) + "\n")
    elif dataset == "ssv2":
        labels = []
        for i in range(n):
            vid = str(1000 + i)
            write_video(root / SSV2_VIDEOS / f"{vid}.webm", _frames(36, width, height, seed + i), 12)
            labels.append({"id": vid, "label": f"moving something {i} to the left", "template": "Moving [something]",
                           "placeholders": [f"something {i}"]})
        (root / SSV2_LABELS).write_text(json.dumps(labels))
    elif dataset == "davis":
        from PIL import Image

        starts: dict[str, int] = {}
        for video, start, _ in davis_table():
            starts[video] = max(starts.get(video, 0), start)
        for i, (video, start) in enumerate(starts.items()):
            folder = root / DAVIS_FRAMES / video
            folder.mkdir(parents=True, exist_ok=True)
            for t, img in enumerate(_frames(start + 18, width, height, seed + i)):
                Image.fromarray(img).save(folder / f"{t:05d}.jpg", quality=95)
    else:
        raise UsageError(f"dataset {dataset!r}: allowed {', '.join(READERS)}")
    return root
