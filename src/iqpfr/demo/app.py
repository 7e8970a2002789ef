"""The Gradio page of ``iqpfr demo``: upload photos, restore, before | after, faces, downloads.

``build_app(engine)`` returns the ``gr.Blocks``; ``launch(...)`` serves it offline on
127.0.0.1 (analytics and version check off, system fonts, no share link unless asked, uploads
capped and kept in the engine's private folder). The endpoint ``/restore`` is the page's restore
button, so ``gradio_client`` gets exactly what the page shows::

    from gradio_client import Client, handle_file
    Client("http://127.0.0.1:7860/").predict([handle_file("photo.jpg")], api_name="/restore")
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

from iqpfr.demo.engine import DemoEngine, DemoError, PhotoResult, Settings
from iqpfr.demo.settings import FACE_SELECTIONS, cli_choices

SAMPLE = "astronaut_degraded.jpg"  # shipped in iqpfr/assets: the example needs no download
TITLE = "iqpfr: face restoration"
# a fixed w once "auto" is unticked: CodeFormer's usual middle setting
MANUAL_FIDELITY = 0.5
WORKING = "Working…"

CSS = """
#status p { margin: 0.2em 0; }
#status .error { color: #b91c1c; font-weight: 600; }
"""


def _quiet_gradio() -> None:
    """Before Gradio is imported: no analytics, no version check, no telemetry (offline page)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("GRADIO_CACHE_EXAMPLES", "false")


def import_gradio():
    """Gradio, imported lazily (the ``demo`` extra); a clear message when it is missing."""
    _quiet_gradio()
    try:
        import gradio as gr
    except ImportError:
        raise ImportError("the web demo needs Gradio: pip install 'iqpfr[demo]'") from None
    return gr


def sample_path() -> Path:
    import importlib.resources

    return Path(str(importlib.resources.files("iqpfr") / "assets" / SAMPLE))


def _status(results: list[PhotoResult], total: int, done: bool) -> str:
    import html

    lines = []
    ok = [r for r in results if r.ok]
    faces = sum(len(r.faces) for r in ok)
    if done:
        lines.append(f"**Restored {len(ok)} of {total} file(s), {faces} face(s) in photos.**")
    else:
        lines.append(f"Restoring: {len(results)} of {total} file(s) done…")
    for r in results:
        if r.error:
            lines.append(f'<p class="error">{html.escape(r.error)}</p>')
        else:
            for note in r.notes:
                lines.append(f"<p>{html.escape(note)}</p>")
            what = f"{len(r.faces)} face(s)" if r.kind == "photo" else "restored"
            lines.append(f"<p>{html.escape(r.name)}: {what} in {r.seconds:.1f} s.</p>")
    return "\n".join(lines)


def _view(result: PhotoResult | None):
    """(before | after slider value, face gallery value) for one photo."""
    if result is None or not result.ok:
        return None, []
    return (str(result.before), str(result.output)), [(str(f.image), f.caption()) for f in result.faces]


