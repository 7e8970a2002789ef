"""Training of the underwater enhancer on a declared split of the LSUI sample; resumable.

Split (by file number N of ``input/N.jpg``): held-out = N divisible by 5 (23 of the 108 pairs),
training = the rest (85). Two phases in one run (``UnderwaterTrainConfig``):

* phase I (``stage1_steps``): the VQ autoencoder on REFERENCE crops alone (codebook prior; L1 +
  VQ loss);
* phase II: the codebook frozen, the output conv re-initialised to zero (identity start: output =
  colour-corrected input), the network trained on raw-input crops against ``adjust_quality(ref, s)``
  with q = Q(s) as its condition (half the samples at s = 0, the default); L1 + (1 - MS-SSIM) +
  commitment + a small discrete quality loss: on samples with s > 0 the UIQM/UCIQE ensemble of the
  output, decoded from codebook entries through the straight-through path, is pushed up
  (method.md section 7).

Augmentation: random scale 0.5-1, 128 px crops, horizontal / vertical flips (same for the pair),
and a random per-channel gain and gamma on the INPUT only (new colour casts, for other datasets).
The data order is a function of (seed, step); a checkpoint every ``save_every`` steps holds the
model, optimiser, step and calibration, so ``--resume`` continues exactly. ``init_weights`` with
``stage1_steps: 0`` fine-tunes phase II from an exported model (configs/underwater/lsui_tone.yaml).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from iqpfr.tasks.underwater.model import UnderwaterEnhanceNet
from iqpfr.tasks.underwater.targets import QualityCalibration, adjust_quality, calibrate


@dataclass
class UnderwaterTrainConfig:
    data_root: str = "../shared/data/lsui_test108"
    run_dir: str = "runs/underwater"
    seed: int = 0
    stage1_steps: int = 250
    stage2_steps: int = 1550
    batch_size: int = 8
    crop: int = 128
    lr: float = 2e-3
    lr_stage2: float = 1e-3
    quality_loss_weight: float = 0.05
    ssim_weight: float = 0.2
    save_every: int = 200
    log_every: int = 25
    threads: int = 1
    model: dict = field(default_factory=lambda: dict(width=16, emb_dim=32, codebook_size=256, tone=True))
    # start from these weights (a model .safetensors); with stage1_steps 0 the run is a phase-II
    # fine-tune: parameters the file lacks (a head added since) keep their zero initialisation
    init_weights: str = ""


def load_config(path: str | None, overrides: list[str] | None = None) -> UnderwaterTrainConfig:
    """Config from a YAML file (keys as the dataclass fields) plus ``key=value`` overrides."""
    import yaml

    data = yaml.safe_load(Path(path).read_text()) if path else {}
    for item in overrides or []:
        key, _, value = item.partition("=")
        data[key] = yaml.safe_load(value)
    known = {f.name for f in fields(UnderwaterTrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown underwater training keys: {', '.join(unknown)}")
    return UnderwaterTrainConfig(**data)


def is_heldout(number: int) -> bool:
    """The declared split: file numbers divisible by 5 are held out."""
    return number % 5 == 0


def pair_numbers(root: str | Path, heldout: bool) -> list[int]:
    """Sorted file numbers of the training (``heldout=False``) or held-out pairs under ``root``."""
    numbers = sorted(int(p.stem) for p in (Path(root) / "input").glob("*.jpg") if p.stem.isdigit())
    return [n for n in numbers if is_heldout(n) == heldout]


def load_pair(root: str | Path, number: int) -> tuple[np.ndarray, np.ndarray]:
    """(input, reference) uint8 RGB arrays (H, W, 3) of pair ``number``."""
    from iqpfr.io import read_rgb

    root = Path(root)
    return read_rgb(root / "input" / f"{number}.jpg"), read_rgb(root / "gt" / f"{number}.jpg")


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (1, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)[None].float() / 255.0


class PairSampler:
    """Augmented training batches as a pure function of (seed, step)."""

    def __init__(self, pairs: list[tuple[torch.Tensor, torch.Tensor]], cfg: UnderwaterTrainConfig,
                 calibration: QualityCalibration | None) -> None:
        self.pairs, self.cfg, self.calibration = pairs, cfg, calibration

    def batch(self, step: int, levels: bool = True) -> dict[str, torch.Tensor]:
        """One batch; ``levels=False``: every target is the reference itself (s = 0)."""
        rng = np.random.default_rng([self.cfg.seed, step])
        crop = self.cfg.crop
        inputs, refs, thumbs, levels = [], [], [], []
        for _ in range(self.cfg.batch_size):
            inp, ref = self.pairs[int(rng.integers(len(self.pairs)))]
            h, w = inp.shape[-2:]
            scale = float(rng.uniform(max(0.5, crop / min(h, w)), 1.0))
            size = (max(crop, round(h * scale)), max(crop, round(w * scale)))
            inp = F.interpolate(inp, size=size, mode="area")
            ref = F.interpolate(ref, size=size, mode="area")
            if rng.random() < 0.5:
                inp, ref = inp.flip(-1), ref.flip(-1)
            if rng.random() < 0.5:
                inp, ref = inp.flip(-2), ref.flip(-2)
            gain = torch.tensor(rng.uniform(0.8, 1.2, 3), dtype=torch.float32).view(1, 3, 1, 1)
            gamma = float(rng.uniform(0.8, 1.25))
            inp = (inp.clamp_min(1e-6) ** gamma * gain).clamp(0.0, 1.0)
            s = 0.0 if rng.random() < 0.5 or not levels else float(rng.uniform(-1.0, 1.0))
            target = adjust_quality(ref, s)  # on the whole image: its means are per-image
            y, x = int(rng.integers(size[0] - crop + 1)), int(rng.integers(size[1] - crop + 1))
            inputs.append(inp[:, :, y:y + crop, x:x + crop])
            refs.append(target[:, :, y:y + crop, x:x + crop])
            thumbs.append(F.interpolate(inp, size=(64, 64), mode="area"))
            levels.append(s)
        s = torch.tensor(levels, dtype=torch.float32)
        q = torch.tensor(self.calibration.q_of_s(s.numpy()), dtype=torch.float32) if self.calibration else s
        return {"input": torch.cat(inputs), "target": torch.cat(refs), "thumb": torch.cat(thumbs), "s": s, "q": q}


class EnsembleLoss(torch.nn.Module):
    """1 - mean of UIQM and UCIQE min-max normalised with the calibration's ranges, per sample (B,)."""

    def __init__(self, ranges: dict[str, list[float]]) -> None:
        super().__init__()
        from iqpfr.quality.uciqe import UCIQE
        from iqpfr.quality.uiqm import UIQM

        self.scorers = torch.nn.ModuleDict({"uiqm": UIQM(), "uciqe": UCIQE()})
        self.ranges = ranges

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        parts = []
        for name, scorer in self.scorers.items():
            lo, hi = self.ranges[name]
            parts.append((scorer(images) - lo) / (hi - lo + 1e-6))
        return 1.0 - torch.stack(parts).mean(0)


