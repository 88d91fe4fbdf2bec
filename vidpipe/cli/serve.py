"""``vidpipe serve``: the gallery and player pages."""

import argparse
import sys

from vidpipe import settings
from vidpipe.cli.common import Command, UserFacingError, project_catalog, project_storage


def serve_player(host: str, port: int) -> None:
    """Run ``vidpipe serve`` (``vidpipe/web/app.py``) on ``host:port`` until interrupted."""
    library = settings.player_library_dir()
    if not (library / "shaka-player.ui.js").is_file():
        raise UserFacingError(
            f"the player library is not installed in {library}: run ./dev.sh run, or npm ci --prefix web"
        )
    import uvicorn

    from vidpipe.web.app import build_app

    print(f"vidpipe player: http://{host}:{port}", file=sys.stderr, flush=True)
    uvicorn.run(build_app(project_storage(), project_catalog(), library), host=host, port=port, log_level="warning")


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None, help="address to listen on; default: $VIDPIPE_HOST or 127.0.0.1")
    parser.add_argument("--port", type=int, default=None, help="port; default: $VIDPIPE_PLAYER_PORT or 3001")


def _serve(args: argparse.Namespace) -> int:
    serve_player(args.host or settings.ui_host(), args.port or settings.player_port())
    return 0


COMMANDS = (
    Command("serve", "the gallery of processed videos and their player pages (a web app)", _serve_arguments, _serve),
)
