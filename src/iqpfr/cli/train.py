"""``iqpfr train``: run a training stage, or precompute stage-II code targets.

    iqpfr train CONFIG [--set key=value ...] [--resume auto|PATH]
    iqpfr train precompute-codes CONFIG -o codes.pt [--set ...]
    iqpfr train CONFIG --preview-degradations 8      # LQ | GT grid of the configured degradation
    torchrun --nproc_per_node 8 -m iqpfr train CONFIG --resume auto   # multi-GPU / multi-node
"""

from __future__ import annotations

import argparse

from iqpfr.cli import CLIError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a stage (I: dual VQGAN, II: code prediction, III: fidelity fusion)",
        description="Train one IQPFR stage from a YAML config (small deltas over a base via `base:`). "
        "Multi-GPU / multi-node: launch with torchrun (it sets RANK, LOCAL_RANK, WORLD_SIZE). "
        "`iqpfr train precompute-codes CONFIG -o FILE` writes the stage-II code targets.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", metavar="CONFIG", help="YAML config, or the word precompute-codes")
    p.add_argument("rest", nargs="?", metavar="CONFIG2", help="(precompute-codes) the YAML config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=1e-4 (repeatable)")
    p.add_argument("--resume", metavar="auto|PATH", default=None,
                   help="continue from the newest checkpoint of run_dir (auto) or from PATH")
    p.add_argument("-o", "--output", metavar="FILE", help="(precompute-codes) output file (.pt)")
    p.add_argument("--preview-degradations", type=int, metavar="N", default=0,
                   help="write N training pairs (LQ | GT) to RUN_DIR/preview.png and exit")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs still written)")
    p.set_defaults(func=run)


def _load(path: str, overrides: list[str]):
    from iqpfr.config import ConfigError
    from iqpfr.train.config import load_train_config

    try:
        return load_train_config(path, overrides)
    except ConfigError as exc:
        raise CLIError(str(exc)) from exc


def run(args: argparse.Namespace) -> int:
    if args.config == "precompute-codes":
        if not args.rest or not args.output:
            raise CLIError("usage: iqpfr train precompute-codes CONFIG -o codes.pt [--set ...]")
        return _precompute(_load(args.rest, args.overrides), args.output, not args.no_progress)
    if args.rest:
        raise CLIError(f"unexpected argument {args.rest!r}")
    cfg = _load(args.config, args.overrides)
    if args.print_config:
        import yaml

        from iqpfr.config import config_to_dict

        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
        return 0
    if args.preview_degradations > 0:
        return _preview(cfg, args.preview_degradations)
    from iqpfr.train.dist import env_dist_info, shutdown_distributed
    from iqpfr.train.loop import train

    try:
        summary = train(cfg, resume=args.resume, progress=not args.no_progress)
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        raise CLIError(str(exc)) from exc
    finally:
        shutdown_distributed()

    if env_dist_info().is_main:
        print(f"finished step {summary['step']}: checkpoint {summary['checkpoint']}, "
              f"EMA weights {cfg.run_dir}/model_ema.safetensors, {summary['images_per_s']:.1f} images/s")
    return 0


def _precompute(cfg, output: str, progress: bool) -> int:
    from pathlib import Path

    import torch

    from iqpfr.data.dataset import FaceDataset
    from iqpfr.train.targets import build_target_vq, precompute_codes, save_codes
    from iqpfr.utils.device import resolve_device

    if Path(output).exists():
        raise CLIError(f"{output}: exists (refusing to overwrite)")
    weights = cfg.model.vqgan or cfg.model.init
    if weights is None:
        raise CLIError("set model.vqgan (or model.init) to the stage-I weights")
    d = cfg.data
    try:
        dataset = FaceDataset(d.folders, resolution=d.resolution, seed=cfg.seed, scores_csv=d.scores_csv,
                              score_column=d.score_column, default_score=d.default_score, limit=d.limit)
        vq = build_target_vq(cfg, weights)
    except (FileNotFoundError, ValueError) as exc:
        raise CLIError(str(exc)) from exc
    device = resolve_device(cfg.device)
    with torch.inference_mode():
        table = precompute_codes(vq.to(device), dataset, batch_size=cfg.batch_size * 2, device=device,
                                 progress=progress)
    save_codes(table, output)
    print(f"wrote codes of {len(table['names'])} faces (and their mirror images) to {output}")
    return 0


def _preview(cfg, count: int) -> int:
    from pathlib import Path

    from iqpfr.train.loader import build_dataset
    from iqpfr.train.log import save_sample_grid

    try:
        dataset = build_dataset(cfg)
    except (FileNotFoundError, ValueError) as exc:
        raise CLIError(str(exc)) from exc
    rows = []
    for i in range(min(count, len(dataset))):
        item = dataset[(0, i)]
        lqs = [item[k] for k in ("lq", "lq_small") if k in item]
        rows.append((*lqs, item["gt"]))
    path = save_sample_grid(Path(cfg.run_dir) / "preview.png", rows)
    print(f"wrote {len(rows)} rows ({'LQ | ' * (len(rows[0]) - 1)}GT) to {path}")
    return 0