def _checkpoint_path(run_dir: Path) -> Path:
    return run_dir / "checkpoint.pt"


def train(cfg: UnderwaterTrainConfig, *, resume: bool = True, log=print) -> Path:
    """Run (or continue) training; returns the path of the exported ``model.safetensors``."""
    from iqpfr.train.checkpoint import load_checkpoint, save_checkpoint
    from iqpfr.train.perceptual import ms_ssim
    from iqpfr.weights.checkpoint import save_model

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    numbers = pair_numbers(cfg.data_root, heldout=False)
    pairs = [tuple(to_tensor(a) for a in load_pair(cfg.data_root, n)) for n in numbers]
    log(f"training pairs: {len(pairs)} (held out: file numbers divisible by 5)")

    model = UnderwaterEnhanceNet(**cfg.model)
    step, calibration, opt_state = 0, None, None
    ckpt = _checkpoint_path(run_dir)
    if resume and ckpt.is_file():
        state = load_checkpoint(ckpt)
        model.load_state_dict(state["model"])
        step, opt_state = int(state["step"]), state["optimizer"]
        calibration = QualityCalibration.from_dict(json.loads(state["calibration"])) if state["calibration"] else None
        log(f"resumed at step {step}")
    elif cfg.init_weights:
        _init_from(model, cfg.init_weights, log)
    if calibration is None:
        t0 = time.time()
        refs = [F.interpolate(ref, scale_factor=0.5, mode="area") for _, ref in pairs]
        calibration = calibrate(refs)
        log(f"quality calibration ({time.time() - t0:.0f} s): q(s) = {np.round(calibration.q, 3).tolist()}")
    model.default_quality = model.config["default_quality"] = calibration.default_q
    sampler = PairSampler(pairs, cfg, calibration)
    quality_loss = EnsembleLoss(calibration.ranges)
    total = cfg.stage1_steps + cfg.stage2_steps

    def make_optimizer(phase: int) -> torch.optim.Optimizer:
        if phase == 1:
            return torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
        model.quantize.embedding.weight.requires_grad_(False)
        params = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=cfg.lr_stage2, betas=(0.9, 0.99))

    phase = 1 if step < cfg.stage1_steps else 2
    opt = make_optimizer(phase)
    if opt_state is not None:
        opt.load_state_dict(opt_state)

    def save() -> None:
        save_checkpoint(ckpt, {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                               "calibration": json.dumps(calibration.to_dict()), "config": json.dumps(asdict(cfg))})

    t_start, logs = time.time(), []
    while step < total:
        if phase == 1 and step >= cfg.stage1_steps:
            phase = 2
            torch.nn.init.zeros_(model.dec_out.weight)  # identity start: output = colour-corrected input
            torch.nn.init.zeros_(model.dec_out.bias)
            opt = make_optimizer(2)
            log("phase II: codebook frozen, conditioned enhancement")
        batch = sampler.batch(step, levels=phase == 2)
        frac = step / max(1, total)
        if phase == 1:
            lr = cfg.lr * (0.1 + 0.9 * (1 - step / max(1, cfg.stage1_steps)))
            z = model.encode(batch["target"], None)[0]
            quant = model.quantize(z)
            out = model.decode(quant.quant, None, None, None)
            rec = (out - batch["target"]).abs().mean()
            loss = rec + quant.loss.mean()
            values = {"l1": rec.item(), "vq": quant.loss.mean().item(), "perplexity": quant.perplexity.item()}
            if step % 25 == 0:
                _restart_dead_codes(model, z, quant.indices, seed=step)
        else:
            lr = cfg.lr_stage2 * 0.5 * (1 + np.cos(np.pi * (step - cfg.stage1_steps) / max(1, cfg.stage2_steps)))
            code = model.global_code(batch["thumb"], batch["q"])
            raw, quant = model.forward_local(batch["input"], code)
            out = raw.clamp(0.0, 1.0)
            rec = (raw - batch["target"]).abs().mean()
            ssim_term = (1.0 - ms_ssim(out, batch["target"])).mean()
            loss = rec + cfg.ssim_weight * ssim_term + 0.25 * quant.loss.mean()
            up = batch["s"] > 0
            values = {"l1": rec.item(), "ssim": ssim_term.item(), "commit": quant.loss.mean().item()}
            if cfg.quality_loss_weight > 0 and bool(up.any()):
                ql = (quality_loss(out[up]) * batch["s"][up]).mean()
                loss = loss + cfg.quality_loss_weight * ql
                values["quality"] = ql.item()
        for g in opt.param_groups:
            g["lr"] = float(lr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        step += 1
        logs.append(values)
        if step % cfg.log_every == 0:
            mean = {k: float(np.mean([v[k] for v in logs if k in v])) for k in logs[-1]}
            rate = (time.time() - t_start) / len(logs)
            log(f"step {step}/{total} phase {phase} " + " ".join(f"{k} {v:.4f}" for k, v in mean.items())
                + f" ({rate:.2f} s/step, {frac:.0%})")
            logs = []
            t_start = time.time()
        if step % cfg.save_every == 0 or step == total:
            save()
    model.eval()
    out_path = save_model(model, run_dir / "model.safetensors",
                          extra_config={"task": "underwater", "calibration": calibration.to_dict(),
                                        "train": asdict(cfg),
                                        "split": "LSUI sample lsui_test108: held out = file numbers divisible by 5"})
    log(f"wrote {out_path}")
    return out_path


def _init_from(model: UnderwaterEnhanceNet, path: str, log) -> None:
    """Load the tensors of ``path`` into ``model``; only parameters of heads the file predates
    (the tone head) may be missing, nothing may be left over or differ in shape."""
    from iqpfr.weights.checkpoint import load_state_dict_file

    state = load_state_dict_file(path)
    own = model.state_dict()
    bad = sorted(k for k, v in state.items() if k not in own or own[k].shape != v.shape)
    missing = sorted(k for k in own if k not in state)
    if bad or any(not k.startswith("tone_out.") for k in missing):
        raise ValueError(f"{path}: does not fit the configured model (extra or reshaped: {bad[:4]}, "
                         f"missing: {missing[:4]})")
    model.load_state_dict(state, strict=False)
    log(f"initialised from {path}" + (f" (new: {', '.join(missing)})" if missing else ""))


@torch.no_grad()
def _restart_dead_codes(model: UnderwaterEnhanceNet, z: torch.Tensor, indices: torch.Tensor, seed: int) -> None:
    """Codes unused in this batch take the value of random encoder latents z (B, C, h, w) of it
    (the usual restart that keeps a VQ codebook from collapsing onto a few entries)."""
    latents = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    used = torch.bincount(indices.reshape(-1), minlength=model.quantize.codebook_size) > 0
    dead = (~used).nonzero().flatten()
    if dead.numel() == 0:
        return
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randint(latents.shape[0], (dead.numel(),), generator=gen)
    model.quantize.embedding.weight[dead] = latents[pick] + 0.01 * torch.randn(dead.numel(), latents.shape[1], generator=gen)
