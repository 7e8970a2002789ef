"""``DemoProcess``: ``iqpfr demo`` in a child process on a free local port (tests, benchmarks,
screenshots). Always stopped on exit from the ``with`` block, killed if it does not stop.

    with DemoProcess(["--device", "cpu"]) as demo:
        demo.url          # http://127.0.0.1:PORT/
        demo.folder       # its private upload folder (gone after the block)
"""

from __future__ import annotations

import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class DemoProcess:
    """args: extra ``iqpfr demo`` arguments; env: variables added to this process's environment;
    timeout: seconds to wait for the page to serve."""

    def __init__(self, args: list[str] = (), *, env: dict[str, str] | None = None, timeout: float = 180.0,
                 cwd: str | os.PathLike | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.args = [sys.executable, "-m", "iqpfr", "demo", "--port", str(self.port), *args]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.timeout = timeout
        self.cwd = cwd
        self.folder: Path | None = None
        self.output: list[str] = []
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> DemoProcess:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """Start the process and wait until it serves."""
        self.launch()
        self.wait()

    def launch(self) -> None:
        """Start the process without waiting (``wait()`` later: the start-up overlaps other work)."""
        self._proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL)
        lines: queue.Queue = queue.Queue()

        def pump() -> None:
            for line in self._proc.stdout:
                self.output.append(line)
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        self._lines = lines

    def wait(self) -> None:
        """Until the page serves (RuntimeError with its output if it does not within ``timeout``)."""
        lines = self._lines
        deadline = time.monotonic() + self.timeout
        serving = False
        while not (serving and self.folder is not None):  # both lines are printed at start
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            if line is None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"iqpfr demo did not start within {self.timeout:.0f} s:\n{''.join(self.output)}")
            serving = serving or "serving on" in line
            found = re.search(r"uploads and results in (\S+)", line)
            if found:
                self.folder = Path(found.group(1))

    def stop(self) -> None:
        """SIGTERM (the page then removes its folder), SIGKILL after 15 s."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=15)

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()
