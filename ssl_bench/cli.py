"""The ``ssl-bench`` command line: the parser and the dispatch to ``ssl_bench.commands.<command>``.

Bad input (a misspelt plugin, a broken protocol, an unwritable folder) ends with one line
on stderr saying what to fix, and exit status 2; ``--debug`` shows the traceback instead.
Output into a pipe that closes early (``ssl-bench show F | head``) ends quietly with status 0.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

import ssl_bench
from ssl_bench.errors import UserError

#: the commands, in the order ``--help`` lists them; each is the module ``ssl_bench.commands.<name>``
COMMANDS = (
    "run",
    "sweep",
    "stream-export",
    "list",
    "show",
    "plot",
    "leaderboard",
    "report",
    "eval",
    "export",
    "check",
    "submit",
    "verify",
)


def command_module(name: str):
    return importlib.import_module(f"ssl_bench.commands.{name.replace('-', '_')}")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars, warnings only")
    parser = argparse.ArgumentParser(
        prog="ssl-bench", description="Benchmark self-supervised pre-training on streaming data.", parents=[common]
    )
    parser.add_argument("--version", action="version", version=f"ssl-bench {ssl_bench.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = command_module(name)
        p = sub.add_parser(name, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP), parents=[common])
        module.add_arguments(p)
        p.set_defaults(handler=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.debug, args.quiet = getattr(args, "debug", False), getattr(args, "quiet", False)  # flags go before or after COMMAND
    if args.command is None:
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="ssl-bench: %(message)s", stream=sys.stderr)
    try:
        from tqdm.contrib.logging import logging_redirect_tqdm

        with logging_redirect_tqdm():
            code = args.handler(args)
            sys.stdout.flush()  # here, so that a closed pipe is seen below and not at exit
            return code
    except BrokenPipeError:
        # the reader went away (ssl-bench show F | head): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except UserError as err:
        if args.debug:
            raise
        print(f"ssl-bench: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ssl-bench: interrupted; run the same command again to resume from the last finished phase", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - turned into one line unless --debug
        if args.debug:
            raise
        from ssl_bench.registry import plugin_of_exception

        where = plugin_of_exception(err)
        origin = f" in {where}" if where else ""
        print(f"ssl-bench: error{origin}: {type(err).__name__}: {err} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
