"""The SR transformer: windows, axis locality, windowed SDPA == dense, LR windows, objective, MaskGIT, recipes."""

import dataclasses
import math

import pytest
import torch

from videopoet.trainer.sr.model import MASK_ID, SR_RECIPES, AxisLayer, SRTransformer
from videopoet.trainer.sr.windows import lr_grid, lr_window, merge, partition, window_ids

torch.set_num_threads(1)

STAGE_WINDOWS = {  # Appendix A.3: (HR token grid, windows: spatial vertical, spatial horizontal, temporal)
    "stage1": ((5, 56, 32), ((1, 56, 4), (1, 8, 32), (5, 8, 8))),
    "stage2": ((5, 112, 64), ((1, 112, 2), (1, 4, 64), (5, 8, 8))),
}
TINY = dataclasses.replace(SR_RECIPES.get("tiny"), text_dim=12, text_slots=4)
VOCAB = 1 << 18


def model_of(cfg=TINY, seed=0, **changes):
    torch.manual_seed(seed)
    m = SRTransformer(dataclasses.replace(cfg, **changes)).eval()
    with torch.no_grad():  # random norm gains, so no symmetry hides a bug
        for name, p in m.named_parameters():
            if p.ndim == 1:
                p.add_(0.3 * torch.randn_like(p))
    return m


def inputs(cfg=TINY, B=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (B, *cfg.hr_grid), generator=g)
    tokens[torch.rand(tokens.shape, generator=g) < 0.3] = MASK_ID
    lr = torch.randint(0, VOCAB, (B, *cfg.lr_grid), generator=g)
    text = torch.randn(B, cfg.text_slots, cfg.text_dim, generator=g)
    text_mask = torch.arange(cfg.text_slots)[None, :] < torch.tensor([cfg.text_slots, 1])[:B, None]
    return tokens, lr, text, text_mask


# --- windows ------------------------------------------------------------------------------------

