"""Arguments of `videopoet sample` (argument spec: standard library only; the job is videopoet.trainer.sample)."""

from __future__ import annotations

import argparse

NAME = "sample"
HELP = "generate a video (or image) from a trained LM and write .mp4"
DESCRIPTION = """\
Generate with a trained LM, any of its tasks (paper §4.1, §5, §7), and write .mp4 (with audio where
generated), .png (images) or .wav (audio-only tasks).

    videopoet sample --task t2v --checkpoint runs/lm/export --video-tokenizer ckpt/magvit2 \\
        --caption "a dog running on the beach" --cfg-scale 4 --top-p 0.9 --out dog.mp4
    videopoet sample --task t2i --caption "a lighthouse" --out lighthouse.png ...
    videopoet sample --task uncond ...                       # unconditional video (--frames 1: image)
    videopoet sample --task i2v --image cat.jpg --caption "a cat turns its head" ...
    videopoet sample --task fp --video clip.mp4 ...          # continue from the video's first 5 frames
    videopoet sample --task inpaint --video clip.mp4 --mask centre ...      # or --mask x0,y0,x1,y1
    videopoet sample --task outpaint --video clip.mp4 ...    # keep the centre, generate the border
    videopoet sample --task style --video clip.mp4 --caption "a watercolour painting" --first-frame ...
    videopoet sample --task a2v --audio speech.wav --audio-tokenizer ckpt/soundstream ...
    videopoet sample --task v2a --video clip.mp4 --audio-tokenizer ckpt/soundstream ...
    videopoet sample --task avcont --video clip_with_sound.mp4 --audio-tokenizer ckpt/soundstream ...
    videopoet sample --task t2v ... --extend 2               # 17 + 2 x 12 frames (paper §7.2)
    videopoet sample --task t2v ... --audio-tokenizer ckpt/soundstream   # + video-to-audio, muxed
    videopoet sample --chain steps.yaml ...                  # §7.1 chains, e.g. i2v then style
    videopoet sample --task t2v ... --super-resolve runs/sr1/model,runs/sr2/model   # §3.3 SR cascade

Inputs are conditioned by the code ingest and tokenize use: COMMIT condition videos (inpaint,
outpaint, frame prediction), DIS flow + depth (style; --depth midas needs --midas-checkpoint), the
first 17 (or 41) frames of --video at 8 fps centre-cropped to --format, 16 kHz audio.
A chain file is a YAML list of steps (or {steps: [...]}), each a mapping of this command's flags
(task, caption, image, video, audio, mask, first_frame, seed, cfg_scale, ...); a step without
`video` reads the previous step's output. Step k writes <out>_step<k>.mp4, the last one --out.

The LM checkpoint is the consolidated export of `videopoet train` (videopoet-lm); a task its train
config did not list is refused. Text goes through the same frozen encoder the token shards used
(--text-encoder DIR; default the embedded MiniLM, which only fits models trained on MiniLM
embeddings: the width is checked).

--super-resolve SR1_DIR[,SR2_DIR] (the model/ directories of `videopoet train-sr`) passes the LM's
17-frame video tokens through the SR stages (MaskGIT, 24 steps, the paper's guidance of each stage:
text 4 / LR 1, then 8 / 2) and decodes the last stage's tokens: --out is the HR video and
<out stem>_base.mp4 the LM-resolution one. Stage 1's LR grid must be the LM's token grid."""

TASKS = ("t2v", "t2i", "uncond", "i2v", "fp", "inpaint", "outpaint", "style", "a2v", "v2a", "avcont")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--task", choices=TASKS,
                   help="t2v text-to-video, t2i text-to-image, uncond unconditional, i2v image-to-video, "
                        "fp frame prediction, inpaint, outpaint, style stylization, a2v audio-to-video, "
                        "v2a video-to-audio, avcont audio-video continuation")
    p.add_argument("--chain", help="YAML file of steps run in order (paper §7.1); replaces --task")
    p.add_argument("--checkpoint", required=True, help="consolidated LM export directory (videopoet-lm)")
    p.add_argument("--video-tokenizer", required=True, help="MAGVIT-v2 checkpoint directory")
    p.add_argument("--audio-tokenizer",
                   help="SoundStream checkpoint directory: needed by a2v, v2a, avcont; other video tasks "
                        "then also generate audio (video-to-audio)")
    p.add_argument("--text-encoder", help="local text encoder directory (default: embedded MiniLM)")
    p.add_argument("--caption", help="text prompt (needed by t2v and style; optional for i2v, fp, inpaint, "
                                     "outpaint, t2i)")
    p.add_argument("--image", help="input image: i2v; fp (then 1-frame prediction); style (its first frame)")
    p.add_argument("--video", help="input video: fp, inpaint, outpaint, style, v2a, avcont (and a2v's audio)")
    p.add_argument("--audio", help="input audio file (any file with an audio stream): a2v, avcont")
    p.add_argument("--mask", help="inpaint/outpaint region: 'centre' (trained: central half box, default) "
                                  "or a pixel box x0,y0,x1,y1 (generated for inpaint, kept for outpaint)")
    p.add_argument("--first-frame", action="store_true",
                   help="style: also condition on the video's first frame (or --image)")
    p.add_argument("--flow", choices=("dis", "none"), default="dis", help="style: optical flow (as ingest)")
    p.add_argument("--depth", choices=("midas", "none"), default="none", help="style: depth (as ingest)")
    p.add_argument("--midas-checkpoint", help="style --depth midas: local MiDaS state dict")
    p.add_argument("--format", choices=("square", "portrait"), default="square", help="128x128 or 128x224 (w x h)")
    p.add_argument("--frames", type=int, choices=(1, 17, 41), default=17,
                   help="output length (8 fps); 1 = an image (t2i, uncond)")
    p.add_argument("--extend", type=int, default=0, help="continue the video this many times (12 frames each)")
    p.add_argument("--out", default="sample.mp4", help="output .mp4 (images: .png; v2a/avcont: .wav also works)")
    p.add_argument("--cfg-scale", type=float, default=None,
                   help="classifier-free guidance scale at video positions (needs --caption)")
    p.add_argument("--audio-cfg-scale", type=float, default=None,
                   help="guidance scale at audio positions (default: --cfg-scale); needs a layout with text")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-samples", type=int, default=1, help="samples; files get _1, _2, ... suffixes")
    p.add_argument("--device", help="cuda / cpu (default: cuda when available)")
    p.add_argument("--super-resolve", metavar="SR1_DIR[,SR2_DIR]",
                   help="SR checkpoints (train-sr model/ dirs): --out at the last stage's resolution, "
                        "<out stem>_base.mp4 at the LM's")
    p.add_argument("--sr-steps", type=int, default=None, help="MaskGIT steps per SR stage (default 24)")
    p.add_argument("--sr-text-scale", metavar="S[,S2]",
                   help="SR text guidance, one value or one per stage (default: 4 stage 1, 8 stage 2)")
    p.add_argument("--sr-lr-scale", metavar="S[,S2]",
                   help="SR low-resolution guidance, one value or one per stage (default: 1 stage 1, 2 stage 2)")
    p.set_defaults(run="videopoet.trainer.sample:run", log_under="out")
