"""`iqpfr iqa fit-niqe`: a face-specific pristine model that NIQE can load."""

from __future__ import annotations

import numpy as np
import torch

from conftest import shared_path
from iqpfr.cli import main


def test_fit_niqe_cli_roundtrip(tmp_path):
    src = shared_path("data", "gpen_ffhq10")
    out = tmp_path / "faces_niqe.npz"
    rc = main(["iqa", "fit-niqe", str(src / "00000.png"), str(src / "00001.png"), str(src / "00002.png"),
               "--size", "256", "-o", str(out)])
    assert rc == 0
    with np.load(out) as data:
        mu, cov = data["mu_pris_param"], data["cov_pris_param"]
    assert mu.shape == (1, 36) and cov.shape == (36, 36)
    assert np.allclose(cov, cov.T) and np.isfinite(mu).all()

    from iqpfr.quality import create_scorer

    scorer = create_scorer("niqe", params_path=out)
    x = torch.rand(1, 3, 192, 192, dtype=torch.float64)
    assert torch.isfinite(scorer.score(x)).all()
    # never overwrites without --overwrite
    assert main(["iqa", "fit-niqe", str(src / "00000.png"), "-o", str(out)]) == 2
