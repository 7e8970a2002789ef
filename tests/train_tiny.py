"""Helpers shared by the training tests: tiny 32-px configs on real FFHQ faces from ../shared."""

from __future__ import annotations

from pathlib import Path

import torch

from conftest import shared_path
from iqpfr.quality.base import QualityScorer
from iqpfr.train.config import TrainConfig, load_train_config

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(stage: int, run_dir: Path, *sets: str) -> TrainConfig:
    """``configs/tiny/stage{stage}.yaml`` on ../shared/data/ffhq_train256 (skips when absent)."""
    faces = shared_path("data", "ffhq_train256")
    return load_train_config(str(ROOT / "configs" / "tiny" / f"stage{stage}.yaml"),
                             [f"run_dir={run_dir}", f"data.folders=[{faces}]", *sets])


def losses(history: list[dict], key: str) -> list[float]:
    return [r[key] for r in history if key in r]


class SharpnessScorer(QualityScorer):
    """A stand-in differentiable scorer (used when the shipped face-iqa weights are absent):
    the mean Laplacian energy of the image, squashed to [0, 1]. Higher = sharper."""

    name = "test-sharpness"
    higher_better = True
    differentiable = True
    range = (0.0, 1.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], device=images.device)
        lap = torch.nn.functional.conv2d(images.mean(1, keepdim=True), k[None, None])
        return torch.tanh(10 * lap.abs().flatten(1).mean(1))


def quality_scorer() -> QualityScorer:
    """The project's learned face scorer when its weights are present, else SharpnessScorer."""
    from iqpfr.quality import learned

    if learned.DEFAULT_WEIGHTS.is_file():
        return learned.FaceIQA()
    return SharpnessScorer()


def random_init_weights(cfg: TrainConfig, folder: Path) -> tuple[str, str]:
    """Random (full model, stage-I autoencoder) weight files for stage II/III runs whose subject is
    the loop, not the weights."""
    from safetensors.torch import save_file

    from iqpfr.train.networks import build_autoencoder, build_model_preset

    torch.manual_seed(0)
    model = build_model_preset(cfg)
    vq = build_autoencoder(cfg)
    model.load_autoencoder_state_dict(vq.state_dict())
    full, ae = folder / "full.safetensors", folder / "vq.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(full))
    save_file({k: v.contiguous() for k, v in vq.state_dict().items()}, str(ae))
    return str(full), str(ae)
