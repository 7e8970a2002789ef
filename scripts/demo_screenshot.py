"""Take README's screenshot of ``iqpfr demo``: the shipped sample restored with the CLI's defaults.

    python scripts/demo_screenshot.py [--out docs/demo_screenshot.png]

Starts the page on a free local port, uploads the sample in a headless system Chromium (see
iqpfr.demo.browser), presses Restore with every control at its default, waits for the result and
saves a screenshot of the page; fails if the page tried to reach the internet.
"""

from __future__ import annotations

import argparse
import importlib.resources
import os
import sys
import tempfile
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/demo_screenshot.png")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1300)
    args = parser.parse_args()

    from iqpfr.demo.browser import PageDriver
    from iqpfr.demo.process import DemoProcess

    sample = Path(str(importlib.resources.files("iqpfr") / "assets" / "astronaut_degraded.jpg"))
    env = {"IQPFR_HOME": os.environ.get("IQPFR_HOME") or tempfile.mkdtemp(prefix="iqpfr-shot-")}
    with DemoProcess(["--device", "cpu"], env=env) as demo, \
            PageDriver(demo.url, width=args.width, height=args.height) as page:
        page.open()
        page.upload(sample)
        seconds = page.restore(timeout_s=900)
        page.wait_for_result_images()
        page.page.wait_for_timeout(500)  # the slider's handle settles
        out = page.screenshot(args.out, full_page=False)
        if page.blocked:
            print(f"the page tried to reach the internet: {page.blocked}", file=sys.stderr)
            return 1
    print(f"restored in {seconds:.1f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
