"""Local 3D windows over a (T, H, W) token grid: partition into the batch dimension, merge back, dense masks.

A window is (t, h, w) tokens; it must divide the grid on every axis. `partition` moves the windows into
the batch dimension, so attention inside every window is one SDPA call with no mask (flash kernels apply
on a GPU); `merge` is its exact inverse. Window order is (batch, t-block, h-block, w-block), row-major,
and `window_ids` numbers the positions of a grid with that same order, which gives the dense masks the
reference attention uses (tests compare the two).

The LR cross-attention windows are the HR windows with half the spatial size (`lr_window`): on the
half-resolution LR grid (T, H/2, W/2) they tile into exactly as many windows, in the same order, so HR
window i attends LR window i, the same region of the frame. Stage 1: HR grid (5, 56, 32), LR grid
(5, 28, 16); HR windows (1, 56, 4), (1, 8, 32), (5, 8, 8) -> LR windows (1, 28, 2), (1, 4, 16), (5, 4, 4).
"""

from __future__ import annotations

import torch
from einops import rearrange

Grid = tuple[int, int, int]  # (T, H, W) tokens
Window = tuple[int, int, int]  # (t, h, w) tokens


def check_window(grid: Grid, window: Window) -> None:
    """Raise ValueError unless `window` tiles `grid` exactly."""
    if len(grid) != 3 or len(window) != 3 or any(g % w or w < 1 for g, w in zip(grid, window)):
        raise ValueError(f"window {tuple(window)} does not tile the token grid {tuple(grid)}")


def lr_grid(grid: Grid) -> Grid:
    """The LR token grid of a 2x spatial stage: same frames, half the height and width."""
    t, h, w = grid
    if h % 2 or w % 2:
        raise ValueError(f"HR grid {tuple(grid)} has an odd spatial size; the LR grid is half of it")
    return (t, h // 2, w // 2)


def lr_window(window: Window) -> Window:
    """The LR cross-attention window isomorphic to an HR window: half the spatial size, same frames."""
    t, h, w = window
    if h % 2 or w % 2:
        raise ValueError(f"window {tuple(window)} has an odd spatial size; its LR window is half of it")
    return (t, h // 2, w // 2)


def partition(x: torch.Tensor, window: Window) -> torch.Tensor:
    """x [B, T, H, W, D] -> windows [B * n_windows, t*h*w, D]."""
    check_window(tuple(x.shape[1:4]), window)
    t, h, w = window
    return rearrange(x, "b (nt t) (nh h) (nw w) d -> (b nt nh nw) (t h w) d", t=t, h=h, w=w)


def merge(windows: torch.Tensor, window: Window, grid: Grid) -> torch.Tensor:
    """windows [B * n_windows, t*h*w, D] -> x [B, T, H, W, D], the inverse of `partition`."""
    check_window(grid, window)
    t, h, w = window
    return rearrange(windows, "(b nt nh nw) (t h w) d -> b (nt t) (nh h) (nw w) d",
                     nt=grid[0] // t, nh=grid[1] // h, nw=grid[2] // w, t=t, h=h, w=w)


def window_ids(grid: Grid, window: Window, device=None) -> torch.Tensor:
    """LongTensor [T*H*W]: the window index of each position (positions row-major over T, H, W)."""
    check_window(grid, window)
    axes = [torch.arange(g, device=device) // w for g, w in zip(grid, window)]
    n = [g // w for g, w in zip(grid, window)]
    it, ih, iw = torch.meshgrid(*axes, indexing="ij")
    return ((it * n[1] + ih) * n[2] + iw).reshape(-1)


def window_mask(q_grid: Grid, q_window: Window, k_grid: Grid | None = None, k_window: Window | None = None,
                device=None) -> torch.Tensor:
    """Dense boolean [Lq, Lk], True where query and key lie in the same window (self: keys = queries)."""
    q_ids = window_ids(q_grid, q_window, device)
    k_ids = q_ids if k_grid is None else window_ids(k_grid, k_window, device)
    return q_ids[:, None] == k_ids[None, :]
