"""``vidpipe`` command line: upload files to the inbox, process one file without a daemon, re-run or forget
videos, list them and keep their catalog, or serve the gallery and player pages.

Each command is a ``Command`` (``common``) in the ``COMMANDS`` of its module; a new one goes into the module
of its concern (or a new one) and is found from there.
"""

from __future__ import annotations

import argparse
import os
import sys

from vidpipe.cli import process, serve, uploads, videos
from vidpipe.cli.common import Command, UserFacingError
from vidpipe.cli.process import process_file
from vidpipe.inbox import readable_name
from vidpipe.media.errors import VidpipeError

COMMANDS: tuple[Command, ...] = (*uploads.COMMANDS, *process.COMMANDS, *videos.COMMANDS, *serve.COMMANDS)

__all__ = ["COMMANDS", "UserFacingError", "main", "process_file"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vidpipe", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.arguments(commands.add_parser(command.name, help=command.help))
    args = parser.parse_args(argv)
    [chosen] = [command for command in COMMANDS if command.name == args.command]
    try:
        return chosen.run(args)
    except (UserFacingError, VidpipeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        where = f"{readable_name(os.path.basename(os.fsdecode(err.filename)))}: " if err.filename else ""
        print(f"error: {where}{err.strerror or err}", file=sys.stderr)
        return 1
