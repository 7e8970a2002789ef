"""Run one training stage of the default model inside a time budget, then export what must come back.

    python3 scripts/default_model/device_train.py STAGE --deadline EPOCH_S --out DIR [--set k=v ...]
    python3 scripts/default_model/device_train.py STAGE --export-only --out DIR

Called by ``device_run.sh`` on the GPU device (one stage per device call, each call <= 10 minutes).

* **Inputs.** The stage's config is ``scripts/default_model/configs/stageN.yaml`` (paths relative to the
  repository root). What an earlier stage produced is read from ``runs/dm256/`` when the machine is
  still warm, else restored from the shards carried back in ``.device_ckpt/`` (see ``collect.py``).
* **Length.** The step count is unknown before the GPU's speed is: after a short probe (steps 11-40)
  the speed fixes ``total_steps``, the cosine period and the phase boundaries (stage I: discriminator
  from 50 %; II: discrete quality loss from 50 %; III: phases at 30/60/85 %) so the stage ends with
  its learning rate annealed by ``--deadline``; the plan is kept in ``RUN_DIR/plan.json`` and reused
  when the stage resumes. If the run is slower than planned it is cut at the deadline (the final
  checkpoint and EMA export are still written).
* **Outputs** (``--out``, at most 8 files of <= 15 MiB): EMA weights as fp16 safetensors shards,
  stage I also the discriminator (fp16), stage II the precomputed codes, ``log.jsonl``, the last
  sample grid (LQ | output | GT), ``report.json``.

The time limit uses ``train(..., on_step=)``: the hook lowers ``cfg.total_steps`` to the current step,
so the loop ends normally with a final checkpoint and the EMA export.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dm_common as dm  # noqa: E402

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
RUN_ROOT = Path("runs/dm256")

# relative cost of a step in each phase, measured phase = 1 (the probe runs in the first phase)
PHASE_COST = {
    1: {"late": 1.35},  # stage I after disc_start: discriminator + adaptive-weight gradients
    2: {"late": 1.8},  # stage II with the quality loss: decoder + scorer forward/backward
    3: {"code_only": 0.45, "with_d": 1.3},  # code-only steps skip decoder and D; D from 5 % on
}
FRACTIONS = {1: {"disc": 0.5}, 2: {"quality": 0.5}, 3: {"phases": (0.30, 0.60, 0.85), "disc": 0.05}}
FINISH_S = 25.0  # default reserve for the final checkpoint + export inside the loop


def step_cost(stage: int, i: int, n: int, small_every: int) -> float:
    """Relative cost of step ``i`` of an ``n``-step plan (phase-1 steps cost 1)."""
    if stage == 1:
        return 1.0 if i <= FRACTIONS[1]["disc"] * n else PHASE_COST[1]["late"]
    if stage == 2:
        return 1.0 if i < FRACTIONS[2]["quality"] * n else PHASE_COST[2]["late"]
    e0, e1, e2 = (int(f * n) for f in FRACTIONS[3]["phases"])
    image = PHASE_COST[3]["with_d"] if i > FRACTIONS[3]["disc"] * n else 1.0
    if i <= e1:
        return image
    if i <= e2 or i % small_every != 0:
        return PHASE_COST[3]["code_only"]
    return image


def plan_total_steps(stage: int, done: int, rate: float, seconds: float, small_every: int = 5) -> int:
    """Largest n such that steps done+1..n fit ``seconds`` at ``rate`` phase-1 steps/s (binary search)."""
    budget = rate * seconds

    def cost(n: int) -> float:
        return sum(step_cost(stage, i, n, small_every) for i in range(done + 1, n + 1))

    lo, hi = done, done + max(1, int(budget / 0.4)) + 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cost(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def plan_values(stage: int, total: int) -> dict:
    """Config values of a ``total``-step plan (``--set`` keys)."""
    values = {"total_steps": total, "optim.period": total, "ckpt_every": max(100, total // 6),
              "sample_every": max(100, total // 4)}
    if stage == 1:
        values["stage1.disc_start"] = int(FRACTIONS[1]["disc"] * total) + 1
    elif stage == 2:
        values["stage2.quality_start"] = int(FRACTIONS[2]["quality"] * total) + 1
    else:
        e = [int(f * total) for f in FRACTIONS[3]["phases"]]
        values["stage3.phase_ends"] = e
        values["stage3.disc_start"] = max(2, int(FRACTIONS[3]["disc"] * total)) + 1
    return values


def apply_values(cfg, values: dict) -> None:
    for key, value in values.items():
        obj = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            obj = getattr(obj, p)
        setattr(obj, leaf, tuple(value) if isinstance(value, list) else value)


def as_overrides(values: dict) -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in values.items()]


class Clock:
    """Probe the speed, fix the plan, stop at the deadline (called after every optimiser step)."""

    def __init__(self, stage: int, deadline: float, plan_path: Path, planned: bool, *, warm: int = 10,
                 probe: int = 30, cuda: bool = False, finish_s: float = FINISH_S) -> None:
        self.finish_s = finish_s
        self.stage, self.deadline, self.plan_path = stage, deadline, plan_path
        self.planned, self.warm, self.probe, self.cuda = planned, warm, probe, cuda
        self.first_step: int | None = None
        self.t_probe: float | None = None
        self.cut_at: int | None = None
        self.rate: float | None = None
        self.values: dict = {}
        self.late_start: int | None = None  # set by the plan (stages I/II); None: no second probe
        self.last_print = time.time()

    def _sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def _timed(self, step: int, start: int) -> float | None:
        """Steps/s over steps start+warm .. start+warm+probe (None until that window closes)."""
        if step == start + self.warm:
            self._sync()
            self.t_probe = time.time()
        elif step == start + self.warm + self.probe and self.t_probe is not None:
            self._sync()
            return self.probe / max(time.time() - self.t_probe, 1e-6)
        return None

    def after_step(self, step: int, cfg) -> None:
        if self.first_step is None:
            self.first_step = step - 1
        if not self.planned:
            rate = self._timed(step, self.first_step)
            if rate is not None:
                self.rate = rate
                seconds = self.deadline - time.time() - self.finish_s
                small_every = getattr(cfg.stage3, "small_every", 5)
                total = max(step + 1, plan_total_steps(self.stage, step, rate, seconds, small_every))
                self.values = plan_values(self.stage, total)
                apply_values(cfg, self.values)
                self.planned = True
                self.late_start = self.values.get("stage1.disc_start", self.values.get("stage2.quality_start"))
                self._save_plan(step, rate, seconds)
                print(f"[device_train] stage {self.stage}: {rate:.2f} steps/s "
                      f"({rate * cfg.batch_size * cfg.grad_accum:.0f} img/s) -> plan {total} steps: {self.values}",
                      flush=True)
        elif self.late_start is not None and step >= self.late_start:
            # stages I/II: the later phase costs more than guessed or less: re-fit the remaining steps
            rate = self._timed(step, self.late_start - 1)
            if rate is not None:
                seconds = self.deadline - time.time() - self.finish_s
                total = max(step + 1, step + int(rate * seconds))
                self.late_start = None
                if abs(total - cfg.total_steps) > 0.02 * cfg.total_steps:
                    print(f"[device_train] later phase runs {rate:.2f} steps/s: total {cfg.total_steps} -> {total}",
                          flush=True)
                    self.values.update({"total_steps": total, "optim.period": total})
                    apply_values(cfg, self.values)
                    self._save_plan(step, rate, seconds, replanned=True)
        now = time.time()
        if now - self.last_print > 60:
            self.last_print = now
            print(f"[device_train] step {step}/{cfg.total_steps}, {self.deadline - now:.0f} s to the deadline",
                  flush=True)
        if now >= self.deadline - self.finish_s and step < cfg.total_steps:
            print(f"[device_train] deadline: stopping at step {step} of {cfg.total_steps}", flush=True)
            self.cut_at = step
            cfg.total_steps = step

    def _save_plan(self, step: int, rate: float, seconds: float, replanned: bool = False) -> None:
        record = {"values": self.values, "probe_steps_per_s": self.rate, "planned_at_step": step,
                  "seconds_left": seconds}
        if replanned:
            record.update({"replanned_at_step": step, "late_steps_per_s": rate})
        dm.write_json(self.plan_path, record)


def run_with_clock(cfg, clock: Clock) -> dict:
    """``iqpfr.train.loop.train(cfg, resume='auto')`` with ``clock.after_step`` after every step."""
    from iqpfr.train.loop import train

    return train(cfg, resume="auto", progress=False, on_step=lambda step, ctx: clock.after_step(step, ctx.cfg))


# -- inputs: warm machine (runs/) or cold restore from .device_ckpt/ ------------------------------------
def ensure_weights(target: Path, shard_prefix: Path) -> str:
    """``target`` exists (warm) or is rebuilt as fp32 safetensors from carried shards; returns the source."""
    if target.is_file():
        return "warm"
    from safetensors.torch import save_file

    state = dm.load_sharded(shard_prefix)  # raises FileNotFoundError naming the prefix
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(target), metadata={"restored_from": shard_prefix.name})
    return f"restored from {shard_prefix.name}-*"


def latest_checkpoint(run_dir: Path) -> Path | None:
    from iqpfr.train.checkpoint import find_latest

    return find_latest(run_dir)


def prepare_inputs(stage: int, root: Path, carried: Path) -> tuple[list[str], dict]:
    """(extra --set overrides, provenance) for ``stage``; restores missing inputs from ``carried``."""
    sets: list[str] = []
    info: dict = {}
    s1 = root / "stage1" / "model_ema.safetensors"
    s2 = root / "stage2" / "model_ema.safetensors"
    codes = root / "codes.pt"
    if stage >= 2:
        try:
            info["stage1"] = ensure_weights(s1, carried / "stage1_ema")
        except FileNotFoundError:
            if stage == 2:
                raise SystemExit(f"stage 2 needs {s1} (warm machine) or {carried}/stage1_ema-*.safetensors: "
                                 f"run stage 1 first, or carry {carried}") from None
            info["stage1"] = "absent"
    # stage II always computes its codes from the stage-I weights at hand (a carried codes.pt could be
    # stale); stage III takes them from the stage-II call that just ran
    if stage == 3:
        try:
            info["stage2"] = ensure_weights(s2, carried / "stage2_ema")
        except FileNotFoundError:
            raise SystemExit(f"stage 3 needs {s2} (warm machine) or {carried}/stage2_ema-*.safetensors") from None
        if not codes.is_file():
            if not (carried / "codes.pt").is_file():
                raise SystemExit(f"stage 3 needs {codes} or {carried}/codes.pt")
            shutil.copyfile(carried / "codes.pt", codes)
            info["codes"] = "restored"
        # with precomputed codes the VQGAN only supplies the frozen codebooks, which stage II kept
        sets.append(f"model.vqgan={s1 if s1.is_file() else s2}")
        disc = latest_checkpoint(root / "stage1")
        if disc is None and (carried / "stage1_disc.safetensors").is_file():
            disc = carried / "stage1_disc.safetensors"
        sets.append(f"model.init_discriminator={disc if disc is not None else 'null'}")
        info["discriminator"] = str(disc) if disc else "fresh"
    return sets, info


def precompute_codes(cfg_path: Path, overrides: list[str], codes: Path) -> None:
    """``iqpfr train precompute-codes`` with the stage-II config (skipped when the file exists)."""
    if codes.is_file():
        return
    from iqpfr.cli import main as cli_main

    args = ["train", "precompute-codes", str(cfg_path), "-o", str(codes)]
    for o in overrides:
        args += ["--set", o]
    rc = cli_main(args)
    if rc not in (0, None):
        raise SystemExit(f"precompute-codes failed ({rc})")


# -- outputs ---------------------------------------------------------------------------------------
def export_outputs(stage: int, run_dir: Path, root: Path, out: Path, report: dict) -> list[Path]:
    """Write the files that must come back into ``out`` (flat, each <= 15 MiB, at most 8)."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    ema = run_dir / "model_ema.safetensors"
    ckpt = latest_checkpoint(run_dir)
    if ckpt is not None and (not ema.is_file() or ema.stat().st_mtime < ckpt.stat().st_mtime):
        # killed after a checkpoint but before the export: take the EMA from the checkpoint
        from iqpfr.train.checkpoint import load_checkpoint

        state = load_checkpoint(ckpt)["stage"]
        ema_state = state["ema"]
        report["exported_from_checkpoint"] = str(ckpt)
    elif ema.is_file():
        from safetensors.torch import load_file

        ema_state = load_file(str(ema))
        state = None
    else:
        raise SystemExit(f"{run_dir}: nothing to export (no checkpoint, no model_ema.safetensors)")
    written += dm.save_sharded(ema_state, out / f"stage{stage}_ema", metadata={"stage": str(stage)})
    if stage == 1 and ckpt is not None:
        if state is None:
            from iqpfr.train.checkpoint import load_checkpoint

            state = load_checkpoint(ckpt)["stage"]
        disc = {k: v for k, v in state["networks"]["net_d"].items()}
        written += dm.save_sharded(disc, out / "stage1_disc", dtype=torch.float16)
        # one shard expected: give it the plain name collect.py and stage III look for
        if len(written) and written[-1].name == "stage1_disc-00001-of-00001.safetensors":
            final = out / "stage1_disc.safetensors"
            os.replace(written[-1], final)
            written[-1] = final
    if stage == 2 and (root / "codes.pt").is_file():
        shutil.copyfile(root / "codes.pt", out / "codes.pt")
        written.append(out / "codes.pt")
    if (run_dir / "log.jsonl").is_file():
        shutil.copyfile(run_dir / "log.jsonl", out / f"stage{stage}_log.jsonl")
        written.append(out / f"stage{stage}_log.jsonl")
    samples = sorted((run_dir / "samples").glob("step_*.png"))
    if samples:
        shutil.copyfile(samples[-1], out / f"stage{stage}_samples.png")
        written.append(out / f"stage{stage}_samples.png")
    report["files"] = {p.name: p.stat().st_size for p in written}
    dm.write_json(out / f"stage{stage}_report.json", report)
    written.append(out / f"stage{stage}_report.json")
    too_big = [p.name for p in written if p.stat().st_size > 16 * dm.MIB]
    if too_big:
        print(f"[device_train] WARNING: over 16 MiB, will not come back: {too_big}", file=sys.stderr)
    return written


