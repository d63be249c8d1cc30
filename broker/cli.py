"""The ``annal`` command: one entry point, a subcommand per tool.

Each subcommand lives with the subsystem it drives and exposes ``configure_parser(parser)``
and ``run(args) -> int``; this module only wires them up and imports each lazily, so that
``annal dump-log`` does not import gRPC and ``annal --help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["build_parser", "main"]

# name -> (module, help)
_COMMANDS: dict[str, tuple[str, str]] = {
    "broker": ("annal.broker.server.main", "run a broker (standalone or in a ZooKeeper cluster)"),
    "cluster": ("annal.broker.coordination.local_cluster", "run a local ZooKeeper + N-broker cluster"),
    "topics": ("annal.client.console.topics", "create, list, describe and delete topics"),
    "produce": ("annal.client.console.produce", "produce one record per stdin line"),
    "consume": ("annal.client.console.consume", "print records to stdout"),
    "dump-log": ("annal.broker.storage.dump_log", "print the batches of segment files"),
    "health": ("annal.broker.server.health", "ask a broker whether it serves (exit 0 when healthy)"),
}


def version_line() -> str:
    """``annal X.Y.Z (codec: native C extension|pure Python), Python A.B.C``: which codec runs."""
    import platform

    import annal
    from annal.record import _impl

    if _impl.native is not None:
        codec = "native C extension"
    elif _impl.available is not None:
        codec = "pure Python (ANNAL_PURE_PYTHON is set)"
    else:
        codec = "pure Python (the C extension is not built)"
    return f"annal {annal.__version__} (codec: {codec}), Python {platform.python_version()}"


class _VersionAction(argparse.Action):
    """--version, computed only when asked (it imports the codec)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: object) -> None:
        super().__init__(option_strings, dest=dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the version and which codec implementation runs, then exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(version_line())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="annal", description="Annal: a Kafka-style log broker")
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        module.configure_parser(p)
        p.set_defaults(_run=module.run)
    return parser


def _parser_for(argv: list[str]) -> argparse.ArgumentParser:
    """Build only the subcommand named in argv (fast path); the full parser otherwise."""
    if argv and argv[0] in _COMMANDS:
        parser = argparse.ArgumentParser(prog="annal")
        sub = parser.add_subparsers(dest="command", required=True)
        module_name, help_text = _COMMANDS[argv[0]]
        p = sub.add_parser(argv[0], help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        module.configure_parser(p)
        p.set_defaults(_run=module.run)
        return parser
    return build_parser()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser_for(argv).parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