@pytest.mark.parametrize("stage", sorted(STAGE_WINDOWS))
def test_partition_merge_identity_on_stage_grids(stage):
    grid, windows = STAGE_WINDOWS[stage]
    assert SR_RECIPES.get(stage).hr_grid == grid and SR_RECIPES.get(stage).windows == windows
    x = torch.randn(2, *grid, 3)
    lr_x = torch.randn(2, *lr_grid(grid), 3)
    for window in windows:
        win = partition(x, window)
        assert win.shape == (2 * math.prod(grid) // math.prod(window), math.prod(window), 3)
        assert torch.equal(merge(win, window, grid), x)
        lr_win = partition(lr_x, lr_window(window))
        assert lr_win.shape[0] == win.shape[0]  # HR window i pairs with LR window i
        assert torch.equal(merge(lr_win, lr_window(window), lr_grid(grid)), lr_x)
        # every window holds exactly the positions window_ids gives it
        ids = window_ids(grid, window).reshape(grid)
        pos = torch.arange(math.prod(grid)).reshape(1, *grid, 1)
        assert torch.equal(partition(ids.reshape(1, *grid, 1), window)[..., 0],
                           torch.arange(win.shape[0] // 2)[:, None].expand(-1, math.prod(window)))
        assert torch.equal(partition(pos, window).reshape(-1).sort().values, torch.arange(math.prod(grid)))
    assert lr_grid(grid) == (5, grid[1] // 2, grid[2] // 2)


def test_bad_windows_are_refused():
    with pytest.raises(ValueError, match="does not tile"):
        partition(torch.zeros(1, 5, 56, 32, 1), (1, 8, 5))
    with pytest.raises(ValueError, match="odd spatial"):
        lr_window((1, 8, 3))
    with pytest.raises(ValueError, match="does not tile"):
        SRTransformer(dataclasses.replace(TINY, windows=((1, 3, 8),)))


# --- model: locality, dense reference -----------------------------------------------------------

def _layer(window, seed=0):
    torch.manual_seed(seed)
    layer = AxisLayer(TINY, window).eval()
    with torch.no_grad():
        for p in layer.parameters():
            if p.ndim == 1:
                p.add_(0.3 * torch.randn_like(p))
    return layer


def _same_window(p, q, window):
    return all(a // w == b // w for a, b, w in zip(p, q, window))


@pytest.mark.parametrize("axis", range(3))
def test_axis_layer_sees_exactly_its_window(axis):
    window = TINY.windows[axis]
    layer = _layer(window)
    T, H, W = TINY.hr_grid
    x = torch.randn(1, T, H, W, TINY.d_model)
    lr = torch.randn(1, *TINY.lr_grid, TINY.d_model)
    p = (T - 1, 3, 5)
    with torch.no_grad():
        base = layer(x, lr)[0, p[0], p[1], p[2]]
        for q in [(t, h, w) for t in range(T) for h in range(H) for w in range(W)]:
            x2 = x.clone()
            x2[0, q[0], q[1], q[2]] += 1.0
            out = layer(x2, lr)[0, p[0], p[1], p[2]]
            if _same_window(p, q, window):
                assert not torch.allclose(out, base, atol=1e-5), (p, q)
            else:
                assert torch.equal(out, base), (p, q)


@pytest.mark.parametrize("axis", range(3))
def test_lr_cross_attention_sees_exactly_the_half_size_window(axis):
    window = TINY.windows[axis]
    layer = _layer(window)
    x = torch.randn(1, *TINY.hr_grid, TINY.d_model)
    lr = torch.randn(1, *TINY.lr_grid, TINY.d_model)
    T, h, w = TINY.lr_grid
    for p in [(0, 0, 0), (1, 5, 6), (1, 7, 3)]:
        with torch.no_grad():
            base = layer(x, lr)[0, p[0], p[1], p[2]]
            seen = set()
            for q in [(t, i, j) for t in range(T) for i in range(h) for j in range(w)]:
                lr2 = lr.clone()
                lr2[0, q[0], q[1], q[2]] += 1.0
                if not torch.equal(layer(x, lr2)[0, p[0], p[1], p[2]], base):
                    seen.add(q)
        # the LR positions of the HR window's half-size spatial window: same frames, H/2 and W/2
        lw = lr_window(window)
        cell = [p[0] // window[0], p[1] // window[1], p[2] // window[2]]
        expect = {(t, i, j) for t in range(T) for i in range(h) for j in range(w)
                  if [t // lw[0], i // lw[1], j // lw[2]] == cell}
        assert seen == expect and len(expect) == math.prod(lw)


def test_windowed_sdpa_equals_dense_reference_with_gradients():
    tokens, lr, text, text_mask = inputs()
    keep = torch.tensor([True, False])
    outs, grads = [], []
    for impl in ("sdpa", "dense"):
        m = model_of(attention=impl)
        h = m(tokens, lr, text, text_mask, keep)
        lo, hi = m.logits(h)
        (h.square().sum() + lo.square().sum() + hi.sum()).backward()
        outs.append(h.detach())
        grads.append(torch.cat([p.grad.reshape(-1) for p in m.parameters()]))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-4, rtol=1e-4)


def test_conditions_change_the_output_and_null_conditions_are_per_example():
    m = model_of()
    tokens, lr, text, text_mask = inputs()
    with torch.no_grad():
        full = m(tokens, lr, text, text_mask)
        no_lr = m(tokens, lr, text, text_mask, lr_keep=torch.tensor([False, True]))
        no_text = m(tokens, lr, text, torch.zeros_like(text_mask))
        lr_other = m(tokens, torch.randint(0, VOCAB, lr.shape), text, text_mask, lr_keep=torch.tensor([False, True]))
    assert not torch.allclose(no_lr[0], full[0]) and torch.allclose(no_lr[1], full[1])
    assert not torch.allclose(no_text, full)
    torch.testing.assert_close(no_text, m(tokens, lr, None, None).detach())  # no text == all slots masked
    torch.testing.assert_close(lr_other[0], no_lr[0])  # a dropped LR condition ignores the LR ids


# --- recipes ------------------------------------------------------------------------------------

def test_recipe_parameter_counts_on_meta():
    counts = {}
    for name in ("tiny", "stage1", "stage2"):
        with torch.device("meta"):
            counts[name] = SRTransformer(SR_RECIPES.get(name)).num_params()
    assert 0.95e9 < counts["stage1"] < 1.1e9  # "a 1B model" (A.3)
    assert 0.45e9 < counts["stage2"] < 0.55e9  # "a 500M model"
    assert counts["tiny"] < 1e6
