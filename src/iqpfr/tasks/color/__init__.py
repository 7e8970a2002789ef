"""Face colour enhancement (issue 22): the network (``iqpfr-128``) gives the faces' colours, a
moment-matching colour transfer from the input faces to them recolours the input photo. ``ColorEnhancer.from_pretrained().enhance(photo)``;
CLI ``iqpfr restore --task color``. Heavy imports stay inside the submodules."""

from __future__ import annotations

__all__ = ["ColorEnhancer", "colourfulness", "ciede2000", "fit_color_transform", "apply_color_transform"]


def __getattr__(name: str):
    if name == "ColorEnhancer":
        from iqpfr.tasks.color.enhancer import ColorEnhancer

        return ColorEnhancer
    if name in ("colourfulness", "ciede2000"):
        from iqpfr.tasks.color import metrics

        return getattr(metrics, name)
    if name in ("fit_color_transform", "apply_color_transform"):
        from iqpfr.tasks.color import transform

        return getattr(transform, name)
    raise AttributeError(f"module 'iqpfr.tasks.color' has no attribute {name!r}")
