"""Offline training of the ``face-iqa`` network (``iqpfr iqa train configs/iqa_face.yaml``).

Each step takes ``faces_per_step`` HQ faces and makes ``versions`` copies of each: the clean face
and degraded copies (see :mod:`iqpfr.quality.synth`), half of them on a strength *ladder* of one
draw (possibly a single operation), the rest independent "small"/"large" draws. All copies of a
face share one random crop. The loss is

    L = rank_weight * mean_{pairs t_i < t_j of one face} relu(margin * (t_j - t_i) - (s_i - s_j))
      + reg_weight  * smooth_l1(s, 1 - t)

where ``t`` is the degradation strength and ``s`` the score: a pairwise margin-ranking loss
between copies of the same face, plus a regression that puts scores of different faces on one
scale (clean ~ 1). The run is CPU-sized (96x96 crops of 256 faces) and time-limited (the cosine
schedule follows steps or wall time, whichever runs out first); it writes a resumable checkpoint every
``checkpoint_every`` steps and, at the end, the safetensors weights with the architecture and the
resolved config in the metadata. Copy them to ``iqpfr/weights/face_quality.safetensors`` to ship them.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from iqpfr.quality.learned import FaceQualityNet, resize_for_net, save_face_quality_net
from iqpfr.quality.synth import OPS, degrade_face, degrade_face_fast, draw_params, scale_params, to_size


@dataclass
class FaceIQATrainConfig:
    """Training recipe of the face-quality network (all sizes in pixels)."""

    train_dirs: list[str] = field(default_factory=lambda: ["../shared/data/ffhq_train256"])
    holdout: int = 90  # the last N files (sorted by name) of the FIRST train dir are never trained on
    max_train_images: int = 0  # 0 = all
    input_size: int = 256  # working resolution of the network (inputs are resized to it)
    degrade_size: int = 512  # faces are degraded at this size (the restoration resolution)
    fast_degrade: bool = True  # degrade faces <= input_size at their own size, parameters rescaled
    crop: int = 128  # training crops, taken at input_size
    faces_per_step: int = 12
    reuse_faces: int = 6  # of those, re-cropped from a buffer of recent groups (degrading is costly)
    buffer_size: int = 64
    versions: int = 4  # copies per face: clean + (versions - 1) degraded
    presets: list[str] = field(default_factory=lambda: ["small", "large"])
    ladder_prob: float = 0.5  # probability that a face's degraded copies lie on one ladder
    single_op_prob: float = 0.3  # probability that a ladder keeps a single operation
    gray_prob: float = 0.0  # probability that all copies of a face are turned gray (colour is not quality)
    widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    stem_width: int = 16
    head_width: int = 64
    steps: int = 3000
    time_limit_min: float = 18.0  # stop (and save) after this many minutes even if steps remain
    lr: float = 2e-3
    weight_decay: float = 1e-4
    margin: float = 0.5
    rank_weight: float = 1.0
    reg_weight: float = 1.0
    seed: int = 0
    threads: int = 2
    log_every: int = 20
    checkpoint_every: int = 100
    output: str = "runs/face_iqa"


def list_train_files(cfg: FaceIQATrainConfig) -> tuple[list[Path], list[Path]]:
    """(train files, held-out files): the held-out split is the last ``holdout`` of the first dir."""
    from iqpfr.io import list_images

    train: list[Path] = []
    holdout: list[Path] = []
    for i, d in enumerate(cfg.train_dirs):
        files = [p for p, _ in list_images([d])]
        if i == 0 and cfg.holdout > 0:
            files, held = files[: -cfg.holdout], files[-cfg.holdout:]
            holdout.extend(held)
        train.extend(files)
    if cfg.max_train_images > 0:
        train = train[: cfg.max_train_images]
    return train, holdout


def face_versions(img: np.ndarray, cfg: FaceIQATrainConfig, rng: np.random.Generator) -> tuple[list[np.ndarray], list[float]]:
    """The clean face and ``versions - 1`` degraded copies (uint8 at degrade_size) with their strengths."""
    n = cfg.versions - 1
    noise_seed = int(rng.integers(2**31))
    if rng.random() < cfg.ladder_prob:
        base = draw_params(rng, tuple(cfg.presets))
        only = OPS[int(rng.integers(len(OPS)))] if rng.random() < cfg.single_op_prob else None
        fractions = np.sort(rng.uniform(0.15, 1.0, n))
        params = [scale_params(base, f, only) for f in fractions]
    else:
        params = [draw_params(rng, tuple(cfg.presets)) for _ in range(n)]
    if cfg.fast_degrade and img.shape[0] <= cfg.input_size:
        # same pipeline evaluated at the face's own size (see degrade_face_fast): ~10x cheaper
        images = [img] + [degrade_face_fast(img, p, noise_seed, cfg.degrade_size) for p in params]
    else:
        images = [to_size(img, cfg.degrade_size)] + [degrade_face(img, p, noise_seed, cfg.degrade_size) for p in params]
    return images, [0.0] + [p.strength for p in params]


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 (H, W, 3) arrays -> float (N, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)


def ranking_loss(scores: torch.Tensor, strengths: torch.Tensor, margin: float) -> torch.Tensor:
    """Hinge loss over all pairs of one group: a less degraded copy should score higher.

    scores, strengths: (G, K); pairs with strength gap < 0.01 are ignored.
    """
    gap = strengths.unsqueeze(2) - strengths.unsqueeze(1)  # gap[g, i, j] = t_i - t_j
    diff = scores.unsqueeze(2) - scores.unsqueeze(1)  # s_i - s_j
    mask = (gap < -0.01).float()  # i is cleaner than j
    loss = F.relu(margin * (-gap) - diff) * mask
    return loss.sum() / mask.sum().clamp_min(1.0)


def make_batch(images: list[np.ndarray], cfg: FaceIQATrainConfig, rng: np.random.Generator,
               buffer: list | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(faces_per_step, versions, 3, crop, crop) in [-1, 1] and strengths (faces_per_step, versions).

    With a ``buffer`` (list of recent (versions, strengths) groups at input_size), ``reuse_faces``
    groups of the batch are re-cropped from it instead of being degraded anew.
    """
    groups = []
    n_reuse = min(cfg.reuse_faces, len(buffer)) if buffer is not None else 0
    for _ in range(cfg.faces_per_step - n_reuse):
        img = images[int(rng.integers(len(images)))]
        versions, strengths = face_versions(img, cfg, rng)
        x = to_tensor(versions)
        if rng.random() < cfg.gray_prob:
            x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True).expand_as(x)
        groups.append((resize_for_net(x, cfg.input_size), torch.tensor(strengths)))
    if buffer is not None:
        reused = [buffer[int(i)] for i in rng.choice(len(buffer), n_reuse, replace=False)] if n_reuse else []
        buffer.extend(groups)
        del buffer[: max(0, len(buffer) - cfg.buffer_size)]
        groups += reused
    xs, ts = [], []
    for x, t in groups:
        top, left = (int(rng.integers(cfg.input_size - cfg.crop + 1)) for _ in range(2))
        x = x[:, :, top: top + cfg.crop, left: left + cfg.crop]
        xs.append(x.flip(3) if rng.random() < 0.5 else x)
        ts.append(t)
    return torch.stack(xs), torch.stack(ts)


