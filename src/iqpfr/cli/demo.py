"""``iqpfr demo``: a local web page that restores photos (Gradio, ``pip install 'iqpfr[demo]'``).

The page runs offline on this computer: bound to 127.0.0.1 unless --host is given, no public
share link unless --share, nothing downloaded at start. Uploads and results live in a private
temporary folder that is removed when the page stops. Its restore button is also an API endpoint
(``/restore``) for ``gradio_client``. Defaults are ``iqpfr restore``'s.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from iqpfr.demo import DEFAULT_HOST, DEFAULT_PORT
    from iqpfr.demo.limits import Limits

    limits = Limits()
    p = subparsers.add_parser(
        "demo", help="a local web page that restores photos (pip install 'iqpfr[demo]')", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to listen on (default {DEFAULT_HOST}: this computer only; 0.0.0.0 opens it "
                        "to the network)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free one)")
    p.add_argument("--share", action="store_true",
                   help="also ask Gradio for a public share link (needs the internet; off by default)")
    p.add_argument("--weights", action="append", default=[], metavar="FILE",
                   help="a local weight file (.safetensors/.pth) to offer in the model menu; repeatable")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i] | mps (default auto)")
    p.add_argument("--max-side", type=int, default=limits.max_side, metavar="PX",
                   help=f"largest input side the page accepts (default {limits.max_side})")
    p.add_argument("--max-faces", type=int, default=limits.max_faces, metavar="N",
                   help=f"faces restored per photo, the largest ones (default {limits.max_faces})")
    p.add_argument("--max-upload-mb", type=int, default=limits.max_upload_mb, metavar="MB",
                   help=f"size cap of one uploaded file (default {limits.max_upload_mb})")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the address")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import sys
    from pathlib import Path

    from iqpfr.cli import CLIError
    from iqpfr.demo.limits import Limits

    if not 0 <= args.port <= 65535:
        raise CLIError(f"--port must be in 0..65535, got {args.port}")
    for name in ("max_side", "max_faces", "max_upload_mb"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be at least 1")
    for file in args.weights:
        if not Path(file).expanduser().is_file():
            raise CLIError(f"--weights {file}: no such file")
    limits = dataclasses.replace(Limits(), max_side=args.max_side, max_faces=args.max_faces,
                                 max_upload_mb=args.max_upload_mb,
                                 max_output_side=max(Limits().max_output_side, args.max_side))
    try:
        from iqpfr.demo.app import import_gradio

        import_gradio()
    except ImportError as exc:
        raise CLIError(str(exc)) from None

    from iqpfr.demo.engine import DemoEngine
    from iqpfr.demo.uploads import PrivateFolder

    folder = PrivateFolder()
    folder.point_gradio_here()
    engine = DemoEngine(folder, limits, device=args.device, extra_weights=args.weights)
    from iqpfr.demo.app import launch

    try:
        app, url = launch(engine, host=args.host, port=args.port, share=args.share, block=False, quiet=True)
    except OSError as exc:  # port taken
        folder.remove()
        raise CLIError(f"cannot serve on {args.host}:{args.port} ({exc}); choose another --port") from None
    local = url if args.host not in ("0.0.0.0", "::") else url.replace(args.host, "127.0.0.1")
    print(f"iqpfr demo: serving on {local} (Ctrl+C to stop)", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"iqpfr demo: listening on {args.host}: other computers on the network can open this page",
              file=sys.stderr, flush=True)
    if getattr(app, "share_url", None):
        print(f"iqpfr demo: public share link {app.share_url}", flush=True)
    if not args.quiet:
        print(f"iqpfr demo: uploads and results in {folder.root} (removed when the page stops)",
              file=sys.stderr, flush=True)
    import signal

    def _stop(signum, frame):  # a plain kill also removes the private folder
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        app.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        app.close()
        folder.remove()
    print("iqpfr demo: stopped", file=sys.stderr, flush=True)
    return 0
