"""Web demo vs CLI: seconds to restore the same photo through the page and with ``iqpfr restore``.

    python benchmarks/demo.py [--repeats 3] [--out benchmarks/results/demo_cpu.json]

Measured in one run, interleaved (page, CLI, page, CLI, ...) so machine load hits both alike, with
one torch thread on the CPU, for the README sample photo and two settings: the CLI's defaults
(``-w auto``, Real-ESRGAN face up-sampling on for the embedded model) and a quick one
(``-w 0.5 --no-face-upsample``). Timed:

* page: in a headless Chromium, from the click on Restore until the status says done and both
  images of the before | after view have loaded (upload done before; model warm, as on a page in use);
* api: ``gradio_client`` ``predict`` on ``/restore`` (upload + restore + download of every output);
* cli: ``iqpfr restore PHOTO -o DIR --ext png`` as a new process (what a user of the CLI waits);
* cli_warm: the CLI's restore step alone, in-process with the model already loaded
  (``FaceRestorer.iter_restore`` + the PNG write): the strictest baseline, no start-up at all.

Ratios page / cli and page / cli_warm are printed and saved. Needs the demo extra, playwright and a
system Chromium (see iqpfr.demo.browser).
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAMPLE = Path(str(importlib.resources.files("iqpfr") / "assets" / "astronaut_degraded.jpg"))
SETTINGS = {
    "cli_defaults": {"cli": [], "auto": True, "w": 0.5, "face_upsample": None},
    "quick_w0.5_no_face_upsample": {"cli": ["-w", "0.5", "--no-face-upsample"], "auto": False, "w": 0.5,
                                    "face_upsample": False},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/demo_cpu.json")
    args = parser.parse_args()

    os.environ.update(OMP_NUM_THREADS="1", GRADIO_ANALYTICS_ENABLED="False", HF_HUB_DISABLE_TELEMETRY="1")
    import torch

    torch.set_num_threads(1)
    from gradio_client import Client, handle_file

    from iqpfr.demo.browser import PageDriver
    from iqpfr.demo.process import DemoProcess

    home = tempfile.mkdtemp(prefix="iqpfr-bench-home-")
    env = {"IQPFR_HOME": home, "OMP_NUM_THREADS": "1"}
    os.environ["IQPFR_HOME"] = home
    work = Path(tempfile.mkdtemp(prefix="iqpfr-bench-"))
    results: dict = {"photo": SAMPLE.name, "repeats": args.repeats, "threads": 1,
                     "load_average_start": [round(x, 2) for x in os.getloadavg()], "settings": {}}
    with DemoProcess(["--device", "cpu"], env=env) as demo, PageDriver(demo.url) as page:
        client = Client(demo.url, verbose=False, analytics_enabled=False)
        page.open()
        page.upload(SAMPLE)
        warm = _WarmCli()
        for name, setting in SETTINGS.items():
            page.set_fidelity(None if setting["auto"] else setting["w"])
            if setting["face_upsample"] is not None:
                page.set_face_upsample(setting["face_upsample"])
            times: dict[str, list[float]] = {"page": [], "api": [], "cli": [], "cli_warm": []}
            # warm-up, not timed: model, detector and the up-sampler's converted weights in place
            page.restore(timeout_s=600)
            _cli(setting["cli"], work / "warmup", env)
            warm.run(setting)
            face_upsample = setting["face_upsample"] if setting["face_upsample"] is not None else True
            for _ in range(args.repeats):
                seconds = page.restore(timeout_s=600)
                page.wait_for_result_images()
                times["page"].append(seconds)
                start = time.perf_counter()
                client.predict([handle_file(str(SAMPLE))], _model_label(client), setting["auto"], setting["w"],
                               0.9, 1.0, "dlib-hog", "all faces", "none", "auto", face_upsample, "resize",
                               api_name="/restore")
                times["api"].append(time.perf_counter() - start)
                times["cli"].append(_cli(setting["cli"], work / f"cli_{len(times['cli'])}", env))
                times["cli_warm"].append(warm.run(setting))
            median = {k: statistics.median(v) for k, v in times.items()}
            entry = {
                "cli_args": setting["cli"], "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
                "median_s": {k: round(v, 3) for k, v in median.items()},
                "page_over_cli": round(median["page"] / median["cli"], 3),
                "page_over_cli_warm": round(median["page"] / median["cli_warm"], 3),
                "api_over_cli_warm": round(median["api"] / median["cli_warm"], 3),
            }
            results["settings"][name] = entry
            print(f"{name}: page {median['page']:.2f} s, api {median['api']:.2f} s, cli {median['cli']:.2f} s, "
                  f"cli warm step {median['cli_warm']:.2f} s -> page/cli {entry['page_over_cli']:.2f}x, "
                  f"page/cli-warm {entry['page_over_cli_warm']:.2f}x", flush=True)
        client.close()
        results["blocked_requests"] = page.blocked
    # other jobs on the machine slow both sides alike (interleaved runs); their load is recorded
    results["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    import gradio

    results["environment"] = {"python": sys.version.split()[0], "torch": torch.__version__,
                              "gradio": gradio.__version__, "platform": platform.platform(),
                              "cpus": os.cpu_count(), "browser": page.executable}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


def _model_label(client) -> str:
    info = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/restore"]["parameters"]
    return info[1]["parameter_default"]


def _cli(extra: list[str], out: Path, env: dict) -> float:
    """Wall seconds of one ``iqpfr restore`` process."""
    command = [sys.executable, "-m", "iqpfr", "restore", str(SAMPLE), "-o", str(out), "--ext", "png",
               "--device", "cpu", "-q", "--overwrite", *extra]
    start = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


class _WarmCli:
    """The CLI's restore step with the model loaded once (what ``iqpfr restore`` does per photo)."""

    def __init__(self):
        from iqpfr.restorer import FaceRestorer

        self.restorer = FaceRestorer.from_pretrained(device="cpu")
        self.upsampler_loaded = False
        self.out = Path(tempfile.mkdtemp(prefix="iqpfr-bench-warm-"))

    def run(self, setting: dict) -> float:
        from iqpfr.cli import build_parser
        from iqpfr.cli.restore import RestoreCommand
        from iqpfr.io import write_image
        from iqpfr.upsample import DEFAULT_UPSAMPLER, Upsampler

        cli_args = build_parser().parse_args(["restore", str(SAMPLE), *setting["cli"]])
        face_upsample = self.restorer.default_face_upsample() if cli_args.face_upsample is None else cli_args.face_upsample
        if face_upsample and not self.upsampler_loaded:  # built as the CLI builds it
            self.restorer.upsampler = Upsampler.from_pretrained(DEFAULT_UPSAMPLER, device="cpu", tile=cli_args.bg_tile,
                                                                overlap=cli_args.bg_tile_overlap, offline=True)
            self.upsampler_loaded = True
        command = RestoreCommand(cli_args)
        from iqpfr.face.pipeline import FaceFilter
        from iqpfr.restorer import RestoreOptions

        options = RestoreOptions(fidelity=command.fidelities[0], upscale=cli_args.upscale,
                                 face_filter=FaceFilter(), color_fix=cli_args.color_fix,
                                 grayscale=cli_args.grayscale, bg_upsampler=cli_args.bg_upsampler,
                                 face_upsample=bool(face_upsample))
        start = time.perf_counter()
        (_, result), = list(self.restorer.iter_restore([SAMPLE], options=options, batch_size=cli_args.batch_size,
                                                       workers=cli_args.workers))
        write_image(self.out / "warm.png", result.output, overwrite=True)
        return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
