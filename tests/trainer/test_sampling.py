"""Sampling: KV-cache decoding == full recomputation, guidance, constraints, longer videos."""

import dataclasses

import numpy as np
import pytest
import torch

from videopoet.pipeline import vocab as V
from videopoet.trainer.model import MODEL_RECIPES, VideoPoetLM
from videopoet.trainer.sampling import SamplingConfig, extend_video, filter_logits, generate, request_row

torch.set_num_threads(2)
TEXT_DIM = 16


@pytest.fixture(scope="module")
def lm():
    """A narrower tiny model (d=16: each decode step reads the 262,144-row visual head, so its width
    sets these tests' time), random weights sharpened so logits differ far beyond float noise."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(MODEL_RECIPES.get("tiny"), text_dim=TEXT_DIM, d_model=16, n_heads=2, ffn_dim=48)
    m = VideoPoetLM(cfg).eval()
    with torch.no_grad():
        m.head.weight.mul_(40.0)
        m.text_proj.weight.mul_(20.0)
        m.null_text.normal_(0, 1.0)
    return m


def text(seed=0, n=10):
    g = np.random.default_rng(seed)
    return g.standard_normal((64, TEXT_DIM)).astype(np.float16), np.arange(64) < n


def full_logits(m, gen, text_emb=None, text_mask=None):
    """Logits of every output position from one forward pass over the finished sequence."""
    lay = gen.layout
    toks = gen.tokens
    te = None if text_emb is None else torch.as_tensor(text_emb.astype(np.float32))[None]
    tm = None if text_mask is None else torch.as_tensor(text_mask)[None]
    with torch.no_grad():
        h = m(toks, lay.prefix_len, te, tm, lay.text_start)
    return h, lay.output_plan()


def test_kv_cache_decoding_equals_full_recomputation_audio(lm):
    """v2a (video in, 424 audio ids out): cached step logits == logits of a full forward pass."""
    g = np.random.default_rng(1)
    row = request_row("v2a", video_tokens=g.integers(0, V.NUM_VISUAL, 1280))
    gen = generate(lm, "v2a", row, SamplingConfig(temperature=0), record_logits=True)
    h, plan = full_logits(lm, gen)
    P = gen.layout.prefix_len
    sampled = [(i, lo, hi) for i, (forced, lo, hi) in enumerate(plan) if forced < 0]
    assert len(sampled) == len(gen.step_logits) == 424
    for (i, lo, hi), step in zip(sampled, gen.step_logits):
        ref = lm.logits(h[:, P - 1 + i], lo, hi)
        torch.testing.assert_close(step, ref, atol=2e-3, rtol=1e-4)
        assert int(gen.tokens[0, P + i]) == lo + int(ref.argmax())
    # every level's ids in its own range; the audio decodes back to raw codes [1, 4, 106]
    assert gen.audio_codes.shape == (1, 4, 106) and gen.audio_codes.max() < 1024
    assert gen.tokens[0, -1] == V.token_id("<eos>") and gen.tokens[0, -2] == V.token_id("<eoa_o>")


def test_kv_cache_decoding_equals_full_recomputation_image_with_guidance(lm):
    """t2i with guidance: each greedy pick == argmax of the guided logits of two full forward passes."""
    emb, mask = text(2)
    row = request_row("t2i", text_emb=emb, text_mask=mask)
    n = 48  # 48 of the 256 positions: each step reads the 262,144-row visual head, slow on 2 cores
    gen = generate(lm, "t2i", row, SamplingConfig(temperature=0, cfg_scale=3.0), max_new_tokens=n)
    P = gen.layout.prefix_len
    cond, plan = full_logits(lm, gen, emb, mask)
    uncond, _ = full_logits(lm, gen, None, None)
    lo, hi = V.VISUAL_RANGE
    assert all(p == (-1, lo, hi) for p in plan)
    with torch.no_grad():
        c, u = lm.logits(cond[0, P - 1: P - 1 + n], lo, hi), lm.logits(uncond[0, P - 1: P - 1 + n], lo, hi)
    expected = lo + (c + 2.0 * (c - u)).argmax(-1)
    assert torch.equal(gen.tokens[0, P: P + n], expected)
    assert not torch.equal(expected, lo + c.argmax(-1))  # guidance changed the picks
    assert gen.video_codes is None  # partial output


def test_cfg_scale_one_equals_conditional_sampling(lm):
    emb, mask = text(3)
    rows = [request_row("t2i", text_emb=emb, text_mask=mask), request_row("t2i", text_emb=text(4)[0], text_mask=mask)]
    base = SamplingConfig(temperature=1.0, top_k=100, seed=7)
    run = lambda r, c: generate(lm, "t2i", r, c, max_new_tokens=12).tokens  # noqa: E731
    plain = run(rows, base)
    assert torch.equal(plain, run(rows, dataclasses.replace(base, cfg_scale=1.0)))
    assert not torch.equal(plain, run(rows, dataclasses.replace(base, seed=8)))
    assert not torch.equal(plain, run(rows, dataclasses.replace(base, cfg_scale=5.0)))
    # scale 0 is the unconditional model alone: the same as sampling with every text slot masked
    uncond = run([dict(r, text_mask=np.zeros(64, bool)) for r in rows], base)
    assert torch.equal(uncond, run(rows, dataclasses.replace(base, cfg_scale=0.0)))


def test_full_image_generation_decodes_to_codes(lm):
    emb, mask = text(5)
    gen = generate(lm, "t2i", request_row("t2i", text_emb=emb, text_mask=mask), SamplingConfig(temperature=0))
    assert gen.video_codes.shape == (1, 1, 16, 16) and gen.video_codes.max() < V.NUM_VISUAL
    assert len(gen.tokens[0]) == gen.layout.prefix_len + 256  # no <eov_o>/<eos> after an image


def test_guidance_needs_text(lm):
    with pytest.raises(ValueError, match="needs text"):
        generate(lm, "uncond", request_row("uncond"), SamplingConfig(cfg_scale=2.0))


def test_filters():
    logits = torch.tensor([[3.0, 1.0, 2.0, 0.0, -1.0]])
    assert torch.isfinite(filter_logits(logits, top_k=2)).tolist() == [[True, False, True, False, False]]
    p = logits.softmax(-1)[0]  # 0.638, 0.086, 0.235, ...
    keep = torch.isfinite(filter_logits(logits, top_p=0.7))[0].tolist()
    assert keep == [True, False, True, False, False] and p[0] < 0.7 <= p[0] + p[2]
    assert torch.isfinite(filter_logits(logits, top_p=0.5))[0].tolist() == [True, False, False, False, False]


def test_sampled_ids_respect_the_output_ranges(lm):
    g = np.random.default_rng(5)
    row = request_row("v2a", video_tokens=g.integers(0, V.NUM_VISUAL, 1280))
    gen = generate(lm, "v2a", row, SamplingConfig(temperature=1.5, top_p=0.95, seed=3))
    out = gen.tokens[0, gen.layout.prefix_len:].numpy()
    for pos, (forced, lo, hi) in zip(out, gen.layout.output_plan()):
        assert pos == forced if forced >= 0 else lo <= pos < hi
    # top_k=1 is greedy whatever the temperature
    greedy = generate(lm, "v2a", row, SamplingConfig(temperature=0), max_new_tokens=40)
    top1 = generate(lm, "v2a", row, SamplingConfig(temperature=2.0, top_k=1, seed=9), max_new_tokens=40)
    assert torch.equal(greedy.tokens, top1.tokens)


def test_extend_video_conditions_each_clip_on_the_last_frames(lm):
    from videopoet.tokenizers.commit import condition_video
    from videopoet.tokenizers.magvit2 import VideoTokenizer

    torch.manual_seed(0)
    vt = VideoTokenizer.from_recipe("tiny").eval()
    first = torch.randint(0, V.NUM_VISUAL, (1, 5, 16, 16))
    video, gens = extend_video(lm, vt, first, rounds=1, cfg=SamplingConfig(temperature=0))
    assert video.shape == (1, 3, 17 + 12, 128, 128) and len(gens) == 1
    # the new clip's prompt holds the fp5 COMMIT tokens of the first clip's last 5 frames
    decoded = vt.decode(first)
    last5 = decoded[:, :, -5:]
    cond = vt.encode(condition_video(torch.cat([last5, last5[:, :, -1:].expand(-1, -1, 12, -1, -1)], 2), "fp5"))
    seg = gens[0].layout.segment("condition", output=False)
    assert gens[0].layout.task == "fp5"
    assert torch.equal(gens[0].tokens[0, seg.start: seg.start + seg.length], cond.flatten() + V.VISUAL_OFFSET)
    torch.testing.assert_close(video[:, :, :17], decoded)
    torch.testing.assert_close(video[:, :, 17:], vt.decode(gens[0].video_codes)[:, :, 5:])


def test_batched_rows_decode_like_single_rows(lm):
    g = np.random.default_rng(6)
    rows = [request_row("v2a", video_tokens=g.integers(0, V.NUM_VISUAL, 1280)) for _ in range(2)]
    greedy = SamplingConfig(temperature=0)
    both = generate(lm, "v2a", rows, greedy, max_new_tokens=30).tokens
    for i, row in enumerate(rows):
        assert torch.equal(both[i], generate(lm, "v2a", row, greedy, max_new_tokens=30).tokens[0])
    assert not torch.equal(both[0], both[1])
    with pytest.raises(ValueError, match="same layout shape"):
        generate(lm, "v2a", [rows[0], request_row("v2a", video_format="portrait")], greedy)


def test_every_task_samples_its_modality_ranges(lm):
    """All 12 layouts from request rows: a preview of each output holds forced specials and in-range ids."""
    from videopoet.pipeline.tasks import TASK_NAMES, TASKS, build_layout, output_range

    g = np.random.default_rng(3)
    emb, mask = text(4)
    for task in TASK_NAMES:
        extra = {}
        if TASKS[task].text != "none":
            extra.update(text_emb=emb, text_mask=mask)
        if task == "i2v":
            extra["first_frame_tokens"] = g.integers(0, V.NUM_VISUAL, 256)
        if TASKS[task].condition and task not in ("i2v", "v2a"):
            extra["condition_tokens"] = g.integers(0, V.NUM_VISUAL, 1280)
        if task == "v2a":
            extra["video_tokens"] = g.integers(0, V.NUM_VISUAL, 1280)
        if task in ("a2v", "avcont"):
            extra["audio_tokens"] = g.integers(0, 1024, 4 * 106)
        row = request_row(task, **extra)
        gen = generate(lm, task, row, SamplingConfig(seed=1), max_new_tokens=24)
        lay = build_layout(task, row)
        assert gen.tokens.shape == (1, len(lay)) and gen.video_codes is None  # a preview decodes nothing
        lo, hi = output_range(task)
        for (forced, a, b), tok in zip(lay.output_plan()[:24], gen.tokens[0, lay.prefix_len:lay.prefix_len + 24]):
            assert tok == forced if forced >= 0 else (lo <= a <= tok < b <= hi), task


def test_guidance_scale_per_modality(lm):
    """audio_cfg_scale applies at audio positions only: on a video output it changes nothing, and with
    cfg_scale None the visual positions take the conditional logits (the same tokens as no guidance)."""
    emb, mask = text(5)
    row = request_row("t2v", text_emb=emb, text_mask=mask)

    def preview(**kw):
        return generate(lm, "t2v", row, SamplingConfig(seed=2, **kw), max_new_tokens=40).tokens

    assert torch.equal(preview(cfg_scale=3.0, audio_cfg_scale=1.0), preview(cfg_scale=3.0))
    assert torch.equal(preview(audio_cfg_scale=5.0), preview())
    assert not torch.equal(preview(cfg_scale=3.0), preview())
    cfg = SamplingConfig(cfg_scale=2.0, audio_cfg_scale=0.5)
    assert cfg.scale_for(V.VISUAL_RANGE[0]) == 2.0 and cfg.scale_for(V.AUDIO_RANGE[0]) == 0.5
    assert SamplingConfig(cfg_scale=2.0).scale_for(V.AUDIO_RANGE[0]) == 2.0
