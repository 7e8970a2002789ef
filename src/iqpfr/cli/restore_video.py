"""The video half of ``iqpfr restore``: its options, the planning of a video's output and the run.

A video (found by its first bytes or its suffix, also inside folders next to photos) is restored to
``OUT/final_results/<name>[_suffix].<input's suffix>`` by ``iqpfr.video`` (streaming; audio and
subtitles copied; faces tracked). PyAV comes with ``pip install 'iqpfr[video]'``.
"""

from __future__ import annotations

import argparse
import sys


def add_video_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("video (inputs detected by content: mp4, mov, mkv, webm, avi, ...)")
    g.add_argument("--video-codec", default="h264", metavar="NAME|same",
                   help="video encoder: h264 (libx264, default), same (the input's codec when it can be encoded), "
                        "or an FFmpeg encoder name (libx265, libvpx-vp9, mpeg4...)")
    g.add_argument("--crf", type=float, default=18, help="x264/x265/vpx constant-quality factor (default 18; lower is better)")
    g.add_argument("--preset", default="medium", help="x264/x265 speed preset (default medium)")
    g.add_argument("--start", type=float, default=0.0, metavar="SEC", help="restore from this time (seconds)")
    g.add_argument("--duration", type=float, default=None, metavar="SEC", help="restore this many seconds")
    g.add_argument("--max-frames", type=int, default=None, metavar="N", help="restore at most N frames")
    g.add_argument("--no-tracking", dest="tracking", action="store_false",
                   help="restore every frame on its own (detection on every frame, no smoothing or blending)")
    g.add_argument("--detect-every", type=int, default=5, metavar="N",
                   help="full face detection every N frames while tracks hold (landmarks refined in between; default 5)")
    g.add_argument("--smooth-sigma", type=float, default=1.5, metavar="FRAMES",
                   help="centred Gaussian smoothing of the landmarks over time (default 1.5 frames; 0 off)")
    g.add_argument("--temporal-blend", type=float, default=0.6, metavar="G",
                   help="blend of each restored face with its previous frame where the input did not change "
                        "(0..0.9, default 0.6; 0 off)")


def video_settings(args: argparse.Namespace) -> dict:
    return {"video_codec": args.video_codec, "crf": args.crf, "preset": args.preset, "start": args.start,
            "duration": args.duration, "max_frames": args.max_frames, "tracking": args.tracking,
            "detect_every": args.detect_every, "smooth_sigma": args.smooth_sigma,
            "temporal_blend": args.temporal_blend}


def check_video_arguments(args: argparse.Namespace) -> None:
    from iqpfr.cli import CLIError

    if args.start < 0 or (args.duration is not None and args.duration <= 0):
        raise CLIError("--start must be >= 0 and --duration > 0")
    if args.max_frames is not None and args.max_frames < 1:
        raise CLIError("--max-frames must be at least 1")
    if args.detect_every < 1 or args.smooth_sigma < 0 or not 0 <= args.temporal_blend <= 0.9:
        raise CLIError("--detect-every >= 1, --smooth-sigma >= 0 and --temporal-blend in [0, 0.9]")


def plan_video(command, path, name: str, fidelity) -> dict:
    """The planned item of one video input (the same keys as a photo's)."""
    from iqpfr.video.io import output_suffix

    args = command.args
    suffix = f"_{args.suffix}" if args.suffix else ""
    if len(command.fidelities) > 1:
        suffix += f"_w{fidelity}" if fidelity == "auto" else f"_w{fidelity:g}"
    final = command.out_dir / "final_results" / f"{name}{suffix}{output_suffix(path)}"
    item = {"input": str(path), "name": name, "kind": "video", "fidelity": fidelity, "status": "pending",
            "_path": path, "_targets": [final], "_suffix": suffix, "output": str(final)}
    if not args.overwrite and final.exists():
        item["status"] = "skipped"
        item["note"] = f"{final} exists (use --overwrite to replace it)"
    return item


