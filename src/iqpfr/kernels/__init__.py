"""iqpfr's own CPU kernels for fp32 inference, compiled on first use.

``cpu_kernels.cpp`` holds a Winograd F(4x4, 3x3) convolution (a quarter of the multiply-adds of a
direct 3x3 convolution, same function up to fp32 rounding: about 1e-5 relative) with bias and
residual fused, and a GroupNorm(+SiLU) in two passes over channels-last activations. Direct
convolutions already run near the CPU's matrix-product peak, so doing fewer operations is the only
way a fp32 path can go much faster (see ``benchmarks/inference.py``'s roofline).

The kernels' outputs come from a pool of reused buffers: a released tensor hands its buffer back for
the next output of the same size, so a network's large activations are not page-faulted in again at
every layer of every face (up to 2 GiB of idle buffers are kept; ``load_cpu_kernels().pool_release()``
frees them, ``pool_idle_bytes()`` tells how much is held).

``load_cpu_kernels()`` compiles the source with ``torch.utils.cpp_extension`` (a C++ compiler and
ninja are needed; the first build takes about 30 s) into the iqpfr cache, keyed by the source, the
torch version and the CPU, and imports it. ``iqpfr.kernels.modules.use_cpu_kernels(model)`` puts the
kernels into a network. Nothing here is imported by ``import iqpfr``.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import shutil
import sys
from pathlib import Path
from types import ModuleType

SOURCE = Path(__file__).with_name("cpu_kernels.cpp")


class KernelsUnavailable(RuntimeError):
    """The CPU kernels cannot be built or loaded here (the message says why)."""


def _cpu_fingerprint() -> str:
    """Model name and instruction-set flags: a build with -march=native must not move to another CPU."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
        lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags", "Features", "CPU part"))]
        return "\n".join(sorted(set(lines)))
    except OSError:
        return platform.processor()


def build_directory() -> Path:
    """Where this source, torch version and CPU get their build (inside the iqpfr cache)."""
    import torch

    from iqpfr.weights.cache import cache_root

    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), torch.__version__.encode(), platform.machine().encode(), _cpu_fingerprint().encode()):
        key.update(part)
        key.update(b"\0")
    return cache_root() / "kernels" / key.hexdigest()[:16]


def _compiler_flags() -> list[str]:
    flags = ["-O3"]
    if sys.platform.startswith("linux"):
        flags.append("-fopenmp")  # at::parallel_for's OpenMP regions are compiled into this module
    if platform.machine().lower() in ("x86_64", "amd64", "aarch64", "arm64"):
        flags.append("-march=native")  # the build is keyed by this CPU (build_directory)
    return flags


# the outcome of this process's first load_cpu_kernels(): a failed build is not retried (30 s each)
_LOADED: dict[str, ModuleType | KernelsUnavailable] = {}


def load_cpu_kernels(verbose: bool = False) -> ModuleType:
    """Build (once per machine and version) and import the CPU kernels.

    Returns the extension module (``winograd_conv3x3``, ``group_norm``, ``silu``,
    ``parallel_threads``). Raises ``KernelsUnavailable`` with a one-line reason when no compiler is
    found or the build fails; the outcome is kept for the rest of the process.
    """
    if "outcome" not in _LOADED:
        try:
            _LOADED["outcome"] = build_and_import(verbose)
        except KernelsUnavailable as err:
            _LOADED["outcome"] = err
    outcome = _LOADED["outcome"]
    if isinstance(outcome, KernelsUnavailable):
        raise KernelsUnavailable(str(outcome))
    return outcome


def find_compiler() -> str | None:
    """Path of the C++ compiler a build would use (``c++``, ``g++`` or ``clang++``), or None."""
    return next((found for name in ("c++", "g++", "clang++") if (found := shutil.which(name))), None)


def build_and_import(verbose: bool = False) -> ModuleType:
    """Compile the source into ``build_directory()`` (unless built there already) and import it."""
    if find_compiler() is None:
        raise KernelsUnavailable("iqpfr CPU kernels need a C++ compiler (c++, g++ or clang++ on PATH)")
    try:
        # its import warns that no CUDA runtime is found, which is irrelevant to a CPU build
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        from torch.utils import cpp_extension

        cpp_extension.verify_ninja_availability()
    except (ImportError, RuntimeError) as err:
        raise KernelsUnavailable(f"iqpfr CPU kernels need ninja (pip install ninja): {err}") from None
    directory = build_directory()
    directory.mkdir(parents=True, exist_ok=True)
    name = f"iqpfr_cpu_kernels_{directory.name}"
    try:
        return cpp_extension.load(
            name=name,
            sources=[str(SOURCE)],
            extra_cflags=_compiler_flags(),
            extra_ldflags=["-fopenmp"] if sys.platform.startswith("linux") else [],
            build_directory=str(directory),
            verbose=verbose,
        )
    except Exception as err:  # noqa: BLE001 - compiler errors come as several exception types
        lines = [ln for ln in str(err).splitlines() if "error" in ln.lower()] or [type(err).__name__]
        raise KernelsUnavailable(
            f"iqpfr CPU kernels failed to build in {directory}: {lines[0].strip()[:300]}"
        ) from err


def cpu_kernels_available() -> tuple[bool, str]:
    """(True, "") when the kernels load, else (False, the reason)."""
    try:
        load_cpu_kernels()
    except KernelsUnavailable as err:
        return False, str(err)
    return True, ""