def build_app(engine: DemoEngine):
    """The page as a ``gr.Blocks`` (not launched)."""
    gr = import_gradio()

    defaults = engine.defaults
    limits = engine.limits
    labels = engine.model_labels
    try:
        caps = engine.capabilities(labels[0])
        caps_error = None
    except DemoError as exc:  # the page still opens and says what is missing
        caps = {"fidelity": True, "quality": False, "default_quality": 0.9, "face_upsample": False}
        caps_error = str(exc)
    example = engine.folder.copy_in(sample_path())
    upsample_ok = _upsample_installed()

    def restore(files, model, auto_fidelity, fidelity, quality, upscale, detector, face_selection,
                color_fix, grayscale, face_upsample, bg_upsampler, progress=gr.Progress()):
        """Restore the uploaded photos and videos; yields after each file."""
        paths = [_path_of(f) for f in (files or [])]
        try:
            capabilities = engine.capabilities(model)
        except DemoError as exc:
            raise gr.Error(str(exc), duration=None) from None
        settings = Settings(
            model=model, fidelity="auto" if auto_fidelity else float(fidelity),
            quality=(float(quality) if capabilities["quality"] and quality is not None
                     and abs(float(quality) - capabilities["default_quality"]) > 1e-9 else None),
            upscale=float(upscale), detector=detector, face_selection=face_selection, color_fix=color_fix,
            grayscale=grayscale, face_upsample=bool(face_upsample), bg_upsampler=bg_upsampler,
        )
        results: list[PhotoResult] = []
        activity: dict = {}
        progress(0, desc="preparing (the first run loads the model)")
        stream = engine.restore(paths, settings, progress=lambda name, done, total: activity.update(
            name=name, done=done, total=total))
        with ThreadPoolExecutor(1, thread_name_prefix="iqpfr-demo") as pool:
            while True:
                # the engine works in a thread; this one reports its progress (Gradio's progress
                # belongs to the request's thread)
                future = pool.submit(next, stream, None)
                while True:
                    try:
                        result = future.result(timeout=0.3)
                        break
                    except FutureTimeout:
                        _report(progress, activity, len(results), len(paths), paths)
                    except DemoError as exc:
                        raise gr.Error(str(exc), duration=None) from None
                    except Exception as exc:  # a bug: still one sentence on the page
                        raise gr.Error(f"Restoration failed ({type(exc).__name__}: {exc}).", duration=None) from None
                if result is None:
                    break
                results.append(result)
                activity.clear()
                photo = next((r for r in results if r.ok and r.kind == "photo"), None)
                video = next((r for r in results if r.ok and r.kind == "video"), None)
                slider, gallery = _view(photo)
                yield (slider, gallery, None if video is None else str(video.output),
                       [str(r.output) for r in results if r.ok],
                       _status(results, len(paths), done=len(results) == len(paths)), results)
                if len(results) == len(paths):
                    stream.close()  # the last file: no further round through the worker thread
                    break
        if results and not any(r.ok for r in results):
            # the API caller gets an error too; the page keeps the sentence in the status box
            raise gr.Error(" ".join(r.error for r in results), duration=None)

    def show(name, results):
        chosen = next((r for r in (results or []) if r.name == name and r.ok and r.kind == "photo"), None)
        return _view(chosen)

    def model_changed(model):
        try:
            c = engine.capabilities(model)
        except DemoError as exc:
            return gr.update(), gr.update(), gr.update(), gr.update(), f'<p class="error">{exc}</p>'
        note = [f"Model: {c['description']}."]
        if not c["fidelity"]:
            note.append("This model has no fidelity weight: only automatic fidelity (how much of the "
                        "restoration is used, by face quality) applies.")
        return (gr.update(visible=c["fidelity"]), gr.update(),
                gr.update(visible=c["quality"], value=c["default_quality"]),
                gr.update(value=c["face_upsample"]), " ".join(note))

    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(600, 3600)) as app:
        gr.Markdown(f"# {TITLE}\nRestore the faces of your photos on this computer: nothing leaves it. "
                    f"Same engine and defaults as `iqpfr restore`.\n\n{limits.describe()}")
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(label="Photos or videos", file_count="multiple", file_types=["image", "video"],
                                elem_id="inputs")
                gr.Examples([[[str(example)]]], inputs=[files], label="Example photo (shipped with iqpfr)",
                            cache_examples=False)
                model = gr.Dropdown(labels, value=labels[0], label="Model", elem_id="model")
                auto = gr.Checkbox(value=defaults.fidelity == "auto", elem_id="auto-fidelity",
                                   label="Automatic fidelity: each face by its own quality (a clean face is kept)",
                                   visible=True)
                fidelity = gr.Slider(0.0, 1.0, value=MANUAL_FIDELITY, step=0.05, elem_id="fidelity",
                                     label="Fidelity w: 0 = most restoration, 1 = closest to the input",
                                     interactive=defaults.fidelity != "auto", visible=caps["fidelity"])
                quality = gr.Slider(0.0, 1.0, value=caps["default_quality"], step=0.1, elem_id="quality",
                                    label="Quality target (quality-conditioned models)", visible=caps["quality"])
                upscale = gr.Slider(1.0, limits.max_upscale, value=defaults.upscale, step=0.5, label="Upscale",
                                    elem_id="upscale")
                with gr.Accordion("More settings", open=False):
                    detector = gr.Radio(list(cli_choices("detector")), value=defaults.detector,
                                        label="Face detector")
                    selection = gr.Radio(list(FACE_SELECTIONS), value=defaults.face_selection, label="Faces")
                    color_fix = gr.Radio(list(cli_choices("color_fix")), value=defaults.color_fix,
                                         label="Colour fix (match restored faces to the input's colours)")
                    grayscale = gr.Radio(list(cli_choices("grayscale")), value=defaults.grayscale,
                                         label="Monochrome photos keep their tone (auto), or force on / off")
                    face_upsample = gr.Checkbox(
                        value=caps["face_upsample"], visible=upsample_ok, elem_id="face-upsample",
                        label="Real-ESRGAN on restored faces of photos (sharper when faces are pasted larger; slow on a "
                              "CPU; videos: off, as in iqpfr restore)")
                    backgrounds = ["resize", "realesrgan"] if upsample_ok else ["resize"]
                    bg_upsampler = gr.Radio(backgrounds, value=defaults.bg_upsampler,
                                            label="Background up-scaling (realesrgan: slow on a CPU)")
                with gr.Row():
                    run = gr.Button("Restore", variant="primary", elem_id="restore")
                    cancel = gr.Button("Cancel", elem_id="cancel")
            with gr.Column(scale=2):
                status = gr.Markdown(caps_error or "Upload photos (or pick the example) and press Restore.",
                                     label="Status", elem_id="status")
                slider = gr.ImageSlider(label="Before | after", type="filepath", format="png", elem_id="result")
                picker = gr.Dropdown([], label="Photo shown", visible=False, elem_id="picker")
                video = gr.Video(label="Restored video", elem_id="video", interactive=False, visible=False)
                gallery = gr.Gallery(label="Faces: before | after", columns=2, height="auto", preview=False,
                                     object_fit="contain", format="png", elem_id="faces")
                downloads = gr.File(label="Download the restored photos (PNG)", file_count="multiple",
                                    elem_id="downloads")
                state = gr.State([])

        inputs = [files, model, auto, fidelity, quality, upscale, detector, selection, color_fix, grayscale,
                  face_upsample, bg_upsampler]
        # the status first says "Working", so "Restored ..." always means this run has finished
        event = run.click(lambda: WORKING, None, status, api_visibility="private", queue=False).then(
            restore, inputs, [slider, gallery, video, downloads, status, state], api_name="restore",
            concurrency_limit=1)
        # page only (not the API): the photo menu, and the video player only when there is a video
        event.then(lambda results: (_picker(gr, results), gr.update(visible=any(
            r.ok and r.kind == "video" for r in results or []))), state, [picker, video], api_visibility="private")
        # Gradio drops the running job; the engine stops it (before the next file, a video mid-way)
        cancel.click(engine.cancel, None, None, cancels=[event], api_visibility="private", queue=False)
        auto.change(lambda a: gr.update(interactive=not a), auto, fidelity, api_visibility="private")
        picker.change(show, [picker, state], [slider, gallery], api_visibility="private")
        model.change(model_changed, model, [fidelity, auto, quality, face_upsample, status],
                     api_visibility="private")
    return app


