"""Tiled inference for image-to-image networks, with overlapping windows blended without seams.

The image is cut into a grid of ``tile`` x ``tile`` cores. Each core is run inside a window that
extends it by ``overlap`` pixels on every side (shifted inwards at the image border, so every
window has the same size and windows batch). Outputs are blended with weights that ramp linearly
from ~0 at a window edge that lies inside the image to 1 at ``2 * overlap`` pixels from it: the
pixels a network sees with a truncated context (its zero padding) get almost no weight, and
neighbouring windows cross-fade instead of meeting at a cut.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Window:
    """One window: input rows [y0, y1) and columns [x0, x1)."""

    y0: int
    y1: int
    x0: int
    x1: int


def _starts(length: int, tile: int, overlap: int) -> tuple[int, list[tuple[int, int]]]:
    """Window size and (window start, core start) per tile along one axis."""
    window = min(length, tile + 2 * overlap)
    spans = []
    for core in range(0, length, tile):
        spans.append((min(max(core - overlap, 0), length - window), core))
    return window, spans


def plan_windows(height: int, width: int, tile: int, overlap: int) -> list[Window]:
    """Windows covering an image (one window when ``tile`` <= 0 or the image fits)."""
    if overlap < 0:
        raise ValueError(f"tile overlap must be >= 0, got {overlap}")
    if tile <= 0 or (height <= tile and width <= tile):
        return [Window(0, height, 0, width)]
    win_h, rows = _starts(height, tile, overlap)
    win_w, cols = _starts(width, tile, overlap)
    return [Window(y, y + win_h, x, x + win_w) for y, _ in rows for x, _ in cols]


def tile_boundaries(length: int, tile: int) -> list[int]:
    """Input coordinates where one core ends and the next begins (for seam measurements)."""
    if tile <= 0 or length <= tile:
        return []
    return list(range(tile, length, tile))


def ramp(length: int, start_inside: bool, end_inside: bool, fade: float) -> np.ndarray:
    """(length,) blending weights: linear from ~0 to 1 over ``fade`` pixels at each edge inside the image."""
    position = np.arange(length, dtype=np.float64) + 0.5
    weight = np.ones(length)
    if fade > 0:
        if start_inside:
            weight = np.minimum(weight, position / fade)
        if end_inside:
            weight = np.minimum(weight, (length - position) / fade)
    return np.clip(weight, 1e-4, 1.0).astype(np.float32)


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int, int]:
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h or pad_w:
        x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="reflect" if min(height, width) > 1 else "replicate")
    return x, pad_h, pad_w


def run_tiled(
    network: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    *,
    scale: int,
    tile: int = 0,
    overlap: int = 32,
    batch_size: int = 1,
    size_multiple: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """``network`` applied to ``image`` (1, C, H, W) window by window; returns (1, C', s H, s W) float32 on the CPU.

    ``network`` maps (B, C, h, w) to (B, C', s h, s w); ``size_multiple`` pads every window (by
    reflection, cropped off again) to a multiple the network needs. ``progress(done, total)`` is
    called after each batch of windows.
    """
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"run_tiled takes one image (1, C, H, W), got {tuple(image.shape)}")
    height, width = image.shape[-2:]
    windows = plan_windows(height, width, tile, overlap)
    fade = 2 * overlap * scale
    output = weight_sum = None
    done = 0
    for first in range(0, len(windows), max(1, batch_size)):
        group = windows[first:first + max(1, batch_size)]
        batch = torch.cat([image[:, :, w.y0:w.y1, w.x0:w.x1] for w in group], 0)
        batch, pad_h, pad_w = _pad_to_multiple(batch, size_multiple)
        result = network(batch).float()
        result = result[:, :, : result.shape[-2] - pad_h * scale, : result.shape[-1] - pad_w * scale].cpu()
        if len(windows) == 1:
            if progress is not None:
                progress(1, 1)
            return result
        if output is None:
            output = torch.zeros(1, result.shape[1], height * scale, width * scale)
            weight_sum = torch.zeros(1, 1, height * scale, width * scale)
        for window, tile_out in zip(group, result):
            rows = ramp((window.y1 - window.y0) * scale, window.y0 > 0, window.y1 < height, fade)
            cols = ramp((window.x1 - window.x0) * scale, window.x0 > 0, window.x1 < width, fade)
            weight = torch.from_numpy(np.outer(rows, cols))[None, None]
            ys, xs = slice(window.y0 * scale, window.y1 * scale), slice(window.x0 * scale, window.x1 * scale)
            output[:, :, ys, xs] += tile_out[None] * weight
            weight_sum[:, :, ys, xs] += weight
        done += len(group)
        if progress is not None:
            progress(done, len(windows))
    return output / weight_sum


def seam_report(image: np.ndarray, boundaries_x: list[int], boundaries_y: list[int]) -> dict[str, float]:
    """Jumps across tile boundaries against jumps elsewhere in an image (H, W[, C], any range).

    For every pair of neighbouring columns (rows) the mean absolute difference is computed; the
    report gives the largest at a boundary (between output pixels b - 1 and b) and the largest and
    99th percentile everywhere else. No seam: ``boundary_max <= interior_max``.
    """
    data = np.asarray(image, np.float64)
    if data.ndim == 2:
        data = data[:, :, None]
    col_jumps = np.abs(np.diff(data, axis=1)).mean(axis=(0, 2))  # jump between column j and j + 1
    row_jumps = np.abs(np.diff(data, axis=0)).mean(axis=(1, 2))
    at_cols = [b - 1 for b in boundaries_x if 0 < b < data.shape[1]]
    at_rows = [b - 1 for b in boundaries_y if 0 < b < data.shape[0]]
    boundary = np.concatenate([col_jumps[at_cols], row_jumps[at_rows]]) if at_cols or at_rows else np.zeros(0)
    interior = np.concatenate([np.delete(col_jumps, at_cols), np.delete(row_jumps, at_rows)])
    return {
        "boundaries": int(boundary.size),
        "boundary_max": float(boundary.max()) if boundary.size else 0.0,
        "boundary_mean": float(boundary.mean()) if boundary.size else 0.0,
        "interior_max": float(interior.max()) if interior.size else 0.0,
        "interior_p99": float(np.percentile(interior, 99)) if interior.size else 0.0,
        "interior_mean": float(interior.mean()) if interior.size else 0.0,
    }
