"""A run killed after step k and resumed from its last checkpoint reproduces the uninterrupted run
exactly (CPU, fixed seeds): same losses at every later step, same final weights."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from iqpfr.train.checkpoint import list_checkpoints, load_checkpoint
from iqpfr.train.loop import train
from train_tiny import random_init_weights, tiny_config


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# 24 faces / batch 4 = 6 steps per epoch: the run crosses epochs; GAN from step 4, dead-code
# resets every 3 steps and k-means initialisation exercise every piece of resumable state.
SETS = ("total_steps=12", "data.limit=24", "stage1.disc_start=4", "stage1.dead_code_every=3",
        "stage1.kmeans_init=true", "stage1.kmeans_batches=2", "ckpt_every=5", "keep_checkpoints=2")


def test_killed_run_resumes_exactly(tmp_path):
    full = train(tiny_config(1, tmp_path / "a", *SETS), progress=False)

    # a different worker count must not change the data either
    cfg_b = tiny_config(1, tmp_path / "b", *SETS, "data.num_workers=2")
    killed = train(cfg_b, stop_after=8, progress=False)  # "killed" after step 8, last checkpoint: 5
    assert killed["stopped"] and [s for s, _ in list_checkpoints(cfg_b.run_dir)] == [5]
    resumed = train(tiny_config(1, tmp_path / "b", *SETS, "data.num_workers=2"), resume="auto", progress=False)

    expected = {r["step"]: r for r in full["history"]}
    got = {r["step"]: r for r in resumed["history"]}
    assert sorted(got) == list(range(6, 13))
    for step, record in got.items():
        for key, value in record.items():
            if key not in ("images_per_s",):
                assert value == expected[step][key], (step, key, value, expected[step][key])
    a = load_file(str(tmp_path / "a" / "model_ema.safetensors"))
    b = load_file(str(tmp_path / "b" / "model_ema.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # the log of the resumed run reads like the uninterrupted one: every step once, in order
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))


def test_checkpoint_contents_and_fresh_start_guard(tmp_path):
    cfg = tiny_config(1, tmp_path / "c", "total_steps=2", "ckpt_every=1", "data.limit=8")
    train(cfg, progress=False)
    steps = [s for s, _ in list_checkpoints(cfg.run_dir)]
    assert steps == [1, 2]
    state = load_checkpoint(list_checkpoints(cfg.run_dir)[-1][1])  # weights_only=True inside
    assert state["step"] == 2 and state["config"]["stage"] == 1
    assert {"net_g", "net_d"} <= set(state["stage"]["networks"]) and set(state["stage"]["optimizers"]) == {"g", "d"}
    assert {"python", "numpy", "torch"} <= set(state["rng"][0])
    # starting afresh over an existing run would overwrite it: refused
    with pytest.raises(FileExistsError, match="--resume auto"):
        train(tiny_config(1, tmp_path / "c", "total_steps=2", "data.limit=8"), progress=False)
    # a truncated checkpoint is reported by name
    bad = tmp_path / "bad.pt"
    bad.write_bytes(list_checkpoints(cfg.run_dir)[-1][1].read_bytes()[:100])
    with pytest.raises(RuntimeError, match="bad.pt"):
        load_checkpoint(bad)


def test_stage3_resumes_exactly_from_a_checkpoint_in_another_folder(tmp_path):
    # the cross-session flow: a checkpoint brought back from elsewhere, resumed into a new run_dir
    probe = tiny_config(3, tmp_path / "unused", "model.init=x", "model.vqgan=x")
    full, vq = random_init_weights(probe, tmp_path)
    sets = (f"model.init={full}", f"model.vqgan={vq}", "total_steps=8", "data.limit=16",
            "stage3.phase_ends=[3,4,5]", "stage3.small_every=2", "stage3.disc_start=2", "ckpt_every=3")
    uninterrupted = train(tiny_config(3, tmp_path / "a", *sets), progress=False)
    train(tiny_config(3, tmp_path / "b", *sets), stop_after=4, progress=False)
    ckpt = list_checkpoints(tmp_path / "b")[-1][1]
    resumed = train(tiny_config(3, tmp_path / "c", *sets), resume=str(ckpt), progress=False)
    expected = {r["step"]: r for r in uninterrupted["history"]}
    assert [r["step"] for r in resumed["history"]] == list(range(4, 9))
    for r in resumed["history"]:
        assert {k: v for k, v in r.items() if k != "images_per_s"} == \
            {k: v for k, v in expected[r["step"]].items() if k != "images_per_s"}


def test_on_step_callback_can_end_a_run_early_with_a_final_checkpoint(tmp_path):
    def deadline(step, ctx):
        if step == 3:
            ctx.cfg.total_steps = step

    cfg = tiny_config(1, tmp_path / "d", "total_steps=50", "data.limit=8", "ckpt_every=0")
    out = train(cfg, progress=False, on_step=deadline)
    assert out["step"] == 3 and not out["stopped"]
    assert [s for s, _ in list_checkpoints(tmp_path / "d")] == [3]
    assert (tmp_path / "d" / "model_ema.safetensors").is_file()
