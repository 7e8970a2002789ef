"""``iqpfr demo``: a local web page (Gradio, the ``demo`` extra) that restores photos.

    iqpfr demo                     # http://127.0.0.1:7860, offline, nothing shared
    iqpfr demo --host 0.0.0.0      # reachable from the local network (say so explicitly)

Modules: ``limits`` (what the page accepts, stated on the page), ``uploads`` (the private folder
every upload and result lives in), ``settings`` (the CLI's defaults and the models on offer),
``engine`` (restoration without Gradio: what the page and its API call), ``app`` (the Gradio
Blocks). Importing this package imports neither torch nor Gradio.
"""

from __future__ import annotations

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT"]
