"""Drive the page in a real headless browser (Playwright with the system's Chromium), for the
browser test, the README screenshot and the page-vs-CLI benchmark.

``playwright install`` downloads its own browsers, which an offline machine cannot: this uses
the Chromium of the system's packages (Debian: ``apt-get install chromium``), found by
``find_chromium()`` (``$IQPFR_CHROMIUM`` first). Every request that leaves 127.0.0.1 goes to a dead
proxy and is recorded in ``PageDriver.blocked``: the page must work without the internet.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

LOCAL = ("http://127.0.0.1", "http://localhost", "ws://127.0.0.1", "ws://localhost", "data:", "blob:")
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "chromium", "chromium-browser")


def find_chromium() -> str | None:
    """A Chromium executable of the system, or None."""
    for candidate in (os.environ.get("IQPFR_CHROMIUM"), *CHROMIUM_CANDIDATES):
        if not candidate:
            continue
        path = candidate if os.path.isabs(candidate) else shutil.which(candidate)
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


class PageDriver:
    """A headless Chromium page on ``url``; use as a context manager."""

    def __init__(self, url: str, *, executable: str | None = None, width: int = 1280, height: int = 1000):
        self.url = url
        self.executable = executable or find_chromium()
        if self.executable is None:
            raise FileNotFoundError("no Chromium found (apt-get install chromium, or set IQPFR_CHROMIUM)")
        self.viewport = {"width": width, "height": height}
        self.blocked: list[str] = []
        self._playwright = self._browser = self.page = None

    def __enter__(self) -> PageDriver:
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        # root (CI, containers) cannot use Chromium's sandbox
        args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
        # the internet is unreachable for this browser: every host but this computer goes to a dead
        # proxy (request interception is not used: it stalls Gradio's queue requests)
        self._browser = self._playwright.chromium.launch(
            executable_path=self.executable, headless=True, args=args,
            proxy={"server": "http://127.0.0.1:9", "bypass": "127.0.0.1,localhost"},
        )
        self.page = self._browser.new_page(viewport=self.viewport)
        self.page.on("request", self._record)
        return self

    def __exit__(self, *exc) -> None:
        if self._browser is not None:
            self._browser.close()
        if self._playwright is not None:
            self._playwright.stop()

    def _record(self, request) -> None:
        if not request.url.startswith(LOCAL):
            self.blocked.append(request.url)

    # ------------------------------------------------------------------------------ actions

    def open(self, timeout_s: float = 60.0) -> None:
        self.page.goto(self.url, wait_until="load", timeout=timeout_s * 1000)
        self.page.wait_for_selector("#restore", timeout=timeout_s * 1000)

    def upload(self, *paths: str | os.PathLike) -> None:
        self.page.set_input_files("#inputs input[type=file]", [str(p) for p in paths])
        # the file list shows every name once the upload has arrived
        for path in paths:
            self.page.locator("#inputs").get_by_text(Path(path).name).first.wait_for(timeout=60000)

    def clear_uploads(self) -> None:
        self.page.locator("#inputs button[aria-label='Clear']").first.click()

    def set_fidelity(self, w: float | None) -> None:
        """None: automatic; a number: untick automatic and type w."""
        box = self.page.locator("#auto-fidelity input[type=checkbox]")
        if w is None:
            box.check()
            return
        box.uncheck()
        number = self.page.locator("#fidelity input[type=number]")
        number.wait_for()
        self.page.wait_for_function("() => !document.querySelector('#fidelity input[type=number]').disabled")
        number.fill(f"{w:g}")
        number.press("Enter")

    def open_more_settings(self) -> None:
        if not self.page.locator("#face-upsample").is_visible():
            self.page.get_by_text("More settings").click()

    def set_face_upsample(self, on: bool) -> None:
        self.open_more_settings()
        box = self.page.locator("#face-upsample input[type=checkbox]")
        box.check() if on else box.uncheck()

    def restore(self, timeout_s: float = 120.0) -> float:
        """Click Restore and wait until the status says the run finished; returns the seconds."""
        start = time.perf_counter()
        self.page.click("#restore")
        # the click first sets the status to "Working…" (the page's WORKING), then the run replaces it
        self.page.locator("#status").get_by_text("Working").wait_for(timeout=60000)
        self.page.wait_for_function(
            "() => { const s = document.querySelector('#status'); return s && s.innerText.includes('Restored '); }",
            timeout=timeout_s * 1000,
        )
        return time.perf_counter() - start

    def wait_for_result_images(self, timeout_s: float = 30.0) -> None:
        """Until both images of the before | after view are loaded."""
        self.page.wait_for_function(
            "() => { const im = [...document.querySelectorAll('#result img')];"
            " return im.length >= 2 && im.every(i => i.complete && i.naturalWidth > 0); }",
            timeout=timeout_s * 1000,
        )

    def status(self) -> str:
        return self.page.inner_text("#status")

    def result_urls(self) -> dict[str, str]:
        """``before``/``after`` image URLs shown in the before | after view, ``download`` the
        restored file's link."""
        images = self.page.eval_on_selector_all("#result img", "els => els.map(e => e.src)")
        link = self.page.get_attribute("#result a[download]", "href")
        before = next((u for u in images if "_before" in u), None)
        after = next((u for u in images if "_restored" in u), None)
        return {"before": before, "after": after, "download": link}

    def fetch(self, url: str) -> bytes:
        response = self.page.request.get(url)
        if not response.ok:
            raise OSError(f"{url}: HTTP {response.status}")
        return response.body()

    def screenshot(self, path: str | os.PathLike, full_page: bool = True) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path), full_page=full_page)
        return path
