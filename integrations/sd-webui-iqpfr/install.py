"""Run by AUTOMATIC1111 / Forge when the extension is installed: makes sure iqpfr is importable."""

import launch

if not launch.is_installed("iqpfr"):
    # from this repository until iqpfr is on PyPI; the face extra brings the offline dlib detector
    launch.run_pip('install "iqpfr[face,upsample] @ git+https://github.com/iqpfr/iqpfr"', "iqpfr")
