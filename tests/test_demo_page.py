"""``iqpfr demo`` served for real: a child process on a free local port, driven by a headless
Chromium (the system's, through Playwright) and by ``gradio_client``.

The browser uploads the shipped sample, changes the fidelity, restores and checks the image shown
is the restored photo (the CLI's output for the same settings: not the input, not blank), then
uploads a broken file and reads the error sentence; no request may leave 127.0.0.1. The API must
return the same pixels as ``iqpfr restore --ext png``. Set IQPFR_DEMO_SCREENSHOT=docs/demo_screenshot.png
to refresh README's screenshot (scripts/demo_screenshot.py takes it with the default settings).
"""

from __future__ import annotations

import importlib.resources
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the web demo needs the demo extra: pip install 'iqpfr[demo]'")
pytest.importorskip("dlib", reason="face detection needs the face extra")

ASTRONAUT = Path(str(importlib.resources.files("iqpfr") / "assets" / "astronaut_degraded.jpg"))
UPLOAD_CAP_MB = 1


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(the page's DemoProcess, its working folder, the CLI's outputs by -w): the CLI runs while
    the page starts."""
    import torch

    from iqpfr.cli import main
    from iqpfr.demo.process import DemoProcess

    home = tmp_path_factory.mktemp("demo_home")
    cwd = tmp_path_factory.mktemp("demo_cwd")
    (cwd / "secret.txt").write_text("not for the page")
    # one torch thread, as in the CLI run it is compared with (same numbers, less contention)
    env = {"IQPFR_HOME": str(home), "OMP_NUM_THREADS": "1", "NO_PROXY": "127.0.0.1,localhost"}
    demo = DemoProcess(["--device", "cpu", "--max-upload-mb", str(UPLOAD_CAP_MB)], env=env, cwd=cwd)
    demo.launch()
    try:
        # `iqpfr restore --ext png` of the sample, one run for both fidelities (no face up-sampling: quick)
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        out = tmp_path_factory.mktemp("cli")
        try:
            assert main(["restore", str(ASTRONAUT), "-o", str(out), "--ext", "png", "-w", "0.3,auto",
                         "--no-face-upsample", "--device", "cpu", "-q"]) == 0
        finally:
            torch.set_num_threads(previous)
        cli = {w: np.asarray(Image.open(out / "final_results" / f"astronaut_degraded_w{w}.png"))
               for w in ("0.3", "auto")}
        demo.wait()
        yield demo, cwd, cli
    finally:
        demo.stop()
    assert demo.returncode is not None
    assert not demo.folder.exists(), "the private upload folder must be removed when the page stops"


@pytest.fixture(scope="module")
def server(served):
    return served[:2]


@pytest.fixture(scope="module")
def cli_outputs(served):
    """``iqpfr restore --ext png`` of the sample, by fidelity."""
    return served[2]


@pytest.fixture(scope="module")
def client(server):
    """A ``gradio_client`` with its telemetry off (it reads the flag and the variable both)."""
    from gradio_client import Client

    saved = {k: os.environ.get(k) for k in ("GRADIO_ANALYTICS_ENABLED", "HF_HUB_DISABLE_TELEMETRY")}
    os.environ.update(GRADIO_ANALYTICS_ENABLED="False", HF_HUB_DISABLE_TELEMETRY="1")
    demo, _ = server
    api = Client(demo.url, verbose=False, analytics_enabled=False)
    try:
        yield api
    finally:
        api.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _predict(client, files, *, auto: bool, w: float = 0.5):
    from gradio_client import handle_file

    model = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/restore"]["parameters"][1]
    return client.predict(
        [handle_file(str(f)) for f in files], model["parameter_default"], auto, w, 0.9, 1.0, "dlib-hog",
        "all faces", "none", "auto", False, "resize", api_name="/restore",
    )


def test_api_returns_the_cli_image(client, cli_outputs):
    input_pixels = np.asarray(Image.open(ASTRONAUT))
    for key, auto, w in (("0.3", False, 0.3), ("auto", True, 0.5)):
        slider, faces, video, downloads, status = _predict(client, [ASTRONAUT], auto=auto, w=w)
        assert video is None
        after = np.asarray(Image.open(slider[1]))
        assert np.array_equal(after, cli_outputs[key]), f"API and CLI differ for -w {key}"
        assert np.array_equal(np.asarray(Image.open(downloads[0])), after)
        assert not np.array_equal(after, input_pixels)
        assert np.asarray(Image.open(slider[0])).shape == after.shape
        assert len(faces) == 1 and status.startswith("**Restored 1 of 1 file(s), 1 face(s) in photos.**")


def test_api_restores_a_video_next_to_a_photo(client, tmp_path):
    pytest.importorskip("av", reason="videos need the video extra (PyAV)")
    from iqpfr.video.io import probe_video
    from iqpfr.video.synth import pan_zoom_frames, write_clip

    clip = tmp_path / "clip.mp4"
    write_clip(clip, list(pan_zoom_frames(np.asarray(Image.open(ASTRONAUT)), (256, 256), 6)), fps=10)
    slider, faces, video, downloads, status = _predict(client, [clip, ASTRONAUT], auto=False, w=0.5)
    assert video is not None and Path(video).suffix == ".mp4"
    assert probe_video(video).estimated_frames() == 6
    assert len(downloads) == 2 and slider is not None and len(faces) == 1
    assert status.startswith("**Restored 2 of 2 file(s)") and "clip.mp4: 6 frames, " in status


def test_api_reports_a_broken_file(client, tmp_path):
    from gradio_client.exceptions import AppError

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(AppError, match=r"broken\.png could not be read"):
        _predict(client, [broken], auto=True)


def test_nothing_outside_the_folder_is_served_and_uploads_are_capped(server):
    import httpx

    demo, cwd = server
    for target in ("/etc/passwd", str(cwd / "secret.txt"), "secret.txt", str(ASTRONAUT)):
        response = httpx.get(f"{demo.url}gradio_api/file={target}", timeout=10)
        assert response.status_code in (403, 404), (target, response.status_code)
        assert b"not for the page" not in response.content and b"root:" not in response.content
    big = io.BytesIO(b"\0" * ((UPLOAD_CAP_MB + 1) * 1024 * 1024))
    response = httpx.post(f"{demo.url}gradio_api/upload", files={"files": ("big.png", big, "image/png")}, timeout=30)
    assert response.status_code == 413
    assert not any(p.name == "big.png" for p in demo.folder.rglob("*"))


def test_browser_restores_and_reports_errors(server, cli_outputs, tmp_path):
    pytest.importorskip("playwright", reason="the browser test needs playwright (pip install 'iqpfr[dev]')")
    from iqpfr.demo.browser import PageDriver, find_chromium

    if find_chromium() is None:
        pytest.skip("no system Chromium (apt-get install chromium); playwright's own download is not used")
    demo, _ = server
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    with PageDriver(demo.url) as driver:
        driver.open()
        assert "4096 px on the longest side" in driver.page.inner_text("body")  # the limits are stated
        driver.upload(ASTRONAUT)
        driver.set_fidelity(0.3)
        driver.set_face_upsample(False)
        driver.restore()
        driver.wait_for_result_images()
        urls = driver.result_urls()
        shown = np.asarray(Image.open(io.BytesIO(driver.fetch(urls["after"]))))
        assert np.array_equal(shown, cli_outputs["0.3"]), "the page shows another image than iqpfr restore -w 0.3"
        assert shown.std() > 10  # not blank
        before = np.asarray(Image.open(io.BytesIO(driver.fetch(urls["before"]))))
        changed = np.abs(before.astype(int) - shown).max(axis=2)
        assert (changed > 8).sum() > 500 and changed.max() > 30  # not the input: the face was restored
        assert driver.fetch(urls["download"]) == driver.fetch(urls["after"])
        assert driver.page.locator("#faces img").count() == 1
        shot = driver.screenshot(tmp_path / "demo_page.png")
        assert shot.stat().st_size > 10_000
        if os.environ.get("IQPFR_DEMO_SCREENSHOT"):
            driver.screenshot(os.environ["IQPFR_DEMO_SCREENSHOT"])

        driver.clear_uploads()
        driver.upload(broken)
        driver.restore()
        assert "broken.jpg could not be read" in driver.status()
        assert demo.folder.as_posix() not in driver.status()  # the private path is never shown
        assert driver.blocked == [], f"the page tried to reach the internet: {driver.blocked}"
