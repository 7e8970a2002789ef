"""Code-prediction targets for stages II and III: the stage-I VQGAN's codes of the GT face.

For a GT face x the frozen stage-I encoder and both codebooks give i1 (common) and i0 (HQ+) index
maps, and the latent target ``common[i1] + alpha * HQ+[i0]`` (method.md §6.2). The HQ+ codes are
computed for every face, whatever its score (as in the reference code).

Targets come either from the frozen VQGAN on the fly, or from a file written once by
``iqpfr train precompute-codes`` (codes of every face, original and mirrored), which removes the
extra encoder pass from every training step.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from iqpfr.train.networks import build_autoencoder, load_matching, read_weights


class CodeTargets(nn.Module):
    """``forward(batch) -> (indices (B, h*w), hq_indices (B, h*w) or None, target feature (B, C, h, w))``.

    ``vq`` is a frozen ``iqpfr.models.autoencoder.VQAutoEncoder`` (its quantiser supplies the
    codebooks). With ``table``
    (from :func:`precompute_codes`) codes are read by the batch's ``name`` and ``flipped`` entries
    instead of being computed from ``gt``, except for changed-sharpness targets (``target_level != 0``).
    """

    def __init__(self, vq: nn.Module, table: dict | None = None) -> None:
        super().__init__()
        self.vq = vq.eval()
        for p in self.vq.parameters():
            p.requires_grad_(False)
        self.table = table
        self._rows = {n: i for i, n in enumerate(table["names"])} if table is not None else None

    @torch.no_grad()
    def codes_from_images(self, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, tuple[int, int]]:
        with torch.autocast(device_type=gt.device.type, enabled=False):
            q = self.vq.quantize_latent(self.vq.encode(gt.float()))
        return q.indices, q.hq_indices, tuple(q.quant.shape[-2:])

    @torch.no_grad()
    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        if self._rows is None:
            idx, hq_idx, hw = self.codes_from_images(batch["gt"])
        else:
            try:
                rows = torch.tensor([self._rows[n] for n in batch["name"]])
            except KeyError as exc:
                raise KeyError(f"precomputed codes have no entry for face {exc.args[0]!r}: "
                               "re-run `iqpfr train precompute-codes` for this data") from exc
            side = torch.as_tensor(batch["flipped"]).long().cpu()
            device = batch["gt"].device
            idx = self.table["common"][rows, side].long().to(device)
            hq = self.table.get("hq")
            hq_idx = hq[rows, side].long().to(device) if hq is not None else None
            hw = tuple(self.table["latent_hw"])
            # blurred or sharpened targets (quality-augmented data) are not in the table: encode those faces
            level = batch.get("target_level")
            if level is not None and bool((level != 0).any()):
                changed = (torch.as_tensor(level) != 0).to(device)
                new_idx, new_hq, _ = self.codes_from_images(batch["gt"][changed])
                idx[changed] = new_idx
                if hq_idx is not None:
                    hq_idx[changed] = new_hq
        quant = self.vq.quantize
        if hq_idx is not None:
            feat = quant.lookup_dual(idx, hq_idx, hw)
        else:
            feat = quant.lookup(idx, hw)
        return idx, hq_idx, feat


@torch.no_grad()
def precompute_codes(vq: nn.Module, dataset, *, batch_size: int = 8,
                     device: torch.device | str = "cpu", progress: bool = True) -> dict:
    """Codes of every face of ``dataset`` (a FaceDataset), original and mirrored.

    Returns ``{"names": [...], "common": int16 (N, 2, h*w), "hq": int16 (N, 2, h*w) or absent,
    "latent_hw": [h, w]}``; index 1 along the second axis is the horizontally flipped face.
    """
    from iqpfr.data.dataset import load_rgb, to_tensor

    targets = CodeTargets(vq).to(device)
    names = [p.name for p in dataset.paths]
    common, hq = [], []
    hw = None
    it = range(0, len(dataset.paths), batch_size)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, unit="batch", desc="codes")
    for start in it:
        imgs = [to_tensor(load_rgb(p, dataset.resolution)) for p in dataset.paths[start:start + batch_size]]
        gt = torch.stack(imgs).to(device)
        both = torch.cat([gt, gt.flip(-1)])
        idx, hq_idx, hw = targets.codes_from_images(both)
        b = gt.shape[0]
        common.append(torch.stack([idx[:b], idx[b:]], dim=1).to(torch.int16).cpu())
        if hq_idx is not None:
            hq.append(torch.stack([hq_idx[:b], hq_idx[b:]], dim=1).to(torch.int16).cpu())
    table = {"names": names, "common": torch.cat(common), "latent_hw": list(hw)}
    if hq:
        table["hq"] = torch.cat(hq)
    return table


def save_codes(table: dict, path: str | Path) -> Path:
    from iqpfr.utils.fs import atomic_path

    with atomic_path(path) as tmp:
        torch.save(table, tmp)
    return Path(path)


def load_codes(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: precomputed codes not found (iqpfr train precompute-codes)")
    table = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(table, dict) or "common" not in table or "names" not in table:
        raise ValueError(f"{path}: not a codes file written by `iqpfr train precompute-codes`")
    return table


def build_target_vq(cfg, weights: str | Path) -> nn.Module:
    """A frozen stage-I VQGAN of the configured preset with ``weights`` (stage-I export or checkpoint)."""
    vq = build_autoencoder(cfg)
    untouched = load_matching(vq, read_weights(weights), what=str(weights),
                              require_prefixes=("encoder.", "quantize.", "generator."))
    if untouched:
        raise ValueError(f"{weights}: no VQGAN weights for {len(untouched)} tensors, e.g. {untouched[:3]}")
    return vq


def build_targets(cfg, device: torch.device) -> CodeTargets:
    """Targets from the stage-I VQGAN (``model.vqgan``, else ``model.init``): on the fly, or read
    from ``model.codes`` when given (the VQGAN then only supplies the codebooks)."""
    vq = build_target_vq(cfg, cfg.model.vqgan or cfg.model.init)
    table = load_codes(cfg.model.codes) if cfg.model.codes else None
    return CodeTargets(vq, table).to(device)

