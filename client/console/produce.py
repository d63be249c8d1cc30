"""``annal produce``: one record per line of stdin (Kafka's kafka-console-producer.sh).

    printf 'a\nb\n' | annal produce --topic t
    printf 'k1:v1\n' | annal produce --topic t --key-separator :

Lines are sent without their newline, as UTF-8 bytes; with ``--key-separator`` the text before
the first separator is the key (a line without it has no key). Exits 1 if any record failed
(each failure printed to stderr), after trying every line. A record whose partition has no
live leader fails after ``--delivery-timeout-ms`` with the reason (LEADER_NOT_AVAILABLE and the
broker id); ``--max-block-ms`` bounds only how long a send may wait for metadata or room.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, BinaryIO

from annal.errors import AnnalError

from annal.client.console._common import add_bootstrap, fail
from annal.client.producer import Producer

__all__ = ["configure_parser", "run", "main"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``produce`` options to ``parser``."""
    add_bootstrap(parser)
    parser.add_argument("--topic", required=True, help="topic to write to")
    parser.add_argument("--key-separator", default=None, metavar="SEP",
                        help="split each line at the first SEP into key and value")
    parser.add_argument("--acks", default="1", choices=["0", "1", "all", "-1"], help="acks (default 1)")
    parser.add_argument("--compression", default=None, choices=["none", "lz4"], help="batch compression")
    parser.add_argument("--partition", type=int, default=None, help="write every record to this partition")
    parser.add_argument("--linger-ms", type=int, default=5, help="batching delay (default 5)")
    parser.add_argument("--max-block-ms", type=int, default=60000,
                        help="how long send may block waiting for metadata or buffer room (default 60000)")
    parser.add_argument("--delivery-timeout-ms", type=int, default=120000,
                        help="a record not acknowledged this long after it was read fails, naming the "
                             "last error (default 120000)")


def run(args: argparse.Namespace, stdin: BinaryIO | None = None) -> int:
    """Send every line of stdin; 0 if all were acknowledged."""
    source: Any = stdin if stdin is not None else sys.stdin.buffer
    acks: int | str = "all" if args.acks in ("all", "-1") else int(args.acks)
    sep = args.key_separator.encode("utf-8") if args.key_separator else None
    failures = 0
    try:
        producer = Producer(
            args.bootstrap_server,
            acks=acks,
            compression_type=None if args.compression in (None, "none") else args.compression,
            linger_ms=args.linger_ms,
            max_block_ms=args.max_block_ms,
            delivery_timeout_ms=args.delivery_timeout_ms,
            request_timeout_ms=min(30000, args.delivery_timeout_ms),
        )
    except (AnnalError, ValueError, TypeError) as exc:
        return fail(exc)

    def on_error(exc: BaseException) -> None:
        nonlocal failures
        failures += 1
        fail(exc)

    try:
        for raw in source:
            line = raw.rstrip(b"\r\n") if isinstance(raw, bytes) else raw.rstrip("\r\n").encode("utf-8")
            key = None
            if sep is not None:
                k, found, v = line.partition(sep)
                if found:
                    key, line = k, v
            producer.send(args.topic, line, key=key, partition=args.partition).add_errback(on_error)
        producer.flush()
    except (AnnalError, ValueError, TypeError) as exc:
        producer.close(timeout=0)
        return fail(exc)
    producer.close()
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    """Run as a program: ``python -m annal.client.console.produce ...``."""
    parser = argparse.ArgumentParser(prog="annal produce", description="Produce one record per stdin line.")
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
