"""Test support: a tiny random CLIPModel directory in the transformers layout, built offline.

Used by tests/eval/test_feature_models.py (CLIPSIM against brute force) and tests/eval/test_eval_job.py
(the eval job's CLIP path). The tokenizer is character-level BPE with no merges, so no vocabulary download
is needed; the weights are fixed by torch.manual_seed(0), so every caller gets the same model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer


def tiny_clip_dir(root: Path, with_processor: bool = False) -> tuple[Path, CLIPModel, CLIPTokenizer]:
    """Write root/clip and return (directory, model, tokenizer); with_processor adds a 32-pixel image processor."""
    torch.manual_seed(0)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for letter in "abcdefghijklmnopqrstuvwxyz":
            vocab[letter + suffix] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    directory = Path(root) / "clip"
    model = CLIPModel(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    if with_processor:
        CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
            directory)
    return directory, model, tokenizer
