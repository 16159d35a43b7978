"""CLIPSIM: mean over frames, then over videos, of the cosine between CLIP image and caption embeddings.

Definition (GODIVA / NUWA, used by Phenaki, Make-A-Video and VideoPoet; /work/shared/reference/eval.md §2): for
video i with frames f_1..f_T and caption c_i, s_i = scale * mean_t cos(E_img(f_t), E_txt(c_i)); the set's CLIPSIM
is mean_i s_i. `scale=1` (default) is the paper's raw cosine (VideoPoet MSR-VTT 0.3049 / 0.3123); `scale=100` is
torchmetrics' CLIPScore convention (which also clamps the final mean at 0; we never clamp). Scores from different
CLIP backbones are not comparable: VideoPoet uses ViT-B/16.

Weights: `load_clip(path)` takes a local transformers CLIPModel directory (config.json plus model.safetensors or
pytorch_model.bin, possibly sharded, and the tokenizer files vocab.json + merges.txt or tokenizer.json), e.g. a
copy of openai/clip-vit-base-patch16; it is read with local_files_only=True and never downloads. Its config carries
hidden_act "quick_gelu" for OpenAI weights. Or an OpenAI / open_clip state-dict file (ViT-B-16 etc.), converted
to the transformers layout by `videopoet.eval.clip_convert` (QuickGELU by default, `quick_gelu=False` for
open_clip models trained with GELU). `.weights_sha256` hashes the weight file(s) as given. Image
preprocessing is the directory's preprocessor_config.json when present, else OpenAI's: resize the short side to the
model's image size with PIL bicubic, centre crop, OpenAI mean/std (transformers' CLIPImageProcessorPil, the PIL
path OpenAI's own `clip.load` preprocessing uses). Captions are truncated at the text model's context (77).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPModel

from videopoet.eval.clip_convert import clip_from_openai_state
from videopoet.eval.weights_errors import MissingWeights, require_path, sha256_files

WEIGHT_PATTERNS = ("model.safetensors", "model-*-of-*.safetensors", "pytorch_model.bin", "pytorch_model-*-of-*.bin")
TOKENIZER_FILES = (("vocab.json", "merges.txt"), ("tokenizer.json",))
OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
HINT = ("put a transformers CLIPModel directory there (config.json, model.safetensors, vocab.json, merges.txt), "
        "e.g. a local copy of openai/clip-vit-base-patch16")


def clipsim_from_embeddings(frame_embeds, text_embeds, scale: float = 1.0) -> np.ndarray:
    """Per-video CLIPSIM from embeddings: frames [B, T, D] (or a list of [T_i, D]) and captions [B, D] -> [B].

    Each embedding is L2-normalised, the cosine is taken per frame, averaged over that video's frames, times scale.
    """
    text = np.asarray(text_embeds, np.float64)
    if text.ndim != 2:
        raise ValueError(f"CLIPSIM: caption embeddings must be [B, D], got shape {text.shape}")
    videos = list(frame_embeds) if not isinstance(frame_embeds, np.ndarray) else frame_embeds
    if len(videos) != text.shape[0]:
        raise ValueError(f"CLIPSIM: {len(videos)} videos but {text.shape[0]} captions")
    text = text / np.linalg.norm(text, axis=1, keepdims=True)
    out = np.empty(len(videos), np.float64)
    for i, frames in enumerate(videos):
        f = np.asarray(frames, np.float64)
        if f.ndim != 2 or f.shape[1] != text.shape[1] or f.shape[0] == 0:
            raise ValueError(f"CLIPSIM: video {i} frame embeddings must be [T>0, {text.shape[1]}], got {f.shape}")
        f = f / np.linalg.norm(f, axis=1, keepdims=True)
        out[i] = scale * float((f @ text[i]).mean())
    return out


def _weight_files(directory: Path) -> list[Path]:
    files = sorted({p for pattern in WEIGHT_PATTERNS for p in directory.glob(pattern)})
    safetensors = [p for p in files if p.suffix == ".safetensors"]
    return safetensors or files  # from_pretrained prefers safetensors when both are present


@dataclass
class ClipScorer:
    """A loaded CLIP model with its tokenizer and image preprocessing; `clipsim` scores videos against captions."""

    model: CLIPModel
    tokenizer: object
    image_processor: CLIPImageProcessorPil
    weights_sha256: str
    name: str
    scale: float = 1.0
    batch_size: int = 64  # frames per image-encoder call

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def image_embeddings(self, frames) -> np.ndarray:
        """uint8 frames [F, H, W, 3] (RGB) -> projected image embeddings [F, D] float64 (not normalised)."""
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"CLIPSIM: expected uint8 frames [F, H, W, 3], got {frames.dtype} {frames.shape}")
        out = []
        for i in range(0, len(frames), self.batch_size):
            pixels = self.image_processor(images=list(frames[i:i + self.batch_size]), return_tensors="pt")
            pooled = self.model.vision_model(pixel_values=pixels["pixel_values"].to(self.device)).pooler_output
            out.append(self.model.visual_projection(pooled).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.model.config.projection_dim))

    @torch.no_grad()
    def text_embeddings(self, captions: list[str]) -> np.ndarray:
        """Captions -> projected text embeddings [B, D] float64 (not normalised), truncated at the model context."""
        context = self.model.config.text_config.max_position_embeddings
        tokens = self.tokenizer(list(captions), padding=True, truncation=True, max_length=context,
                                return_tensors="pt").to(self.device)
        pooled = self.model.text_model(input_ids=tokens["input_ids"],
                                       attention_mask=tokens["attention_mask"]).pooler_output
        return self.model.text_projection(pooled).double().cpu().numpy()

    def clipsim(self, videos, captions: list[str]) -> np.ndarray:
        """Per-video CLIPSIM (times self.scale) of uint8 videos [N, T, H, W, 3] (or a list of [T_i, H, W, 3])."""
        videos = list(videos)
        if len(videos) != len(captions):
            raise ValueError(f"CLIPSIM: {len(videos)} videos but {len(captions)} captions")
        if not videos:
            return np.zeros(0)
        counts = [len(v) for v in videos]
        frame_embeds = self.image_embeddings(np.concatenate([np.asarray(v) for v in videos]))
        per_video = np.split(frame_embeds, np.cumsum(counts)[:-1])
        return clipsim_from_embeddings(per_video, self.text_embeddings(captions), self.scale)


def _processor(directory: Path, image_size: int) -> CLIPImageProcessorPil:
    if (directory / "preprocessor_config.json").is_file():
        return CLIPImageProcessorPil.from_pretrained(str(directory), local_files_only=True)
    return CLIPImageProcessorPil(size={"shortest_edge": image_size}, crop_size={"height": image_size,
                                                                                "width": image_size})


def load_clip(path, device: str | torch.device = "cpu", scale: float = 1.0, quick_gelu: bool = True) -> ClipScorer:
    """A ClipScorer from a local CLIP (see the module docstring); never downloads.

    `path` is a transformers CLIPModel directory, or an OpenAI / open_clip state-dict file (or a directory holding
    open_clip_model.safetensors / open_clip_pytorch_model.bin without config.json), converted by
    `videopoet.eval.clip_convert`; `quick_gelu` applies to the latter only (a transformers config says its own).
    """
    if scale not in (1, 100):
        raise ValueError(f"CLIPSIM: scale must be 1 (paper) or 100 (torchmetrics), got {scale}")
    given = Path(path).expanduser() if path not in (None, "") else None
    if given is not None and given.is_dir() and not (given / "config.json").is_file():
        open_clip_files = [given / name for name in OPEN_CLIP_FILES if (given / name).is_file()]
        given = open_clip_files[0] if open_clip_files else given
    if given is not None and given.is_file():
        model, tokenizer = clip_from_openai_state(given, quick_gelu)
        directory, weights, label = given.parent, [given], given.name
        kind = "quick_gelu" if quick_gelu else "gelu"
    else:
        directory = require_path(path, "CLIP weights", HINT, kind="dir")
        require_path(directory / "config.json", "CLIP weights", HINT)
        weights = _weight_files(directory)
        if not weights:
            raise MissingWeights(f"CLIP weights: {directory} has no model.safetensors or pytorch_model.bin; {HINT}")
        if not any(all((directory / f).is_file() for f in group) for group in TOKENIZER_FILES):
            raise MissingWeights(f"CLIP weights: {directory} has no tokenizer (vocab.json + merges.txt, or "
                                 f"tokenizer.json); copy them from the same CLIP release")
        model = CLIPModel.from_pretrained(str(directory), local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        kind, label = model.config.vision_config.hidden_act, directory.name
    model = model.eval().requires_grad_(False).to(device)
    vision = model.config.vision_config
    processor = _processor(directory, vision.image_size)
    name = f"clip-{label} (vit width {vision.hidden_size}, patch {vision.patch_size}, {vision.image_size}px, {kind})"
    return ClipScorer(model, tokenizer, processor, sha256_files(weights), name, float(scale))