def restore_videos(command, restorer, items: list[dict]) -> None:
    """Restore each planned video in turn; a failure is one error line and the batch goes on."""
    from tqdm import tqdm

    from iqpfr.cli import CLIError
    from iqpfr.face.detect import DetectorUnavailable
    from iqpfr.face.pipeline import FaceFilter
    from iqpfr.restorer import RestoreOptions
    from iqpfr.video.io import DEFAULT_MAX_FRAME_PIXELS, VideoError, VideoUnavailable
    from iqpfr.video.tracking import TrackingOptions

    args = command.args
    tracking = (TrackingOptions(detect_every=args.detect_every, smooth_sigma=args.smooth_sigma,
                                blend=args.temporal_blend) if args.tracking else TrackingOptions.independent())
    if args.face_upsample and restorer.device.type == "cpu" and not args.quiet:
        print("iqpfr restore: note: --face-upsample runs the super-resolution network on every face of every "
              "frame (slow on a CPU)", file=sys.stderr)
    for item in items:
        from iqpfr.video.pipeline import VideoOptions

        options = VideoOptions(
            codec=args.video_codec, crf=args.crf, preset=args.preset, start=args.start, duration=args.duration,
            max_frames=args.max_frames, tracking=tracking, batch_size=args.batch_size, overwrite=args.overwrite,
            max_pixels=DEFAULT_MAX_FRAME_PIXELS if args.max_pixels is None else int(args.max_pixels * 1e6),
        )
        restore_options = RestoreOptions(
            fidelity=item["fidelity"], quality=args.quality_target, upscale=args.upscale,
            face_filter=FaceFilter(args.only_center_face, args.largest_face, args.min_face_size, args.max_faces,
                                   command.face_index),
            color_fix=args.color_fix, grayscale=args.grayscale, bg_upsampler=args.bg_upsampler,
            face_upsample=bool(args.face_upsample),
        )
        bar = None
        try:
            from iqpfr.video.io import probe_video

            info = probe_video(item["_path"], max_pixels=options.max_pixels)
            total = info.estimated_frames() or None
            if args.max_frames:
                total = min(total or args.max_frames, args.max_frames)
            bar = tqdm(total=total, desc=f"{item['_path'].name}", unit="frame", file=sys.stderr,
                       disable=True if args.quiet else None)
            from iqpfr.video.pipeline import restore_video

            result = restore_video(restorer, item["_path"], item["_targets"][0], options=options,
                                   restore_options=restore_options, progress=bar.update)
        except DetectorUnavailable as exc:
            raise CLIError(str(exc)) from None
        except FileExistsError as exc:  # appeared since planning: kept
            item.update(status="skipped", note=str(exc))
            continue
        except (VideoError, VideoUnavailable, OSError) as exc:
            item.update(status="failed", error=_one_line(exc, item["input"]))
            command._error(item["error"], bar)
            continue
        except Exception as exc:  # anything else fails this video, not the batch
            item.update(status="failed", error=_one_line(exc, item["input"]) + f" ({type(exc).__name__})")
            command._error(item["error"], bar)
            continue
        finally:
            if bar is not None:
                bar.close()
        report = result.to_dict()
        item["status"] = "ok" if result.tracks else "no_face"
        item["written"] = [str(result.output)]
        item["notes"] = report["notes"]
        item["video"] = {k: report[k] for k in ("video", "frames", "face_frames", "seconds", "fps", "detections",
                                                "refinements", "timings")}
        item["tracks"] = report["tracks"]
        item["faces"] = report["tracks"]  # the summary line counts faces: one per track
        if not args.quiet:
            print(f"iqpfr restore: {item['input']}: {result.frames} frames, {len(result.tracks)} face track(s), "
                  f"{result.fps:.2f} frames/s -> {result.output}", file=sys.stderr)
            for note in item["notes"]:
                print(f"iqpfr restore: {item['input']}: {note}", file=sys.stderr)


def _one_line(exc: BaseException, label: str) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if label in text else f"{label}: {text}"
