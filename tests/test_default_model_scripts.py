"""The default-model scripts (scripts/default_model): planning, shards, zoo patch, rank scores, and the
whole pack -> train (3 stages, time-boxed) -> collect -> finalize chain at a tiny scale on CPU."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, shared_path

SCRIPTS = ROOT / "scripts" / "default_model"
sys.path.insert(0, str(SCRIPTS))

import device_train  # noqa: E402
import dm_common as dm  # noqa: E402


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"dm_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_plan_fills_the_budget_exactly(stage):
    rate, seconds, done = 3.7, 300.0, 40
    n = device_train.plan_total_steps(stage, done, rate, seconds, small_every=5)

    def cost(total):
        return sum(device_train.step_cost(stage, i, total, 5) for i in range(done + 1, total + 1))

    assert n > done
    assert cost(n) <= rate * seconds < cost(n + 1) + 1.5  # the next step would not fit (up to one step)
    assert rate * seconds < cost(n + 2)
    values = device_train.plan_values(stage, n)
    assert values["total_steps"] == values["optim.period"] == n
    if stage == 3:
        e0, e1, e2 = values["stage3.phase_ends"]
        assert 0 < e0 <= e1 <= e2 < n


def test_clock_stops_a_run_at_the_deadline(tmp_path):
    class Cfg:
        total_steps = 10_000
        batch_size, grad_accum = 2, 1

        class stage3:
            small_every = 5

    import time

    clock = device_train.Clock(1, time.time() + 0.5, tmp_path / "plan.json", planned=True, finish_s=0.0)
    step = 0
    while step < Cfg.total_steps:
        step += 1
        clock.after_step(step, Cfg)
        time.sleep(0.01)
    assert clock.cut_at == step == Cfg.total_steps < 10_000


def test_shards_round_trip_and_missing_shard(tmp_path):
    g = torch.Generator().manual_seed(0)
    state = {f"layer{i}.weight": torch.randn(40, 10, generator=g) for i in range(6)}
    state["count"] = torch.arange(5)
    paths = dm.save_sharded(state, tmp_path / "m", limit=64 * 1024 + 1000)
    assert len(paths) >= 2 and all(p.stat().st_size < 64 * 1024 + 1000 + 4096 for p in paths)
    back = dm.load_sharded(tmp_path / "m")
    assert set(back) == set(state)
    for k, v in state.items():
        expected = v.half().float() if v.is_floating_point() else v
        assert torch.equal(back[k], expected)
    paths[1].unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        dm.load_sharded(tmp_path / "m")


def test_patch_zoo_writes_a_valid_entry_once(tmp_path):
    finalize = _load("finalize")
    zoo = tmp_path / "zoo.py"
    zoo.write_text((ROOT / "src" / "iqpfr" / "weights" / "zoo.py").read_text())
    sha = "ab" * 32
    assert finalize.patch_zoo(zoo, "iqpfr-256", sha, 12_345)
    assert finalize.patch_zoo(zoo, "iqpfr-256", "cd" * 32, 23_456)  # replaces, never duplicates
    text = zoo.read_text()
    assert text.count(f'sha256="{"cd" * 32}",') == 1 and sha not in text and text.count("size=23_456,") == 1
    spec = importlib.util.spec_from_file_location("zoo_patched", zoo)
    module = importlib.util.module_from_spec(spec)
    sys.modules["zoo_patched"] = module  # dataclasses resolve annotations through sys.modules
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["zoo_patched"]
    entry = next(e for e in module._ENTRIES if e.name == "iqpfr-256")
    assert entry.sha256 == "cd" * 32 and entry.size == 23_456 and entry.embedded
    assert not finalize.patch_zoo(zoo, "no-such-entry", sha, 1)


def test_rank_scores_keep_order_and_fill_every_bucket(tmp_path):
    pack = _load("pack_data")
    src = tmp_path / "scores.csv"
    values = [0.41, 0.52, 0.48, 0.61, 0.55, 0.50, 0.39, 0.58, 0.66, 0.45]
    with open(src, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "imagename", "score"])
        for i, v in enumerate(values):
            w.writerow([f"x/{i:05d}.jpg", f"{i:05d}.jpg", v])
    table = pack.write_rank_scores(src, tmp_path / "train_scores.csv")
    ranks = [table[f"{i:05d}.jpg"] for i in range(len(values))]
    assert sorted(range(10), key=lambda i: values[i]) == sorted(range(10), key=lambda i: ranks[i])
    assert sorted(int(10 * r) for r in ranks) == list(range(10))  # one face per bucket
    from iqpfr.data.dataset import read_scores_csv

    assert read_scores_csv(tmp_path / "train_scores.csv")["00003.jpg"] == pytest.approx(table["00003.jpg"])


def _tiny_configs(folder: Path, data: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for s in (1, 2, 3):
        (folder / f"stage{s}.yaml").write_text(
            f"base: {ROOT / 'configs' / 'tiny' / f'stage{s}.yaml'}\n"
            "total_steps: 1000\n"
            f"data: {{folders: [{data / 'ffhq'}], scores_csv: {data / 'train_scores.csv'}, default_score: null, "
            "limit: 0, num_workers: 0}\n")
    return folder


def test_tiny_chain_pack_train_collect_finalize(tmp_path, monkeypatch):
    """pack_data -> device_train stages I-III (time-boxed, stage III on a 'cold machine' from the
    carried shards) -> collect -> finalize: the shipped file loads and restores."""
    ffhq = shared_path("data", "ffhq_train256")
    shared_path("data", "gpen_ffhq10")
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CI machine's 2 cores are shared: 2 threads are slower there
    try:
        _chain(tmp_path, ffhq)
    finally:
        torch.set_num_threads(threads)


def _chain(tmp_path: Path, ffhq: Path) -> None:
    data = tmp_path / "data"
    assert _load("pack_data").main(["--out", str(data), "--ffhq", str(ffhq), "--limit", "8", "--utk", "0"]) == 0
    rows = list(csv.DictReader(open(data / "train_scores.csv")))
    assert len(rows) == 8 and json.loads((data / "MANIFEST.json").read_text())["ffhq_faces"] == 8
    # quality-augmented targets: blurred copies score below the faces, sharpened ones above
    variants = data / "target_variants.csv"
    assert _load("score_variants").main(["--faces", str(data / "ffhq"), "--scores", str(data / "scores.csv"),
                                         "-o", str(variants), "--resolution", "32", "--levels", "-1", "1"]) == 0
    rows = list(csv.DictReader(open(variants)))
    assert len(rows) == 24 and {r["level"] for r in rows} == {"-1", "0", "1"}
    mean = {lv: sum(float(r["score"]) for r in rows if r["level"] == lv) / 8 for lv in ("-1", "0", "1")}
    assert mean["-1"] < mean["0"] < mean["1"] and mean["0"] == pytest.approx(0.5), mean
    configs = _tiny_configs(tmp_path / "configs", data)
    common = ["--config-dir", str(configs), "--carried", str(tmp_path / "carry"), "--warm", "1", "--probe", "3",
              "--finish-s", "1", "--minutes", "0.2"]
    for stage, root in ((1, "warm"), (2, "warm")):
        extra = ["--set", "stage2.quality_weight=0.1", "--set", f"data.target_variants={variants}",
                 "--set", "data.target_variant_prob=0.5", "--set", "stage2.quality_min_condition=0.7"] if stage == 2 else []
        assert device_train.main([str(stage), "--root", str(tmp_path / root), "--out", str(tmp_path / f"out{stage}"),
                                  *common, *extra]) == 0
        report = json.loads((tmp_path / f"out{stage}" / f"stage{stage}_report.json").read_text())
        assert report["step"] > 0 and report["plan"] is not None
        collect = _load("collect")
        assert collect.main([str(tmp_path / f"out{stage}"), "--archive", str(tmp_path / "archive"),
                             "--carry-dir", str(tmp_path / "carry"), "--data-dir", str(data)]) == 0
    assert sorted(p.name for p in (tmp_path / "carry").iterdir()) == ["codes.pt", "stage2_ema-00001-of-00001.safetensors"]
    # stage III on an empty runs folder: everything it needs comes from the carried files
    assert device_train.main(["3", "--root", str(tmp_path / "cold"), "--out", str(tmp_path / "out3"), *common]) == 0
    report = json.loads((tmp_path / "out3" / "stage3_report.json").read_text())
    assert report["inputs"]["stage2"].startswith("restored") and report["inputs"]["discriminator"] == "fresh"
    out = tmp_path / "model.safetensors"
    assert _load("finalize").main(["--shards", str(tmp_path / "out3" / "stage3_ema"),
                                   "--config", str(configs / "stage3.yaml"), "-o", str(out), "--no-sheet"]) == 0
    from iqpfr.weights.checkpoint import load_model, read_model_config

    model = load_model(out)
    assert read_model_config(out)["architecture"] == "iqpfr-tiny"
    with torch.no_grad():
        y = model(torch.zeros(1, 3, 32, 32), w=torch.full((1,), 0.5)).image
    assert y.shape == (1, 3, 32, 32) and torch.isfinite(y).all()
    final = dm.load_sharded(tmp_path / "out3" / "stage3_ema")
    for k, v in model.state_dict().items():
        assert torch.equal(v, final[k].to(v.dtype)), k


@pytest.mark.slow
def test_device_run_sh_and_acceptance_tiny(tmp_path):
    """The exact shell entry point used on the device (preflight, timeout, export) for stage I,
    then the acceptance script on a finalized tiny model (2 faces)."""
    ffhq = shared_path("data", "ffhq_train256")
    shared_path("data", "gpen_ffhq10")
    data = tmp_path / "data"
    assert _load("pack_data").main(["--out", str(data), "--ffhq", str(ffhq), "--limit", "8", "--utk", "0"]) == 0
    configs = _tiny_configs(tmp_path / "configs", data)
    env = dict(os.environ, OUT=str(tmp_path / "out1"), DM_CONFIG_DIR=str(configs), DM_ROOT=str(tmp_path / "runs"),
               DM_CARRIED=str(tmp_path / "carry"), DM_PROBE="3", DM_WARM="1", DM_FINISH_S="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", str(SCRIPTS / "device_run.sh"), "1", "0.5"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "[preflight] ok" in proc.stdout
    names = {p.name for p in (tmp_path / "out1").iterdir()}
    assert {"stage1_ema-00001-of-00001.safetensors", "stage1_disc.safetensors", "stage1_report.json"} <= names
    # stage II/III weights are not needed to exercise acceptance: finalize the stage-I VQGAN into a full model
    model_file = tmp_path / "model.safetensors"
    from iqpfr.train.config import load_train_config
    from iqpfr.train.networks import build_model_preset
    from iqpfr.weights.checkpoint import save_model

    model = build_model_preset(load_train_config(str(configs / "stage3.yaml")))
    save_model(model.half(), model_file)
    acc = _load("acceptance")
    rc = acc.main(["--weights", str(model_file), "-o", str(tmp_path / "acc"), "--limit", "2", "--threads", "1",
                   "--no-timing"])
    report = json.loads((tmp_path / "acc" / "acceptance.json").read_text())
    assert rc == (0 if report["all_pass"] else 1)
    assert report["faces"] == 2 and len(report["quality_sweep"]) == 9 and len(report["rows"]) == 6
    assert (tmp_path / "acc" / "acceptance.md").read_text().count("|") > 30
    # the same folder for another model (here: AdaIN forced the other way) would mix two runs' files
    flipped = "off" if model.config.get("adain", True) else "on"
    with pytest.raises(SystemExit, match="holds the results of another run"):
        acc.main(["--weights", str(model_file), "-o", str(tmp_path / "acc"), "--limit", "2", "--adain", flipped])


def test_stage3_inputs_on_a_warm_machine_use_this_runs_folder(tmp_path):
    root = tmp_path / "runs"
    for rel in ("stage1/model_ema.safetensors", "stage2/model_ema.safetensors", "codes.pt",
                "stage1/checkpoints/step_00000040.pt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    sets, info = device_train.prepare_inputs(3, root, tmp_path / "no_carry")
    assert f"model.vqgan={root / 'stage1' / 'model_ema.safetensors'}" in sets
    assert f"model.init_discriminator={root / 'stage1' / 'checkpoints' / 'step_00000040.pt'}" in sets
    assert info["stage2"] == "warm"
    with pytest.raises(SystemExit, match="stage 2 needs"):
        device_train.prepare_inputs(2, tmp_path / "empty", tmp_path / "no_carry")


def test_quality_probe_sweep_and_ceiling(tmp_path):
    """quality_probe.py: the sweep scores the shipped model at every target (w 0 and 0.5) and with the
    HQ+ branch off/on; the ceiling ranks blurred < original < sharpened copies of real faces."""
    import shutil

    from iqpfr.models.autoencoder import VQAutoEncoder
    from iqpfr.quality import learned

    if not learned.DEFAULT_WEIGHTS.is_file():
        pytest.skip("the face-iqa weights are not in this checkout")
    val = tmp_path / "val"
    val.mkdir()
    for p in sorted(shared_path("data", "gpen_ffhq10").glob("*.png"))[:2]:
        shutil.copy(p, val / p.name)
    probe = _load("quality_probe")
    out = tmp_path / "sweep.json"
    assert probe.main(["sweep", "--val", str(val), "--work", str(tmp_path / "work"), "--json", str(out),
                       "--adain", "on"]) == 0
    result = json.loads(out.read_text())
    assert result["adain"] is True
    rows = result["quality_rows"]  # the shipped rows lie on a line through the top row (MODEL_CARD.md)
    dist = rows["rms_from_top_row"]
    assert dist[9] == 0 and all(a > b for a, b in zip(dist, dist[1:])) and 0.2 < dist[0] < 0.6
    assert dist[4] / dist[0] == pytest.approx(5 / 9, rel=0.01)
    assert len(result["sweep"]["w0.5"]["scores"]) == 9 and -1 <= result["sweep"]["w0"]["spearman"] <= 1
    assert set(result["hq_w0.5"]) == {"alpha0", "alpha0.8"}
    vq = VQAutoEncoder.matching(probe.load_restorer(None))
    model = probe.load_restorer(None)
    vq.load_state_dict({k: v for k, v in model.state_dict().items() if k.split(".")[0] in ("encoder", "quantize", "generator")})
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in vq.state_dict().items()}, str(tmp_path / "vq.safetensors"))
    out = tmp_path / "ceiling.json"
    assert probe.main(["ceiling", str(tmp_path / "vq.safetensors"), "--val", str(val), "--json", str(out)]) == 0
    levels = json.loads(out.read_text())["levels"]
    images = [levels[k]["image"] for k in sorted(levels, key=float)]
    assert images[0] < levels["+0"]["image"] < images[-1]
    assert all({"decoded_dual", "decoded_common"} <= set(v) for v in levels.values())


def test_device_session_two_calls_tiny(tmp_path):
    """device_session.sh, the GPU session's two calls, at tiny scale on the CPU: call 1 trains stages
    I and II, call 2 stage III on the same (warm) runs folder and then runs the benchmark."""
    ffhq = shared_path("data", "ffhq_train256")
    data = tmp_path / "data"
    assert _load("pack_data").main(["--out", str(data), "--ffhq", str(ffhq), "--limit", "8", "--utk", "0"]) == 0
    configs = _tiny_configs(tmp_path / "configs", data)
    env = dict(os.environ, OUT=str(tmp_path / "out"), DM_CONFIG_DIR=str(configs), DM_ROOT=str(tmp_path / "runs"),
               DM_CARRIED=str(tmp_path / "carry"), DM_PROBE="3", DM_WARM="1", DM_FINISH_S="1", OMP_NUM_THREADS="1",
               DM_MINUTES="0.3 0.3 0.3",
               DM_BENCH_ARGS="--models codeformer-tiny --devices cpu --faces 1 --repeats 1 --bf16 off "
                             "--cpu-kernels off --threads 1")
    for part in ("1", "2"):
        proc = subprocess.run(["bash", str(SCRIPTS / "device_session.sh"), part], env=env, capture_output=True,
                              text=True, timeout=400)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        assert f"device_session.sh: part {part} exit 0" in proc.stdout
        names = {p.name for p in (tmp_path / "out").iterdir()}
        assert len(names) <= 8, names  # what one device call can return (console.log comes from the caller's tee)
        if part == "1":
            assert {"stage2_report.json", "codes.pt", "logs_part1.tar"} <= names, names
            assert not any(n.startswith("stage1_") for n in names), names
            out1 = tmp_path / "reply1"
            (tmp_path / "out").rename(out1)
            collect = _load("collect")
            assert collect.main([str(out1), "--archive", str(tmp_path / "archive"), "--carry-dir",
                                 str(tmp_path / "carry"), "--data-dir", str(data)]) == 0
    assert {"stage3_report.json", "inference_cuda.json", "logs_part2.tar"} <= names, names
    assert any(n.startswith("stage3_ema-") for n in names)
    bench = json.loads((tmp_path / "out" / "inference_cuda.json").read_text())
    assert bench  # the benchmark ran to the end and wrote its results
