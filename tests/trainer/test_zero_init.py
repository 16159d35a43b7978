"""The 8B path on a tiny shape: a model built under deepspeed.zero.Init with the 8B (bf16) JSON and
wrapped by a bf16 ZeRO-3 engine keeps exact fp32 rotary tables (the positions sampling uses)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent('''
    import dataclasses, json, os
    import torch
    import deepspeed
    from videopoet.assets import DEEPSPEED_DIR
    from videopoet.trainer.model import MODEL_RECIPES, VideoPoetLM

    deepspeed.init_distributed(dist_backend="gloo")
    ds = json.loads((DEEPSPEED_DIR / "zero3_multinode_8b.json").read_text())
    ds = {k: v for k, v in ds.items() if not k.startswith("_")}
    ds["train_micro_batch_size_per_gpu"] = 1
    assert ds["bf16"]["enabled"] and ds["zero_optimization"]["stage"] == 3
    cfg = dataclasses.replace(MODEL_RECIPES.get("tiny"), max_seq_len=12288)

    reference = VideoPoetLM(cfg).rotary(0, cfg.max_seq_len)  # built outside any DeepSpeed context
    with deepspeed.zero.Init(config_dict_or_path=ds):
        model = VideoPoetLM(cfg)
    under_init = model.rotary(0, cfg.max_seq_len)
    optim = torch.optim.AdamW(model.parameters(), lr=1e-4)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optim, config=ds)
    after_engine = engine.module.rotary(0, cfg.max_seq_len)

    hd = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    exact = torch.outer(torch.arange(cfg.max_seq_len, dtype=torch.float64), inv).cos()
    for name, (cos, sin) in (("zero.Init", under_init), ("bf16 engine", after_engine)):
        print(name, cos.dtype, torch.equal(cos, reference[0]) and torch.equal(sin, reference[1]),
              float((cos.double() - exact).abs().max()),
              len(torch.unique(torch.stack((cos[:, 0], sin[:, 0]), 1), dim=0)))
''')


@pytest.mark.slow
def test_rotary_tables_stay_fp32_under_zero_init_and_a_bf16_engine(tmp_path):
    env = dict(os.environ, DS_ACCELERATOR="cpu", MASTER_ADDR="127.0.0.1", MASTER_PORT="29571",
               RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300,
                            env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith(("zero.Init", "bf16"))]
    assert len(rows) == 2, result.stdout
    for row in rows:
        dtype, same, max_err, distinct = row[-4], row[-3], float(row[-2]), int(row[-1])
        assert dtype == "torch.float32", row
        assert same == "True", row  # bit-identical to the tables built outside DeepSpeed (what sampling uses)
        assert max_err < 1e-3, row  # fp32 angle rounding at position 12,287; bf16 tables were off by 2.0
        assert distinct == 12288, row  # every position keeps its own (cos, sin) (bf16 kept 961 angles)
