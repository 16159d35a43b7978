"""The burned-in frame counter of the sample media: drawing it, its size after scaling, reading it back.

A 4x4 grid of black/white blocks at the frame centre holding the source frame index (12 bits) and
a 4-bit check nibble; it is large enough (half the short side) to survive compression, a 128 px
downscale and both centre crops (square, portrait), and `decode_counter` reads it back to the
integer (or -1 when the check fails).
"""

from __future__ import annotations

import numpy as np

COUNTER_GRID = 4  # 4x4 cells: 12 data bits + 4 check bits
COUNTER_SIDE_FRAC = 0.5  # counter side as a fraction of the short side of the source frame
COUNTER_DATA_BITS = 12


def _check_nibble(value: int) -> int:
    # sum of the three data nibbles, xor a constant so that all-black (0) is not a valid code
    return ((value & 0xF) + ((value >> 4) & 0xF) + ((value >> 8) & 0xF) ^ 0x9) & 0xF


def counter_bits(value: int) -> np.ndarray:
    """The 16 cell values (0/1, row-major) that encode `value` (0 <= value < 4096)."""
    if not 0 <= value < (1 << COUNTER_DATA_BITS):
        raise ValueError(f"frame counter value {value} out of range")
    word = value | (_check_nibble(value) << COUNTER_DATA_BITS)
    return np.array([(word >> b) & 1 for b in range(COUNTER_GRID * COUNTER_GRID)], np.uint8)


def counter_cell_px(width: int, height: int) -> int:
    """Cell size in source pixels for a frame of this size (the counter side is 4 cells)."""
    return max(2, int(COUNTER_SIDE_FRAC * min(width, height)) // COUNTER_GRID)


def draw_counter(img: np.ndarray, value: int) -> None:
    h, w = img.shape[:2]
    cell = counter_cell_px(w, h)
    side = cell * COUNTER_GRID
    y0, x0 = (h - side) // 2, (w - side) // 2
    bits = counter_bits(value)
    for k, bit in enumerate(bits):
        r, c = divmod(k, COUNTER_GRID)
        img[y0 + r * cell: y0 + (r + 1) * cell, x0 + c * cell: x0 + (c + 1) * cell] = 255 if bit else 0


def counter_side_in_output(src_w: int, src_h: int, out_w: int, out_h: int) -> float:
    """Side (px) of the counter in an output made by scaling the source to cover out_w x out_h and
    centre-cropping (what videopoet.pipeline.media does)."""
    scale = max(out_w / src_w, out_h / src_h)
    return counter_cell_px(src_w, src_h) * COUNTER_GRID * scale


def decode_counter(img: np.ndarray, side_px: float) -> int:
    """Read the burned-in frame counter from an RGB frame whose centre holds a counter of side
    `side_px`; returns the frame index, or -1 if the check nibble does not match."""
    h, w = img.shape[:2]
    luma = img.astype(np.float32).mean(axis=2) if img.ndim == 3 else img.astype(np.float32)
    cell = side_px / COUNTER_GRID
    y0, x0 = h / 2 - side_px / 2, w / 2 - side_px / 2
    word = 0
    for k in range(COUNTER_GRID * COUNTER_GRID):
        r, c = divmod(k, COUNTER_GRID)
        # inner half of the cell: away from the edges that resizing and chroma subsampling blur
        ya, yb = int(round(y0 + (r + 0.25) * cell)), int(round(y0 + (r + 0.75) * cell))
        xa, xb = int(round(x0 + (c + 0.25) * cell)), int(round(x0 + (c + 0.75) * cell))
        patch = luma[ya:max(yb, ya + 1), xa:max(xb, xa + 1)]
        if patch.mean() > 127.5:
            word |= 1 << k
    value = word & ((1 << COUNTER_DATA_BITS) - 1)
    return value if (word >> COUNTER_DATA_BITS) == _check_nibble(value) else -1
