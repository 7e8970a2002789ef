"""BRISQUE (Mittal, Moorthy and Bovik, 2012): features in PyTorch, SVR model supplied by the user.

Features follow the authors' MATLAB release (``brisque_feature.m``): gray image (MATLAB ``rgb2gray``,
8-bit), MSCN with a 7x7 Gaussian (sigma 7/6) and *zero* padding (``filter2(..., 'same')``), a GGD fit
(shape, variance) of the MSCN coefficients and AGGD fits (shape, mean, left variance, right variance)
of the four neighbour products, at full and half scale (MATLAB ``imresize(I, 0.5)``): 36 features.

The score needs a trained epsilon-SVR with an RBF kernel, which iqpfr does not ship (the LIVE model's
licence is unclear). Pass ``model_path`` to one of:

- the release's libsvm text files: ``allmodel`` (the SVR) with ``allrange`` (svm-scale ranges) next to
  it or given as ``range_path``;
- an ``.npz`` with ``sv`` (n, 36), ``sv_coef`` (n,), ``rho`` (), ``gamma`` () and optionally
  ``feature_min`` / ``feature_max`` (36,) for the [-1, 1] feature scaling.

score = sum_i coef_i exp(-gamma ||x - sv_i||^2) - rho, lower is better (about 0-100).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from iqpfr.quality.base import QualityScorer
from iqpfr.quality.features import (
    aggd_features,
    fit_ggd,
    imresize_matlab,
    mscn,
    pair_products,
    rgb_to_gray255,
)


def brisque_features(images: torch.Tensor, quantize: bool = True) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (B, 36) BRISQUE features (differentiable)."""
    x = rgb_to_gray255(images, quantize=quantize)
    feats = []
    for scale in (1, 2):
        m, _ = mscn(x, padding="zeros")
        flat = m.flatten(1)
        alpha, std = fit_ggd(flat)
        feats += [alpha, std**2]
        for prod in pair_products(m):
            feats.extend(aggd_features(prod.flatten(1), beta=False).unbind(-1))
        if scale == 1:
            x = imresize_matlab(x, 0.5)
    return torch.stack(feats, dim=-1)


class BrisqueModelError(FileNotFoundError):
    """No usable BRISQUE SVR model was given."""


def _read_libsvm_model(path: Path) -> dict[str, np.ndarray]:
    header: dict[str, str] = {}
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    try:
        start = lines.index("SV") + 1
    except ValueError:
        raise ValueError(f"{path}: not a libsvm model file (no 'SV' line)") from None
    for line in lines[: start - 1]:
        key, _, value = line.partition(" ")
        header[key] = value.strip()
    if header.get("kernel_type") != "rbf":
        raise ValueError(f"{path}: only RBF-kernel SVR models are supported, got {header.get('kernel_type')!r}")
    coefs, svs = [], []
    for line in lines[start:]:
        parts = line.split()
        if not parts:
            continue
        coefs.append(float(parts[0]))
        vec = np.zeros(36)
        for item in parts[1:]:
            idx, val = item.split(":")
            vec[int(idx) - 1] = float(val)
        svs.append(vec)
    return {"sv": np.array(svs), "sv_coef": np.array(coefs), "rho": np.array(float(header["rho"].split()[0])),
            "gamma": np.array(float(header["gamma"]))}


def _read_svm_scale_range(path: Path) -> tuple[np.ndarray, np.ndarray, float, float]:
    lines = [ln.split() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not lines or lines[0] != ["x"]:
        raise ValueError(f"{path}: not an svm-scale range file (first line must be 'x')")
    lo, hi = float(lines[1][0]), float(lines[1][1])
    fmin, fmax = np.zeros(36), np.ones(36)
    for idx, a, b in lines[2:]:
        fmin[int(idx) - 1], fmax[int(idx) - 1] = float(a), float(b)
    return fmin, fmax, lo, hi


def load_brisque_model(model_path: str | Path | None, range_path: str | Path | None = None) -> dict[str, np.ndarray]:
    """Read an SVR model (``.npz`` or libsvm ``allmodel`` + ``allrange``) into plain arrays."""
    if model_path is None:
        raise BrisqueModelError(
            "BRISQUE needs a trained SVR model, which iqpfr does not ship: pass model_path= (libsvm "
            "'allmodel' with its 'allrange', or an .npz with sv, sv_coef, rho, gamma); "
            "brisque_features() works without one")
    path = Path(model_path)
    if not path.is_file():
        raise BrisqueModelError(f"{path}: BRISQUE model file not found")
    if path.suffix == ".npz":
        with np.load(path) as data:
            model = {k: np.asarray(data[k], dtype=np.float64) for k in data.files}
        missing = {"sv", "sv_coef", "rho", "gamma"} - set(model)
        if missing:
            raise ValueError(f"{path}: BRISQUE .npz lacks {', '.join(sorted(missing))}")
        model.setdefault("scale_lo", np.array(-1.0))
        model.setdefault("scale_hi", np.array(1.0))
        return model
    model = _read_libsvm_model(path)
    rng_path = Path(range_path) if range_path else path.with_name("allrange")
    if not rng_path.is_file():
        raise BrisqueModelError(f"{rng_path}: the feature-range file of the BRISQUE model was not found "
                                "(pass range_path=)")
    fmin, fmax, lo, hi = _read_svm_scale_range(rng_path)
    model.update(feature_min=fmin, feature_max=fmax, scale_lo=np.array(lo), scale_hi=np.array(hi))
    return model


class BRISQUE(QualityScorer):
    """BRISQUE score from a user-supplied SVR model (lower is better, about 0-100)."""

    name = "brisque"
    higher_better = False
    differentiable = True
    range = (0.0, 100.0)

    def __init__(self, model_path: str | Path | None = None, range_path: str | Path | None = None,
                 quantize: bool = True) -> None:
        super().__init__()
        model = load_brisque_model(model_path, range_path)
        self.model_path = Path(model_path)  # type: ignore[arg-type]
        self.quantize = quantize
        for key in ("sv", "sv_coef", "rho", "gamma", "scale_lo", "scale_hi"):
            self.register_buffer(key, torch.from_numpy(np.asarray(model[key], dtype=np.float64)), persistent=False)
        has_range = "feature_min" in model and "feature_max" in model
        self.scaled = has_range
        if has_range:
            self.register_buffer("feature_min", torch.from_numpy(model["feature_min"].astype(np.float64)), persistent=False)
            self.register_buffer("feature_max", torch.from_numpy(model["feature_max"].astype(np.float64)), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        f = brisque_features(images, self.quantize).double()
        if self.scaled:
            span = (self.feature_max - self.feature_min).clamp_min(1e-12)
            f = self.scale_lo + (self.scale_hi - self.scale_lo) * (f - self.feature_min) / span
        d2 = ((f.unsqueeze(1) - self.sv.unsqueeze(0)) ** 2).sum(-1)
        return ((torch.exp(-self.gamma * d2) * self.sv_coef).sum(-1) - self.rho).to(images.dtype)

    def extra_info(self) -> dict:
        return {"svr_model": self.model_path.name}
