"""Take the files one device call returned and put them where the next steps look for them.

    python3 scripts/default_model/collect.py FILES_AT        # the `files_at` folder of the run reply

* Archives every file under ``runs/device/stageN/`` (git-ignored; finalize.py reads stage III there).
* Refreshes ``.device_ckpt/`` (git-ignored, named in `carry`) with only what the NEXT stage needs on a
  cold machine: after stage I the stage-I EMA shards + discriminator; after stage II the stage-II
  EMA shards + codes (stage I is then dropped: with precomputed codes stage III needs only the
  frozen codebooks, which the stage-II weights contain); after stage III the final EMA shards.
* Prints the stage's report (steps, speed, cut by the deadline?, last losses) and the size of what
  the next call carries against the device's 64 MiB.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dm_common as dm  # noqa: E402

_STAGE = re.compile(r"^stage([123])_")
KEEP_FOR_NEXT = {1: ("stage1_ema-", "stage1_disc."), 2: ("stage2_ema-", "codes.pt"), 3: ("stage3_ema-",)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files_at", type=Path, help="folder holding the files of the last device call")
    ap.add_argument("--archive", type=Path, default=dm.REPO / "runs" / "device")
    ap.add_argument("--carry-dir", type=Path, default=dm.REPO / dm.CKPT_DIR_NAME)
    ap.add_argument("--data-dir", type=Path, default=dm.REPO / dm.DATA_DIR_NAME)
    args = ap.parse_args(argv)

    files = sorted(p for p in args.files_at.rglob("*") if p.is_file())
    stages = {int(m.group(1)) for p in files if (m := _STAGE.match(p.name))}
    if len(stages) != 1:
        print(f"collect: {args.files_at}: expected the files of one stage, found stages {sorted(stages)}",
              file=sys.stderr)
        return 2
    stage = stages.pop()
    archive = args.archive / f"stage{stage}"
    archive.mkdir(parents=True, exist_ok=True)
    for p in files:
        shutil.copyfile(p, archive / p.name)

    carry = args.carry_dir
    carry.mkdir(parents=True, exist_ok=True)
    for old in carry.iterdir():
        if old.is_file():
            old.unlink()
    for p in files:
        if p.name.startswith(KEEP_FOR_NEXT[stage]):
            shutil.copyfile(p, carry / p.name)
    try:
        dm.shard_paths(carry / f"stage{stage}_ema")
    except FileNotFoundError as exc:
        print(f"collect: WARNING: {exc}: the weights of stage {stage} did not come back complete", file=sys.stderr)

    report_path = archive / f"stage{stage}_report.json"
    if report_path.is_file():
        report = json.loads(report_path.read_text())
        last = report.get("last_log") or {}
        shown = {k: round(v, 4) for k, v in last.items() if isinstance(v, float)}
        print(f"stage {stage}: step {report.get('step')} "
              f"({'cut by the deadline at ' + str(report['cut_at']) if report.get('cut_at') else 'as planned'}), "
              f"{report.get('images_per_s') or 0:.0f} img/s, train {report.get('train_wall_s') or 0:.0f} s, "
              f"{report.get('environment')}")
        print(f"  last log: {shown}")
    carry_bytes = dm.folder_bytes(carry)
    total = dm.checkout_bytes() + dm.folder_bytes(args.data_dir) + carry_bytes
    print(f"archived {len(files)} files in {archive}; {carry} holds {carry_bytes / dm.MIB:.1f} MiB; the next call "
          f"carries {total / dm.MIB:.1f} MiB of 64 MiB with .device_data and {dm.CKPT_DIR_NAME}")
    if total > dm.TREE_LIMIT:
        print("collect: too large to carry both; on a WARM machine carry only .device_data", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
