"""UCIQE, the underwater colour image quality evaluation (Yang and Sowmya, IEEE TIP 24(12), 2015).

    UCIQE = c1 * sigma_c + c2 * con_l + c3 * mu_s,   c1 = 0.4680, c2 = 0.2745, c3 = 0.2576

higher is better. Convention used here (stated because published implementations disagree):

* colour space: CIELab from sRGB with the D65 white (:func:`iqpfr.quality.colour.srgb_to_lab`),
  every channel divided by 100, so L is in [0, 1] and chroma C = sqrt(a^2 + b^2) is about [0, 1.3];
* sigma_c: the standard deviation of C over the image (population, ddof 0);
* con_l: the 99th minus the 1st percentile of L (linear interpolation between order statistics);
* mu_s: the mean saturation C / sqrt(C^2 + L^2) (the definition of the authors' group's code,
  JOU-UIP/UCIQE ``UCIQE.py``, which stays in [0, 1]; 0 where C = L = 0).

The constants are those of the paper and of JOU-UIP/UCIQE. That code works on OpenCV's 8-bit Lab
(L * 255 / 100, a and b offset by 128, all divided by 255), so its chroma includes the 128 offset,
and it replaces sigma_c by sqrt(mean|1 - (mean C / C)^2|); the paper's sigma_c on real CIELab is
used here instead, which keeps the measure a smooth function of the pixels. Values are therefore
on this convention's own scale (about 0.3 to 0.7 for natural underwater photos), comparable within
this project, not with numbers from other implementations. Differentiable (percentiles by sorting).
"""

from __future__ import annotations

import torch

from iqpfr.quality.base import QualityScorer
from iqpfr.quality.colour import srgb_to_lab

C1, C2, C3 = 0.4680, 0.2745, 0.2576


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """sqrt with value and gradient 0 at exactly 0 (gray pixels have no chroma)."""
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), 0.0)


def uciqe_components(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """sigma_c, con_l, mu_s and UCIQE, each (B,), of images (B, 3, H, W) RGB in [0, 1]."""
    x = images if images.dtype == torch.float64 else images.to(torch.float32)
    lab = srgb_to_lab(x.clamp(0.0, 1.0)) / 100.0
    lum = lab[:, 0].flatten(1)
    chroma = _safe_sqrt(lab[:, 1].flatten(1) ** 2 + lab[:, 2].flatten(1) ** 2)
    sigma_c = torch.sqrt(((chroma - chroma.mean(dim=1, keepdim=True)) ** 2).mean(dim=1) + 1e-12)
    q = torch.tensor([0.01, 0.99], dtype=lum.dtype, device=lum.device)
    lo, hi = torch.quantile(lum, q, dim=1)
    con_l = hi - lo
    denom = _safe_sqrt(chroma**2 + lum**2)
    mu_s = torch.where(denom > 0, chroma / torch.where(denom > 0, denom, torch.ones_like(denom)), 0.0).mean(dim=1)
    return {"sigma_c": sigma_c, "con_l": con_l, "mu_s": mu_s,
            "uciqe": C1 * sigma_c + C2 * con_l + C3 * mu_s}


class UCIQE(QualityScorer):
    """UCIQE scorer: (B, 3, H, W) RGB in [0, 1] -> (B,), higher is better, differentiable."""

    name = "uciqe"
    higher_better = True
    differentiable = True
    range = (0.2, 0.8)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return uciqe_components(images)["uciqe"]

    def extra_info(self) -> dict:
        return {"constants": [C1, C2, C3], "lab": "CIELab D65 / 100", "con_l": "p99 - p01 of L",
                "saturation": "C / sqrt(C^2 + L^2)", "reference": "Yang & Sowmya 2015; JOU-UIP/UCIQE"}
