"""The page's settings: defaults read from ``iqpfr restore``'s own parser, and the models on offer.

The CLI's argument parser is the one place where defaults (``-w auto``, ``-s 1``, the detector,
colour fix, ...) are written down; the page reads them from it, so the two cannot drift apart.
Models on offer: the embedded default, zoo restoration weights already in the cache (the page
never downloads) and files the person starting the page named with ``--weights``.
"""

from __future__ import annotations

import argparse
import functools
import os
from dataclasses import dataclass
from pathlib import Path

FACE_SELECTIONS = ("all faces", "centre face", "largest face")


@functools.lru_cache(maxsize=1)
def _restore_parser() -> argparse.ArgumentParser:
    from iqpfr.cli import restore

    subparsers = argparse.ArgumentParser().add_subparsers()
    restore.register(subparsers)
    return subparsers.choices["restore"]


def cli_default(dest: str):
    """The default of ``iqpfr restore``'s option ``dest`` (e.g. ``"fidelity"`` -> ``"auto"``)."""
    return _restore_parser().get_default(dest)


def cli_choices(dest: str) -> tuple:
    """The allowed values of ``iqpfr restore``'s option ``dest``."""
    for action in _restore_parser()._actions:
        if action.dest == dest and action.choices is not None:
            return tuple(action.choices)
    raise KeyError(f"iqpfr restore has no option with choices for {dest!r}")


@dataclass(frozen=True)
class PageDefaults:
    """The CLI's defaults in the page's terms."""

    fidelity: str
    upscale: float
    detector: str
    face_selection: str
    color_fix: str
    grayscale: str
    bg_upsampler: str
    bg_tile: int
    bg_tile_overlap: int
    batch_size: int
    workers: int

    @classmethod
    def from_cli(cls) -> PageDefaults:
        if cli_default("only_center_face"):
            selection = FACE_SELECTIONS[1]
        elif cli_default("largest_face"):
            selection = FACE_SELECTIONS[2]
        else:
            selection = FACE_SELECTIONS[0]
        return cls(
            fidelity=str(cli_default("fidelity")), upscale=float(cli_default("upscale")),
            detector=cli_default("detector"), face_selection=selection, color_fix=cli_default("color_fix"),
            grayscale=cli_default("grayscale"), bg_upsampler=cli_default("bg_upsampler"),
            bg_tile=int(cli_default("bg_tile")), bg_tile_overlap=int(cli_default("bg_tile_overlap")),
            batch_size=int(cli_default("batch_size")), workers=int(cli_default("workers")),
        )


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the model menu: ``label`` on the page; ``weights`` as ``FaceRestorer.from_pretrained``
    takes it (None: the embedded default)."""

    label: str
    weights: str | None
    kind: str  # "embedded" | "zoo" | "file"


def model_choices(extra_files: list[str | os.PathLike] = ()) -> list[ModelChoice]:
    """The embedded default first, then cached zoo restoration weights, then ``extra_files``."""
    from iqpfr.restorer import default_model_name, embedded_weights_path
    from iqpfr.weights import ZOO, cached_path, file_status

    default = default_model_name()
    choices = [ModelChoice(f"{default} (built in, default)", None, "embedded")]
    for name, entry in sorted(ZOO.items()):
        if entry.kind != "restoration" or name == default:
            continue
        path = embedded_weights_path(name) if entry.embedded else cached_path(name)
        # only files present and not known to be corrupt: the page never downloads
        if path.is_file() and file_status(entry, path) in ("ok", "unverified"):
            where = "built in" if entry.embedded else "cached"
            choices.append(ModelChoice(f"{name} ({where})", name, "zoo"))
    for file in extra_files:
        path = Path(file).expanduser().resolve()
        choices.append(ModelChoice(f"{path.name} (file given at start)", str(path), "file"))
    return choices


def model_capabilities(model) -> dict[str, bool]:
    """What the page's controls mean for a loaded restoration network: ``fidelity`` (a fixed w
    changes the output: CodeFormer-style fusion), ``quality`` (a quality target changes it)."""
    fusion = getattr(model, "fuse_convs_dict", None)
    quality = getattr(model, "quality_embed", None) is not None or getattr(model, "quality_adapter", None) is not None
    return {"fidelity": bool(fusion is not None and len(fusion) > 0), "quality": bool(quality)}
