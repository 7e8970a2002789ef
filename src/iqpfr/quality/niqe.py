"""NIQE (Mittal, Soundararajan and Bovik, 2013) in batched, differentiable PyTorch.

Follows the authors' MATLAB release (``computequality.m``): gray image (MATLAB ``rgb2gray``, rounded
to 8 bits), cropped to whole 96x96 blocks (no border removal), MSCN exactly 0 on constant 7x7 windows
(as MATLAB's ``imfilter`` gives it; see ``features.mscn``), 18 NSS features per block at two scales
(the second after MATLAB ``imresize(I, 0.5)``, blocks of 48), MVG of the blocks compared with the
pristine MVG: sqrt((mu_p - mu_d)^T pinv((C_p + C_d) / 2) (mu_p - mu_d)). Lower is better.

Pristine models:
- the standard one (Mittal et al.'s ``modelparameters.mat``, as converted by basicsr 1.4.2, Apache-2.0)
  ships with the package as ``iqpfr/weights/niqe_pris_params.npz`` and is the default;
- ``iqpfr iqa fit-niqe DIR -o model.npz`` fits a face-specific one (:func:`fit_pristine_model`);
- any ``.npz`` with ``mu_pris_param`` (36,) and ``cov_pris_param`` (36, 36) can be passed as ``params_path``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from iqpfr.quality.base import QualityScorer
from iqpfr.quality.features import aggd_features, imresize_matlab, mscn, pair_products, rgb_to_gray255

DEFAULT_PARAMS = Path(__file__).resolve().parents[1] / "weights" / "niqe_pris_params.npz"
BLOCK = 96


def _blocks(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 1, H, W) with H, W multiples of ``size`` -> (B, n_blocks, size, size), row-major blocks."""
    b, _, h, w = x.shape
    x = x.view(b, h // size, size, w // size, size).permute(0, 1, 3, 2, 4)
    return x.reshape(b, -1, size, size)


def block_features(gray: torch.Tensor, block: int = BLOCK) -> torch.Tensor:
    """The 36 NIQE features of every block: (B, 1, H, W) 0..255 -> (B, n_blocks, 36).

    H and W must be multiples of ``block`` (use :func:`crop_to_blocks`).
    """
    feats = []
    x = gray
    for scale in (1, 2):
        m, _ = mscn(x, padding="replicate")
        blocks = _blocks(m, block // scale).flatten(-2)  # (B, n, L)
        alpha, lstd, rstd = _aggd_shape_and_scale(blocks)
        per_scale = [alpha, (lstd + rstd) / 2]
        tiles = _blocks(m, block // scale)
        for prod in pair_products(tiles):  # circular shifts inside each block, as blkproc does
            per_scale.extend(aggd_features(prod.flatten(-2), beta=True).unbind(-1))
        feats.append(torch.stack(per_scale, dim=-1))
        if scale == 1:
            x = imresize_matlab(x, 0.5)
    return torch.cat(feats, dim=-1)


def _aggd_shape_and_scale(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    f = aggd_features(x, beta=True)
    return f[..., 0], f[..., 2], f[..., 3]


def crop_to_blocks(gray: torch.Tensor, block: int = BLOCK) -> torch.Tensor:
    """Keep the top-left whole blocks (MATLAB NIQE crops, it does not pad)."""
    h, w = gray.shape[-2:]
    nh, nw = h // block, w // block
    if nh == 0 or nw == 0:
        raise ValueError(f"NIQE needs images of at least {block}x{block} pixels, got {h}x{w}")
    return gray[..., : nh * block, : nw * block]


def niqe_from_features(feats: torch.Tensor, mu_p: torch.Tensor, cov_p: torch.Tensor) -> torch.Tensor:
    """(B, n, 36) block features -> (B,) NIQE against the pristine (mu_p (36,), cov_p (36, 36))."""
    # float64 for the 36x36 pseudo-inverse (MPS has no float64: float32 there)
    f = feats.to(torch.float32 if feats.device.type == "mps" else torch.float64)
    n = f.shape[1]
    mu_d = f.mean(dim=1)
    centred = f - mu_d.unsqueeze(1)
    cov_d = centred.transpose(1, 2) @ centred / max(n - 1, 1)
    diff = (mu_p.to(f) - mu_d).unsqueeze(-1)
    inv = torch.linalg.pinv((cov_p.to(f) + cov_d) / 2, hermitian=True)
    d2 = (diff.transpose(1, 2) @ inv @ diff).reshape(-1)
    return torch.sqrt(d2.clamp_min(1e-12))


def load_pristine_model(path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mu (36,), cov (36, 36)) from an ``.npz`` with ``mu_pris_param`` and ``cov_pris_param``."""
    path = Path(path) if path else DEFAULT_PARAMS
    if not path.is_file():
        raise FileNotFoundError(f"{path}: NIQE pristine model not found")
    with np.load(path) as data:
        missing = {"mu_pris_param", "cov_pris_param"} - set(data.files)
        if missing:
            raise ValueError(f"{path}: not a NIQE pristine model (missing {', '.join(sorted(missing))})")
        mu = np.asarray(data["mu_pris_param"], dtype=np.float64).reshape(-1)
        cov = np.asarray(data["cov_pris_param"], dtype=np.float64)
    if mu.shape != (36,) or cov.shape != (36, 36):
        raise ValueError(f"{path}: expected mu (36,) and cov (36, 36), got {mu.shape} and {cov.shape}")
    return mu, cov


class NIQE(QualityScorer):
    """NIQE score (lower is better; about 2-4 for sharp natural images, 10+ for heavy degradation).

    Args:
        params_path: pristine-model ``.npz`` (default: the standard model shipped with iqpfr).
        quantize: round the gray image to 8 bits like MATLAB (straight-through for gradients).
    """

    name = "niqe"
    higher_better = False
    differentiable = True
    range = (0.0, 20.0)

    def __init__(self, params_path: str | Path | None = None, quantize: bool = True) -> None:
        super().__init__()
        mu, cov = load_pristine_model(params_path)
        self.params_path = Path(params_path) if params_path else DEFAULT_PARAMS
        self.quantize = quantize
        self.register_buffer("mu_pris", torch.from_numpy(mu), persistent=False)
        self.register_buffer("cov_pris", torch.from_numpy(cov), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        gray = crop_to_blocks(rgb_to_gray255(images, quantize=self.quantize))
        return niqe_from_features(block_features(gray), self.mu_pris, self.cov_pris).to(images.dtype)

    def extra_info(self) -> dict:
        return {"pristine_model": self.params_path.name}


def fit_pristine_model(images: list[torch.Tensor], sharpness_threshold: float = 0.75,
                       block: int = BLOCK) -> tuple[np.ndarray, np.ndarray, int]:
    """Fit a pristine MVG from good images, each (3, H, W) in [0, 1]; returns (mu, cov, n_blocks).

    As in the NIQE paper, only the sharpest blocks of each image are kept: those whose mean local
    deviation (sigma of the MSCN step) is at least ``sharpness_threshold`` x that image's maximum.
    """
    kept = []
    with torch.no_grad():
        for img in images:
            gray = crop_to_blocks(rgb_to_gray255(img.unsqueeze(0).double()), block)
            _, sigma = mscn(gray)
            sharp = _blocks(sigma, block).mean(dim=(-2, -1))[0]  # (n,)
            feats = block_features(gray, block)[0]
            keep = sharp >= sharpness_threshold * sharp.max()
            kept.append(feats[keep])
    allf = torch.cat(kept).double()
    allf = allf[torch.isfinite(allf).all(dim=1)]
    if allf.shape[0] < 2:
        raise ValueError("too few sharp blocks to fit a NIQE model (need at least 2)")
    mu = allf.mean(dim=0)
    cov = torch.cov(allf.T)
    return mu.numpy(), cov.numpy(), int(allf.shape[0])


def save_pristine_model(path: str | Path, mu: np.ndarray, cov: np.ndarray, **info: str) -> Path:
    """Write ``mu_pris_param`` (1, 36), ``cov_pris_param`` (36, 36) and string info atomically as .npz."""
    import io

    from iqpfr.utils.fs import atomic_write_bytes

    buf = io.BytesIO()
    extra = {f"info_{k}": np.array(str(v)) for k, v in info.items()}
    np.savez(buf, mu_pris_param=mu.reshape(1, -1), cov_pris_param=cov, **extra)
    return atomic_write_bytes(path, buf.getvalue())
