"""Train the underwater enhancer: ``python scripts/underwater/train.py [--config YAML] [key=value ...]``.

Resumes from ``<run_dir>/checkpoint.pt`` when it exists (``--fresh`` to start over). One CPU thread
by default (``threads=N`` to change). Writes ``<run_dir>/model.safetensors`` at the end.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/underwater/lsui.yaml")
    parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args()
    from iqpfr.tasks.underwater.train import load_config, train

    cfg = load_config(args.config, args.overrides)
    train(cfg, resume=not args.fresh, log=lambda m: print(m, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
