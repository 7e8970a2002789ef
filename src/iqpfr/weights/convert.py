"""Convert official ``.pth`` checkpoints (CodeFormer, GFPGAN, IQPIR) to ``.safetensors`` + ``config.json``.

Reading goes through ``iqpfr.weights.checkpoint.load_state_dict_file`` (safetensors, or
``torch.load(weights_only=True, map_location="cpu")`` taking ``params_ema`` before ``params``).
The output carries its config twice: in the safetensors metadata (key ``config``, the format
``iqpfr.load_model`` reads) so the file alone is self-describing, and in ``config.json``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

_log = logging.getLogger(__name__)


def match_preset(state: dict[str, Any]) -> str | None:
    """The ``create_model`` preset whose parameter names and shapes equal ``state``'s, if any.

    Models are built on the ``meta`` device (no memory, no init cost); presets whose module
    cannot be built are skipped. Presets of the family guessed from the key names go first.
    """
    import torch

    from iqpfr.models.factory import PRESETS, create_model
    from iqpfr.weights.checkpoint import infer_architecture

    shapes = {k: tuple(v.shape) for k, v in state.items()}
    try:
        family = infer_architecture(state).split("-")[0]
    except ValueError:
        family = ""
    for name in sorted(PRESETS, key=lambda n: (not n.startswith(family), n)):
        try:
            with torch.device("meta"):
                model = create_model(name)
        except Exception:  # a preset whose module is missing or broken is not a candidate
            continue
        if {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes:
            return name
    return None


def convert_checkpoint(
    src: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    architecture: str | None = None,
    licence: str | None = None,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Write ``src`` as safetensors + config.json; returns ``(weights_path, config_path)``.

    ``out`` is a folder (gets ``model.safetensors`` and ``config.json``; default: a folder named
    after ``src`` next to it) or a ``.safetensors`` file (config goes to ``<stem>.json`` beside it).
    ``architecture`` defaults to the preset whose shapes match (else the one guessed from the key
    names; ValueError when neither works). Existing outputs are kept (FileExistsError) unless
    ``overwrite``. Writes are atomic.
    """
    from safetensors.torch import save_file

    from iqpfr import __version__
    from iqpfr.utils.fs import atomic_write_text, atomic_write_with
    from iqpfr.weights.cache import sha256_file
    from iqpfr.weights.checkpoint import FORMAT, METADATA_KEY, infer_architecture, load_state_dict_file
    from iqpfr.weights.zoo import entry_for_filename

    src = Path(src)
    weights_path, config_path = output_paths(src, out)
    for path in (weights_path, config_path):
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path}: exists (pass --overwrite to replace it)")

    state = load_state_dict_file(src)
    if architecture is None:
        architecture = match_preset(state)
        if architecture is None:
            try:
                architecture = infer_architecture(state)
            except ValueError:
                raise ValueError(
                    f"{src}: cannot tell the architecture from its keys; pass --arch PRESET"
                ) from None
            _log.warning(
                "%s: shapes match no preset; recorded the key-name guess %r (see --arch)", src, architecture
            )
    source_sha256 = sha256_file(src)
    if licence is None:
        entry = entry_for_filename(src.name)
        known = entry is not None and entry.sha256 == source_sha256
        licence = entry.licence if known else "unknown: the licence of the source checkpoint applies"
    config = {
        "format": FORMAT,
        "architecture": architecture,
        "model_args": {},
        "source_file": src.name,
        "source_sha256": source_sha256,
        "licence": licence,
        "converted_by": f"iqpfr {__version__} (iqpfr weights convert)",
    }
    # safetensors refuses tensors that share memory and wants contiguous ones
    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
    metadata = {METADATA_KEY: json.dumps(config, sort_keys=True), "format": "pt"}
    atomic_write_with(
        weights_path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata), overwrite=overwrite
    )
    atomic_write_text(config_path, json.dumps(config, indent=2, sort_keys=True) + "\n", overwrite=overwrite)
    return weights_path, config_path


def output_paths(src: Path, out: str | os.PathLike | None) -> tuple[Path, Path]:
    """The ``(weights, config)`` paths ``convert_checkpoint`` writes for ``src`` and ``out``."""
    if out is None:
        folder = src.with_suffix("")
        if folder == src:
            folder = src.with_name(src.name + "_converted")
        return folder / "model.safetensors", folder / "config.json"
    out = Path(out)
    if out.suffix == ".safetensors":
        return out, out.with_suffix(".json")
    return out / "model.safetensors", out / "config.json"
