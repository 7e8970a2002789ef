"""``iqpfr restore INPUT... -o OUT``: restore every face of whole photos and paste them back.

INPUT: image files, folders (``--recursive`` descends) and globs; .jpg .jpeg .png .webp .bmp .tif
.tiff in any case; videos (mp4, mov, mkv, webm, avi, ... recognised by their first bytes, in folders
too; needs `pip install 'iqpfr[video]'`) are restored streaming, with faces tracked across frames
and every audio/subtitle stream copied, to OUT/final_results/<name>[_suffix].<input's suffix>.
Outputs follow CodeFormer's layout:

    OUT/final_results/<name>[_suffix].<ext>      the whole photo (--save final, the default)
    OUT/cropped_faces/<name>_<NN>.png            aligned input crops (--save crops)
    OUT/restored_faces/<name>_<NN>[_suffix].png  restored crops (--save faces)

Existing outputs are skipped unless --overwrite; inputs are never written. A photo with no face is
copied through (up-scaled if asked). Faces from many photos go through the network together
(--batch-size) while a thread pool reads, detects and writes. Exit code 1 if any photo failed.
"""

from __future__ import annotations

import argparse

SAVE_KINDS = ("final", "faces", "crops")
FOLDERS = {"final": "final_results", "faces": "restored_faces", "crops": "cropped_faces"}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "restore", help="restore the faces of whole photos", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or globs")
    p.add_argument("-o", "--output", "--output_path", default="results", help="output folder (default: results)")
    p.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders of folder inputs")

    g = p.add_argument_group("restoration")
    g.add_argument("-w", "--fidelity", "--fidelity_weight", default="auto", metavar="W[,W...]|auto",
                   help="fidelity weight w in [0, 1]: 0 = best quality, 1 = closest to the input; auto (default): "
                   "each face's own quality (NIQE) sets w and how much of the restoration is used, so a clean "
                   "face passes unchanged; a comma list (-w 0,0.5,1) writes one result per value, suffixed _w<value>")
    g.add_argument("--quality-target", "--quality_target", type=float, default=None,
                   help="target quality in [0, 1] for quality-conditioned models (default: the model's, 0.9)")
    g.add_argument("-s", "--upscale", type=float, default=1.0, help="output scale factor (default 1)")
    g.add_argument("--aligned", "--has_aligned", action="store_true",
                   help="inputs are FFHQ-aligned face crops (no detection)")
    g.add_argument("--color-fix", "--color_fix", choices=("none", "adain", "wavelet"), default="none",
                   help="match restored face colours to the input (default none)")
    g.add_argument("--grayscale", choices=("auto", "on", "off"), default="auto",
                   help="auto: monochrome photos (gray, sepia) keep their tone on restored faces; on: gray faces; off: as restored")
    g.add_argument("--task", choices=("photo", "color"), default="photo",
                   help="photo: face restoration (default); color: face colour enhancement: iqpfr-128 "
                        "(w 0, q 0.95, --grayscale off) gives each face's colours, and a colour transfer from the "
                        "input faces to them recolours the input photo (iqpfr.tasks.color)")
    g.add_argument("--color-transfer", choices=("mk", "diagonal", "lsq", "network"), default="mk",
                   help="--task color: mk (Monge-Kantorovich moment matching in CIELab, default), diagonal "
                        "(per-channel mean/std), lsq (the 3x4 least-squares map with the network's faces pasted) "
                        "or network (the network's faces pasted, nothing else changes)")
    g.add_argument("--whole-photo", choices=("none", "affine"), default="affine",
                   help="--task color: affine (the faces' fitted colour transfer on the whole photo, default) or "
                        "none (only the faces change)")
    g.add_argument("--gray-background", choices=("keep", "tone"), default="keep",
                   help="--task color on a gray photo: keep (only the faces get colour, default) or tone "
                        "(the faces' lightness -> colour map on the whole photo)")
    g.add_argument("--bg-upsampler", "--bg_upsampler", "--bg-upscale", dest="bg_upsampler",
                   choices=("none", "resize", "realesrgan"), default="resize",
                   help="background up-scaling: resize = plain bicubic (default; 'none' means the same), "
                        "realesrgan = the Real-ESRGAN network (pip install 'iqpfr[upsample]'; tiled, slow on CPU)")
    g.add_argument("--face-upsample", "--face_upsample", dest="face_upsample", action="store_const", const=True,
                   default=None,
                   help="up-sample restored faces with the Real-ESRGAN network before pasting them where they "
                        "are larger than the model's output (default: on for the embedded 128-px model when "
                        "the upsample extra is installed)")
    g.add_argument("--no-face-upsample", dest="face_upsample", action="store_const", const=False,
                   help="paste restored faces resized bicubically")
    g.add_argument("--upsampler", default=None, metavar="NAME|PATH",
                   help="super-resolution weights for --bg-upsampler realesrgan / --face-upsample: a zoo name "
                        "(default realesrgan-x4plus; realesr-animevideov3 is ~10x faster) or a file "
                        "(RealESRGAN_x4plus.pth, an iqpfr .safetensors)")
    g.add_argument("--bg-tile", "--bg_tile", type=int, default=400, metavar="PX",
                   help="tile size for the up-sampler in input pixels (0: whole image; default 400)")
    g.add_argument("--bg-tile-overlap", type=int, default=16, metavar="PX",
                   help="context around each tile, blended across neighbours (default 16)")

    g = p.add_argument_group("faces")
    g.add_argument("--detector", "--detection_model", choices=("dlib-hog", "dlib-cnn", "retinaface"),
                   default="dlib-hog", help="face detector (default dlib-hog; dlib-cnn is slower, more robust)")
    g.add_argument("--only-center-face", "--only_center_face", action="store_true",
                   help="restore only the face nearest the centre")
    g.add_argument("--largest-face", "--largest_face", action="store_true", help="restore only the largest face")
    g.add_argument("--min-face-size", "--min_face_size", type=float, default=0.0, metavar="PX",
                   help="skip faces smaller than PX input pixels")
    g.add_argument("--max-faces", "--max_faces", type=int, default=None, metavar="N",
                   help="restore at most the N largest faces per photo")
    g.add_argument("--face-index", "--face_index", default=None, metavar="I,J",
                   help="restore only these faces (0-based, counted left to right), e.g. 0,2")

    g = p.add_argument_group("model")
    g.add_argument("--model", default=None,
                   help="architecture or zoo name (default: the embedded model, iqpfr-128 or iqpfr-256); see `iqpfr weights list`")
    g.add_argument("--weights", default=None, help="weight file (.safetensors/.pth) or zoo name")
    g.add_argument("--random-init", action="store_true",
                   help="use a RANDOMLY INITIALISED --model (tests and demos only: the output is noise)")
    g.add_argument("--offline", action="store_true", help="never download weights")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda[:i] | mps (default auto)")
    g.add_argument("--batch-size", "--batch_size", type=int, default=8, help="faces per network call (default 8)")
    g.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32",
                   help="fp32 (reference, default); bf16 autocast keeping code choice in fp32 (CUDA, or CPUs "
                        "with native bf16); auto picks bf16 where it is native")
    g.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                   help="onnxruntime runs the network exported to ONNX on the CPU (faster on some CPUs)")
    g.add_argument("--cpu-kernels", action="store_true",
                   help="iqpfr's CPU kernels: Winograd 3x3 convolutions (1/4 of the multiply-adds) and fused "
                        "GroupNorm+SiLU; fp32, same output to ~1e-5; compiled on first use (C++ compiler "
                        "and ninja, ~30 s)")
    g.add_argument("--workers", type=int, default=2, help="threads for reading, detection and writing (default 2)")

    g = p.add_argument_group("output")
    g.add_argument("--ext", default="auto", choices=("auto", "png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff"),
                   help="format of final images (auto: the input's)")
    g.add_argument("--jpeg-quality", "--output-quality", type=int, default=95,
                   help="JPEG/WebP quality (default 95)")
    g.add_argument("--suffix", default=None, help="suffix appended to output names")
    g.add_argument("--save", default=None,
                   help="comma list of final,faces,crops (default final; with --aligned: faces,final)")
    g.add_argument("--json", default=None, metavar="REPORT.json",
                   help="write a report: per photo and face, box, landmarks, score, timings")
    g.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: skip them)")
    g.add_argument("--skip-existing", dest="overwrite", action="store_false", help="keep existing outputs (default)")
    g.add_argument("--dry-run", action="store_true", help="list what would be written, load nothing")
    g.add_argument("--max-pixels", type=float, default=None,
                   help="refuse images above this many megapixels (decompression-bomb guard, default 178)")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar or notes, errors only")
    from iqpfr.cli.restore_video import add_video_arguments

    add_video_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``iqpfr restore``; returns the exit code (0 ok, 1 some photo failed)."""
    return RestoreCommand(args).run()


class RestoreCommand:
    """One ``iqpfr restore`` invocation: plan the outputs, restore, write, report."""

    def __init__(self, args: argparse.Namespace):
        from iqpfr.cli import CLIError

        self.args = args
        if getattr(args, "task", "photo") == "color":
            from iqpfr.tasks.color.cli import apply_task_defaults

            apply_task_defaults(args)
        try:
            self.fidelities = [w.strip() if w.strip() == "auto" else float(w)
                               for w in str(args.fidelity).split(",") if w.strip()]
        except ValueError:
            raise CLIError(f"--fidelity takes numbers in [0, 1] or auto (comma-separated to sweep), "
                           f"got {args.fidelity!r}") from None
        if not self.fidelities or not all(w == "auto" or 0.0 <= w <= 1.0 for w in self.fidelities):
            raise CLIError(f"--fidelity must be in [0, 1] or auto, got {args.fidelity}")
        self.fidelities = list(dict.fromkeys(self.fidelities))  # a sweep without repeats
        if args.quality_target is not None and not 0.0 <= args.quality_target <= 1.0:
            raise CLIError(f"--quality-target must be in [0, 1], got {args.quality_target}")
        if not args.upscale > 0:
            raise CLIError(f"--upscale must be positive, got {args.upscale}")
        if args.batch_size < 1 or args.workers < 1:
            raise CLIError("--batch-size and --workers must be at least 1")
        if args.bg_tile < 0 or args.bg_tile_overlap < 0:
            raise CLIError("--bg-tile and --bg-tile-overlap must be >= 0")
        default_save = "faces,final" if args.aligned else "final"
        self.save = {s.strip() for s in (args.save or default_save).split(",") if s.strip()}
        unknown = self.save - set(SAVE_KINDS)
        if unknown or not self.save:
            raise CLIError(f"--save takes a comma list of {', '.join(SAVE_KINDS)}; got {args.save!r}")
        from pathlib import Path

        try:
            self.face_index = None if args.face_index is None else tuple(int(i) for i in args.face_index.split(","))
        except ValueError:
            raise CLIError(f"--face-index takes comma-separated integers, got {args.face_index!r}") from None
        from iqpfr.cli.restore_video import check_video_arguments

        check_video_arguments(args)
        self.out_dir = Path(args.output)
        self.errors: list[str] = []
        self.items: list[dict] = []

    # ---------------------------------------------------------------------------------- planning

    def collect(self) -> None:
        """Expand inputs into planned items; unusable inputs become failed items."""
        from pathlib import Path

        from iqpfr.cli.restore_video import plan_video
        from iqpfr.io import IMAGE_EXTENSIONS, image_files
        from iqpfr.video.io import VIDEO_EXTENSIONS, is_video_file

        seen: set = set()
        names: set[str] = set()
        out_root = self.out_dir.resolve()
        for text in self.args.inputs:
            from_folder = Path(text).is_dir()
            videos = []
            if from_folder:  # every file of a folder shows up in the summary, images or not
                for other in _other_files(Path(text), self.args.recursive, IMAGE_EXTENSIONS, out_root):
                    if is_video_file(other):
                        videos.append((other, other.relative_to(text).with_suffix("").as_posix(), None))
                        continue
                    self.items.append({"input": str(other), "status": "ignored", "note": "not an image file"})
            expanded = list(_expand_input(text, self.args.recursive, IMAGE_EXTENSIONS + VIDEO_EXTENSIONS,
                                          image_files))
            if videos and expanded and expanded[0][2] is not None:  # "folder has no images": it has videos
                expanded = []
            for path, base, error in sorted(expanded + videos, key=lambda e: str(e[0])):
                if error is not None:
                    self.items.append({"input": str(path), "status": "failed", "error": error})
                    continue
                key = path.resolve()
                if from_folder and key.is_relative_to(out_root):
                    continue  # our own earlier outputs inside a scanned folder are not inputs
                if key in seen:
                    continue
                seen.add(key)
                name = base
                if name in names:  # photo.jpg and photo.png in one run
                    name = f"{base}_{path.suffix.lstrip('.').lower()}"
                counter = 2
                while name in names:
                    name, counter = f"{base}_{counter}", counter + 1
                names.add(name)
                video = path.is_file() and is_video_file(path)
                for fidelity in self.fidelities:
                    self.items.append(plan_video(self, path, name, fidelity) if video else self._plan(path, name, fidelity))
        inputs = {item["_path"].resolve() for item in self.items if "_path" in item}
        for item in self.items:
            if "_path" not in item:
                continue
            if any(p.resolve() in inputs for p in item["_targets"]):
                item.update(status="failed", error=f"{item['input']}: an output would overwrite an input; "
                            "choose another -o")

    def _plan(self, path, name: str, fidelity: float) -> dict:
        suffix = f"_{self.args.suffix}" if self.args.suffix else ""
        if len(self.fidelities) > 1:
            suffix += f"_w{fidelity}" if fidelity == "auto" else f"_w{fidelity:g}"
        ext = path.suffix.lower() if self.args.ext == "auto" else f".{self.args.ext}"
        if ext not in (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"):
            ext = ".png"
        final = self.out_dir / FOLDERS["final"] / f"{name}{suffix}{ext}"
        first_face = {
            "faces": self.out_dir / FOLDERS["faces"] / f"{name}_00{suffix}.png",
            "crops": self.out_dir / FOLDERS["crops"] / f"{name}_00.png",
        }
        targets = [final] if "final" in self.save else [first_face[k] for k in ("faces", "crops") if k in self.save]
        item = {"input": str(path), "name": name, "fidelity": fidelity, "status": "pending", "_path": path,
                "_targets": targets, "_suffix": suffix,
                # crops do not depend on w: only the first value of a sweep writes them
                "_write_crops": fidelity == self.fidelities[0]}
        if "final" in self.save:
            item["output"] = str(final)
        if not self.args.overwrite and targets[0].exists():
            item["status"] = "skipped"
            item["note"] = f"{targets[0]} exists (use --overwrite to replace it)"
        return item

    # ----------------------------------------------------------------------------------- running

    def run(self) -> int:
        import sys

        self.collect()
        for item in self.items:
            if item["status"] == "failed":
                self._error(item["error"])
        pending = [item for item in self.items if item["status"] == "pending"]
        if self.args.dry_run:
            return self._dry_run()
        if pending:
            self._restore(pending)
        self._write_report()
        counts = {s: sum(1 for i in self.items if i["status"] == s)
                  for s in ("ok", "no_face", "skipped", "failed", "ignored")}
        faces = sum(len(i.get("faces", [])) for i in self.items)
        ignored = f", {counts['ignored']} not images (ignored)" if counts["ignored"] else ""
        print(
            f"iqpfr restore: {counts['ok']} restored ({faces} faces), {counts['no_face']} without faces, "
            f"{counts['skipped']} skipped (exist), {counts['failed']} failed{ignored} -> {self.out_dir}",
            file=sys.stderr,
        )
        if not any(i["status"] != "ignored" for i in self.items):
            self._error("no input images found")
            return 1
        return 1 if counts["failed"] else 0

    def _dry_run(self) -> int:
        for item in self.items:
            if item["status"] in ("failed", "ignored"):
                continue
            target = item.get("output") or item["_targets"][0]
            state = "skip (exists)" if item["status"] == "skipped" else "write"
            print(f"{item['input']} -> {target} [{state}]")
        print(f"iqpfr restore: dry run, {len(self.items)} input(s), nothing loaded or written")
        return 1 if any(i["status"] == "failed" for i in self.items) else 0

    def _restore(self, pending: list[dict]) -> None:
        import sys

        from iqpfr.cli import CLIError
        from iqpfr.restorer import FaceRestorer, ModelUnavailableError

        args = self.args
        try:
            restorer = FaceRestorer.from_pretrained(
                args.weights, model=args.model, device=args.device, detector=args.detector,
                random_init=args.random_init, offline=args.offline,
                precision=args.precision, backend=args.backend, cpu_kernels=args.cpu_kernels,
            )
        except (ModelUnavailableError, RuntimeError, ValueError) as exc:
            raise CLIError(str(exc)) from None
        face_upsample_asked = bool(args.face_upsample)
        if args.face_upsample is None:
            args.face_upsample = args.upsampler is not None or restorer.default_face_upsample()
        if args.bg_upsampler == "realesrgan" or args.face_upsample:
            restorer.upsampler = self._load_upsampler(restorer)
        if not args.quiet:
            print(f"iqpfr restore: model {restorer.description}, {restorer.face_size} px faces, "
                  f"device {restorer.device}, detector {args.detector}", file=sys.stderr)
        videos = [item for item in pending if item.get("kind") == "video"]
        for fidelity in self.fidelities:
            group = [item for item in pending if item["fidelity"] == fidelity and item.get("kind") != "video"]
            if group:
                self._restore_group(restorer, group, fidelity)
        if videos and getattr(args, "task", "photo") == "color":
            raise CLIError("--task color restores photos only, not videos")
        if videos:
            from iqpfr.cli.restore_video import restore_videos

            args.face_upsample = face_upsample_asked  # per face per frame: only when asked for
            restore_videos(self, restorer, videos)

    def _load_upsampler(self, restorer):
        from iqpfr.cli import CLIError
        from iqpfr.upsample import DEFAULT_UPSAMPLER, Upsampler
        from iqpfr.weights import WeightsError

        args = self.args
        try:
            return Upsampler.from_pretrained(
                args.upsampler or DEFAULT_UPSAMPLER, device=restorer.device, tile=args.bg_tile,
                overlap=args.bg_tile_overlap, offline=args.offline, cpu_kernels=args.cpu_kernels,
            )
        except (WeightsError, FileNotFoundError, ValueError, RuntimeError) as exc:
            raise CLIError(f"up-sampler: {' '.join(str(exc).split())}") from None

    def _restore_group(self, restorer, pending: list[dict], fidelity: float) -> None:
        import sys

        from tqdm import tqdm

        from iqpfr.cli import CLIError
        from iqpfr.face.detect import DetectorUnavailable
        from iqpfr.face.pipeline import FaceFilter
        from iqpfr.restorer import RestoreOptions

        args = self.args
        options = RestoreOptions(
            fidelity=fidelity, quality=args.quality_target, upscale=args.upscale, aligned=args.aligned,
            face_filter=FaceFilter(args.only_center_face, args.largest_face, args.min_face_size, args.max_faces,
                                   self.face_index),
            color_fix=args.color_fix, grayscale=args.grayscale,
            max_pixels=None if args.max_pixels is None else int(args.max_pixels * 1e6),
            bg_upsampler=args.bg_upsampler, face_upsample=args.face_upsample,
        )
        self._by_source = {str(item["_path"]): item for item in pending}
        label = "restore" if len(self.fidelities) == 1 else f"restore w={fidelity}"
        progress = tqdm(total=len(pending), desc=label, unit="img", file=sys.stderr,
                        disable=True if args.quiet else None)
        try:
            stream = restorer.iter_restore(
                [item["_path"] for item in pending], options=options, batch_size=args.batch_size,
                workers=args.workers, finish=self._finish_callback(),
            )
            for position, result in stream:
                self._record(pending[position], result, progress)
                progress.update(1)
        except DetectorUnavailable as exc:
            raise CLIError(str(exc)) from None
        finally:
            progress.close()

    def _finish_callback(self):
        if getattr(self.args, "task", "photo") != "color":
            return self._write_outputs
        from iqpfr.tasks.color.cli import color_finish

        return color_finish(self.args, self._write_outputs)

    def _record(self, item: dict, result, progress) -> None:
        if isinstance(result, BaseException):
            item["status"] = "failed"
            item["error"] = _one_line(result, item["input"])
            self._error(item["error"], progress)
            return
        written, write_notes = result.extra
        item["status"] = "ok" if result.faces else "no_face"
        item["size"] = list(result.output.size)
        item["notes"] = list(result.notes) + write_notes
        item["written"] = [str(p) for p in written]
        item["timings"] = {k: round(v, 5) for k, v in result.timings.items()}
        item["faces"] = []
        for record in result.faces:
            face = record.to_dict()
            if record.landmarks68 is not None:
                face["landmarks68"] = [[round(float(x), 2), round(float(y), 2)] for x, y in record.landmarks68]
            item["faces"].append(face)
        if not self.args.quiet:
            import sys

            for note in item["notes"]:
                progress.write(f"iqpfr restore: {item['input']}: {note}", file=sys.stderr)

    def _write_outputs(self, result) -> tuple[list, list[str]]:
        """Runs in a worker thread: write the planned files of one restored photo."""
        import numpy as np

        from iqpfr.io import ImageWriteError, LoadedImage, format_for_suffix, write_image

        item = self._by_source[str(result.source)]
        name, suffix = item["name"], item["_suffix"]
        overwrite = self.args.overwrite
        written, notes = [], []

        def save(path, image) -> None:
            try:
                notes.extend(f"{path.name}: {n}" for n in write_image(path, image, quality=self.args.jpeg_quality,
                                                                      overwrite=overwrite))
                written.append(path)
            except ImageWriteError:
                if path.exists() and not overwrite:
                    notes.append(f"kept existing {path} (use --overwrite to replace it)")
                else:
                    raise

        for kind, attribute, folder_suffix in (("crops", "crop", ""), ("faces", "restored", suffix)):
            if kind not in self.save or (kind == "crops" and not item["_write_crops"]):
                continue
            for record in result.faces:
                pixels = getattr(record, attribute)
                if pixels is None:
                    continue
                image = LoadedImage(pixels=np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8))
                save(self.out_dir / FOLDERS[kind] / f"{name}_{record.index:02d}{folder_suffix}.png", image)
        if "final" in self.save:
            final = item["_targets"][0]
            source = item["_path"]
            same_format = format_for_suffix(final) == format_for_suffix(source) if source.suffix.lower() in (
                ".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff") else False
            unchanged = not result.faces and self.args.upscale == 1 and self.args.bg_upsampler != "realesrgan"
            if unchanged and same_format:
                # nothing changed: copy the original bytes (all metadata kept, no re-encoding loss)
                from iqpfr.utils.fs import atomic_write_bytes

                try:
                    atomic_write_bytes(final, source.read_bytes(), overwrite=overwrite)
                    written.append(final)
                except FileExistsError:
                    notes.append(f"kept existing {final} (use --overwrite to replace it)")
            else:
                save(final, result.output)
        return written, notes

    # --------------------------------------------------------------------------------- reporting

    def _error(self, message: str, progress=None) -> None:
        import sys

        line = f"iqpfr restore: error: {message}"
        if progress is not None:
            progress.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)

    def _write_report(self) -> None:
        if not self.args.json:
            return
        import json
        import re

        from iqpfr import __version__
        from iqpfr.cli.restore_video import video_settings
        from iqpfr.utils.fs import atomic_write_text

        args = self.args
        report = {
            "iqpfr_version": __version__,
            "settings": {
                "fidelity": self.fidelities if len(self.fidelities) > 1 else self.fidelities[0],
                "quality_target": args.quality_target, "upscale": args.upscale,
                "aligned": args.aligned, "detector": args.detector, "model": args.model, "weights": args.weights,
                "random_init": args.random_init, "color_fix": args.color_fix, "batch_size": args.batch_size,
                "precision": args.precision, "backend": args.backend, "cpu_kernels": args.cpu_kernels,
                "bg_upsampler": args.bg_upsampler, "face_upsample": args.face_upsample,
                "upsampler": args.upsampler, "bg_tile": args.bg_tile,
                "save": sorted(self.save), "output": str(self.out_dir),
                **({"video": video_settings(args)} if any(i.get("kind") == "video" for i in self.items) else {}),
            },
            "images": [{k: v for k, v in item.items() if not k.startswith("_")} for item in self.items],
        }
        text = json.dumps(report, indent=1)
        # keep coordinate lists on one line: [x, y] rather than three lines each
        text = re.sub(r"\[\s+([-+\d.eE,\s]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
        atomic_write_text(args.json, text + "\n")


def _one_line(exc: BaseException, label: str) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if label in text else f"{label}: {text}"


def _other_files(folder, recursive: bool, extensions, out_root):
    """Files of a scanned folder that are not images (hidden files and our own outputs excluded)."""
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in candidates if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() not in extensions and not p.resolve().is_relative_to(out_root))


def _expand_input(text: str, recursive: bool, extensions, image_files):
    """Yield (path, output base name, error or None) for one INPUT argument."""
    import glob
    from pathlib import Path

    path = Path(text)
    if path.is_dir():
        files = image_files(path, recursive=recursive)
        if not files:
            yield path, "", f"{path}: folder has no images ({', '.join(extensions)})"
        for file in files:
            yield file, file.relative_to(path).with_suffix("").as_posix(), None
        return
    if path.exists() or path.is_symlink():
        yield path, path.stem, None
        return
    if any(c in text for c in "*?["):
        matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
        matches = [m for m in matches if m.is_file() and m.suffix.lower() in extensions]
        if not matches:
            yield path, "", f"{text}: no image files match this pattern"
        for match in matches:
            yield match, match.stem, None
        return
    yield path, "", f"{path}: no such file or folder"