def environment() -> dict:
    import torch

    env = {"torch": torch.__version__, "python": sys.version.split()[0], "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", type=int, choices=(1, 2, 3))
    ap.add_argument("--deadline", type=float, default=None, help="UNIX time by which training must stop")
    ap.add_argument("--minutes", type=float, default=None, help="alternative to --deadline: from now")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "runs/dm256/out")))
    ap.add_argument("--config-dir", type=Path, default=CONFIG_DIR)
    ap.add_argument("--root", type=Path, default=RUN_ROOT, help="runs folder of the three stages")
    ap.add_argument("--carried", type=Path, default=Path(dm.CKPT_DIR_NAME))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--export-only", action="store_true", help="only (re)write the outputs of the stage")
    ap.add_argument("--fixed", action="store_true",
                    help="keep the config's step counts (no speed probe); the deadline still stops the run "
                         "cleanly (CPU fallback across sessions)")
    ap.add_argument("--probe", type=int, default=30, help="steps timed to plan the stage")
    ap.add_argument("--finish-s", type=float, default=FINISH_S, help="seconds kept for the final save/export")
    ap.add_argument("--warm", type=int, default=10, help="steps run before the probe starts (compile, cudnn)")
    args = ap.parse_args(argv)

    import torch

    from iqpfr.train.config import load_train_config

    cfg_path = args.config_dir / f"stage{args.stage}.yaml"
    root = args.root
    overrides = [f"run_dir={root / f'stage{args.stage}'}"]
    if args.stage >= 2:
        overrides += [f"model.init={root / ('stage1' if args.stage == 2 else 'stage2') / 'model_ema.safetensors'}",
                      f"model.codes={root / 'codes.pt'}"]
        if args.stage == 2:
            overrides.append(f"model.vqgan={root / 'stage1' / 'model_ema.safetensors'}")
    run_dir = root / f"stage{args.stage}"
    report: dict = {"stage": args.stage, "environment": environment(), "started": time.time()}

    if args.export_only:
        export_outputs(args.stage, run_dir, root, args.out, report)
        return 0

    deadline = args.deadline or (time.time() + 60 * (args.minutes or 7.0))
    sets, info = prepare_inputs(args.stage, root, args.carried)
    overrides += sets
    report["inputs"] = info
    plan_path = run_dir / "plan.json"
    planned = plan_path.is_file() or args.fixed
    if plan_path.is_file():
        overrides += as_overrides(json.loads(plan_path.read_text())["values"])
    overrides += args.overrides  # the caller's --set win
    if args.stage == 2:
        codes, s1 = root / "codes.pt", root / "stage1" / "model_ema.safetensors"
        if codes.is_file() and codes.stat().st_mtime < s1.stat().st_mtime:
            codes.unlink()  # stage I changed since the codes were computed
        precompute_codes(cfg_path, overrides, codes)
    cfg = load_train_config(str(cfg_path), overrides)
    print(f"[device_train] stage {args.stage}: {info}; {deadline - time.time():.0f} s to the deadline; "
          f"{'resuming plan ' + str(plan_path) if planned else 'planning after the probe'}", flush=True)
    clock = Clock(args.stage, deadline, plan_path, planned, warm=args.warm, probe=args.probe, finish_s=args.finish_s,
                  cuda=torch.cuda.is_available() and cfg.device in ("auto", "cuda"))
    t0 = time.time()
    summary = run_with_clock(cfg, clock)
    report.update({"complete": clock.cut_at is None, "step": summary["step"], "total_steps_planned": cfg.total_steps if clock.cut_at is None else None,
                   "cut_at": clock.cut_at, "probe_steps_per_s": clock.rate, "train_wall_s": time.time() - t0,
                   "images_per_s": summary.get("images_per_s"), "batch_size": cfg.batch_size,
                   "plan": json.loads(plan_path.read_text()) if plan_path.is_file() else None})
    history = summary.get("history") or []
    if history:
        report["last_log"] = history[-1]
    dm.write_json(run_dir / "DONE.json", report)
    files = export_outputs(args.stage, run_dir, root, args.out, report)
    print(f"[device_train] stage {args.stage} finished at step {summary['step']} "
          f"({'cut by the deadline' if clock.cut_at else 'as planned'}); {len(files)} files in {args.out}:",
          flush=True)
    for p in files:
        print(f"  {p.name}  {p.stat().st_size / dm.MIB:.1f} MiB")
    if history:
        print("[device_train] last log: " + json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                                       for k, v in history[-1].items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
