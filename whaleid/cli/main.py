"""The ``whaleid`` command, for what users run by hand (the DVC stages run through :mod:`whaleid.pipeline.stage`).

Every sub-command is one row of :data:`COMMANDS` (:mod:`whaleid.cli.commands` for the pipeline's,
:mod:`whaleid.cli.gallery` for the gallery's): its help, its arguments and the function that runs it. A user error
(bad params, data or input files) is one line and exit status 2, whatever the command.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from whaleid.cli import commands, gallery
from whaleid.cli.commands import Command
from whaleid.core.errors import WhaleidError
from whaleid.core.log import setup_logging
from whaleid.core.memory import tune_malloc

log = logging.getLogger("whaleid")

COMMANDS: dict[str, Command] = {**commands.COMMANDS, **gallery.COMMANDS}


def parser() -> argparse.ArgumentParser:
    from whaleid import __version__

    out = argparse.ArgumentParser(prog="whaleid", description="Photo-ID of individual animals (Happywhale layout).")
    out.add_argument("--version", action="version", version=f"whaleid {__version__}")
    sub = out.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        command.arguments(sub.add_parser(name, help=command.help, description=command.help))
    return out


def main(argv: list[str] | None = None) -> int:
    """The ``whaleid`` command."""
    if argv is None and hasattr(signal, "SIGPIPE"):  # `whaleid params | head`: exit quietly
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    args = parser().parse_args(argv)
    setup_logging()
    tune_malloc()
    try:
        return COMMANDS[args.command].run(args)
    except WhaleidError as exc:
        log.error("%s", exc)
        return 2
    except FileNotFoundError as exc:
        log.error("%s is missing: run `dvc repro` first", exc.filename)
        return 2
    except OSError as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