def _report(progress, activity: dict, finished: int, total: int, paths: list[str]) -> None:
    """Gradio's progress bar: a video by its frames, a photo by its place in the batch."""
    if activity.get("total"):
        progress((activity["done"], activity["total"]), desc=f"{activity['name']}: frames", unit="frames")
    elif finished < total:
        progress((finished, total), desc=f"restoring {Path(paths[finished]).name}", unit="files")


def _picker(gr, results: list[PhotoResult]):
    names = [r.name for r in results if r.ok and r.kind == "photo"]
    return gr.update(choices=names, value=names[0] if names else None, visible=len(names) > 1)


def _path_of(item) -> str:
    """Gradio hands over file paths (str) or FileData-like objects."""
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    return getattr(item, "path", None) or getattr(item, "name", None) or str(item)


def _upsample_installed() -> bool:
    import importlib.util

    from iqpfr.weights.realesrgan import PACKAGE_MODULE

    return importlib.util.find_spec(PACKAGE_MODULE) is not None


def launch(engine: DemoEngine, *, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
           block: bool = True, quiet: bool = False):
    """Serve the page; returns (app, local URL). ``block=False`` returns at once (tests)."""
    engine.folder.point_gradio_here()  # before Gradio builds components: they read it then
    gr = import_gradio()
    app = build_app(engine)
    app.queue(default_concurrency_limit=1, max_size=16)
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    _, url, _ = app.launch(
        server_name=host, server_port=port, share=share, prevent_thread_lock=True, quiet=quiet,
        max_file_size=f"{engine.limits.max_upload_mb}mb", allowed_paths=[], ssr_mode=False, pwa=False,
        mcp_server=False, footer_links=["api"], theme=theme, css=CSS, show_error=False,
    )
    if block:
        try:
            app.block_thread()
        finally:
            app.close()
            engine.folder.remove()
    return app, url
