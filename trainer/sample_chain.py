"""`videopoet sample --chain steps.yaml`: several sampling steps, each reading the previous output (paper §7.1).

    # i2v then stylize (§7.1: "animate an image, then restyle it")
    - {task: i2v, image: painting.png, caption: "the boat drifts"}
    - {task: style, caption: "a pencil sketch", first_frame: true}

A step is a mapping of `videopoet sample` flags (dashes or underscores); flags the step leaves out
come from the command line (checkpoints, sampling settings, --format, --frames). A step that takes
a video (fp, inpaint, outpaint, style, v2a, avcont, a2v) and names none reads the previous step's
output. Step k writes <out stem>_step<k><suffix>, the last step --out. Models load once.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from videopoet.trainer.sample_inputs import SampleError

# flags a step may set (the rest are the run's: checkpoints, device, chain, out)
STEP_KEYS = ("task", "caption", "image", "video", "audio", "mask", "first_frame", "flow", "depth",
             "midas_checkpoint", "format", "frames", "extend", "cfg_scale", "audio_cfg_scale", "temperature",
             "top_k", "top_p", "seed", "num_samples", "out")
VIDEO_STEPS = ("fp", "inpaint", "outpaint", "style", "v2a", "avcont", "a2v")


def read_chain(path: str) -> list[dict]:
    """The steps of a chain file, keys normalised to argument names; SampleError naming the step."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise SampleError(f"--chain {path}: cannot read ({' '.join(str(err).split())})") from None
    if isinstance(data, dict):
        data = data.get("steps")
    if not isinstance(data, list) or not data or not all(isinstance(s, dict) for s in data):
        raise SampleError(f"--chain {path}: expected a non-empty list of steps (mappings of sample flags)")
    steps = []
    for k, step in enumerate(data, 1):
        norm = {str(key).replace("-", "_"): value for key, value in step.items()}
        bad = sorted(set(norm) - set(STEP_KEYS))
        if bad:
            raise SampleError(f"--chain {path}: step {k}: unknown key(s) {', '.join(bad)}; allowed: "
                              f"{', '.join(STEP_KEYS)}")
        if "task" not in norm:
            raise SampleError(f"--chain {path}: step {k}: no task")
        steps.append(norm)
    return steps


def run_chain(args: argparse.Namespace, models_class, sample_step) -> int:
    """Run the chain file's steps with one `models_class(args, device)`; sample_step(step_args, models) -> paths.

    (trainer.sample passes its Models and sample_step: this module does not import it, no cycle.)
    """
    from videopoet.trainer import sample_cli

    if args.task:
        raise SampleError("--chain gives every step its task: no --task")
    steps = read_chain(args.chain)
    out = Path(args.out)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    models = models_class(args, device)
    previous: Path | None = None
    # per-step fields start from the parser's defaults, not from the command's --caption/--video (those name one input)
    defaults = vars(_defaults(sample_cli))
    for k, step in enumerate(steps, 1):
        values = {**vars(args), **{key: defaults[key] for key in ("caption", "image", "video", "audio", "mask",
                                                                    "first_frame")}}
        values.update(step)
        if step["task"] not in sample_cli.TASKS:
            raise SampleError(f"--chain {args.chain}: step {k}: task {step['task']!r}; tasks: "
                              f"{', '.join(sample_cli.TASKS)}")
        if values["video"] is None and step["task"] in VIDEO_STEPS:
            if previous is None:
                raise SampleError(f"--chain {args.chain}: step {k} ({step['task']}) needs a video and is first")
            values["video"] = str(previous)
        if "out" not in step:
            values["out"] = str(out if k == len(steps) else out.with_name(f"{out.stem}_step{k}{out.suffix}"))
        step_args = argparse.Namespace(**values)
        try:
            outs = sample_step(step_args, models)
        except SampleError as err:
            raise SampleError(f"--chain step {k} ({step['task']}): {err}") from None
        previous = outs[0]
    return 0


def _defaults(spec) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    spec.add_arguments(p)
    return p.parse_args(["--checkpoint", "-", "--video-tokenizer", "-"])
