"""Options and error reporting shared by the console tools."""

from __future__ import annotations

import argparse
import sys

from annal.errors import AnnalError

__all__ = ["add_bootstrap", "fail"]


def add_bootstrap(parser: argparse.ArgumentParser) -> None:
    """The ``--bootstrap-server HOST:PORT`` option (the brokers' gRPC ports)."""
    parser.add_argument(
        "--bootstrap-server",
        default="127.0.0.1:9092",
        metavar="HOST:PORT[,HOST:PORT]",
        help="broker gRPC address(es) (default 127.0.0.1:9092)",
    )


def fail(exc: BaseException) -> int:
    """Print ``Error: ...`` for an Annal error (or bad input) to stderr; exit status 1."""
    if isinstance(exc, AnnalError):
        print(f"Error: {type(exc).__name__}: {exc.message}", file=sys.stderr)
    else:
        print(f"Error: {exc}", file=sys.stderr)
    return 1