def train(cfg: FaceIQATrainConfig, log=print) -> Path:
    """Run the training described by ``cfg``; returns the path of the written safetensors weights."""
    from iqpfr.config import config_to_dict
    from iqpfr.io import read_rgb

    torch.set_num_threads(max(1, cfg.threads))
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    train_files, holdout = list_train_files(cfg)
    if not train_files:
        raise FileNotFoundError(f"no training images in {cfg.train_dirs}")
    log(f"training on {len(train_files)} faces; held out {len(holdout)} "
        f"({holdout[0].name}..{holdout[-1].name})" if holdout else f"training on {len(train_files)} faces")
    images = [read_rgb(p) for p in train_files]

    net = FaceQualityNet(widths=tuple(cfg.widths), stem_width=cfg.stem_width, head_width=cfg.head_width)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start_step, elapsed_before = 0, 0.0
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        net.load_state_dict(ckpt["net"])
        opt.load_state_dict(ckpt["opt"])
        start_step, elapsed_before = int(ckpt["step"]), float(ckpt["elapsed"])
        rng = np.random.default_rng([cfg.seed, start_step])
        log(f"resumed from {ckpt_path} at step {start_step}")

    def lr_at(step: int) -> float:
        # cosine over whichever budget (steps or wall time) runs out first: robust to a busy CPU
        progress = max(step / max(1, cfg.steps), (time.time() - t0) / (60 * cfg.time_limit_min))
        warm = min(1.0, (step + 1) / 30)
        return cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    t0 = time.time() - elapsed_before
    history = []
    buffer: list = []
    step = start_step
    net.train()
    while step < cfg.steps and (time.time() - t0) < cfg.time_limit_min * 60:
        x, t = make_batch(images, cfg, rng, buffer)
        g, k = t.shape
        s = net(x.flatten(0, 1)).view(g, k)
        l_rank = ranking_loss(s, t, cfg.margin)
        l_reg = F.smooth_l1_loss(s, 1.0 - t, beta=0.1)
        loss = cfg.rank_weight * l_rank + cfg.reg_weight * l_reg
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        step += 1
        history.append((l_rank.item(), l_reg.item()))
        if step % cfg.log_every == 0:
            r, q = np.mean(history[-cfg.log_every:], axis=0)
            log(f"step {step}  rank {r:.4f}  reg {q:.4f}  lr {lr_at(step):.2e}  {time.time() - t0:.0f}s")
        if step % cfg.checkpoint_every == 0:
            _save_checkpoint(ckpt_path, net, opt, step, time.time() - t0)
    elapsed = time.time() - t0
    _save_checkpoint(ckpt_path, net, opt, step, elapsed)
    net.eval()
    meta = {
        "name": "face-iqa", "input_size": str(cfg.input_size), "steps": str(step),
        "train_seconds": f"{elapsed:.0f}", "trained": time.strftime("%Y-%m-%d", time.gmtime()),
        "train_images": str(len(train_files)),
        "holdout": ",".join(p.name for p in holdout[:1] + holdout[-1:]),
        "degradations": "iqpfr.data.degradations presets " + "/".join(cfg.presets),
        "config": json.dumps(config_to_dict(cfg)),
    }
    weights = save_face_quality_net(net, out / "face_quality.safetensors", meta)
    log(f"done: {step} steps in {elapsed / 60:.1f} min -> {weights}")
    return weights


def _save_checkpoint(path: Path, net, opt, step: int, elapsed: float) -> None:
    from iqpfr.utils.fs import atomic_path

    with atomic_path(path) as tmp:
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "step": step, "elapsed": elapsed}, tmp)


def main(argv: list[str] | None = None) -> int:
    """``python -m iqpfr.quality.learned_train CONFIG [key=value ...]`` (same as ``iqpfr iqa train``)."""
    from iqpfr.config import load_config

    argv = list(sys.argv[1:] if argv is None else argv)
    path = argv.pop(0) if argv and "=" not in argv[0] else None
    cfg = load_config(FaceIQATrainConfig, path, argv)
    train(cfg, log=lambda m: print(m, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
