"""``annal consume``: print records to stdout (Kafka's kafka-console-consumer.sh).

    annal consume --topic t --from-beginning --max-messages 10
    annal consume --topic t --partition 0 --offset 42 --print-offset --print-key

Values (and keys with ``--print-key``) are printed as UTF-8 text (invalid bytes replaced;
``null`` for a null), one record per line; ``--print-offset`` prefixes
``Partition:P<TAB>Offset:O<TAB>``. Without ``--from-beginning`` or ``--offset`` only new
records are printed. Stops after ``--max-messages``, after ``--timeout-ms`` without a record,
or on Ctrl-C, then prints ``Processed a total of N messages`` to stderr. Exits 1 with the
reason (``Error: BrokerNotAvailableError: ...``, ``Error: UnknownTopicOrPartitionError: ...``)
when, at that point, no broker answers or the topic does not exist.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

from annal.errors import AnnalError, LocalUsageError

from annal.client.console._common import add_bootstrap, fail
from annal.client.consumer import Consumer
from annal.client.structs import ConsumerRecord, TopicPartition

__all__ = ["configure_parser", "run", "main", "format_record"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``consume`` options to ``parser``."""
    add_bootstrap(parser)
    parser.add_argument("--topic", required=True, help="topic to read")
    parser.add_argument("--from-beginning", action="store_true", help="start at the earliest offset")
    parser.add_argument("--partition", type=int, default=None, help="read only this partition")
    parser.add_argument("--offset", default=None,
                        help="with --partition: start offset, or 'earliest' / 'latest'")
    parser.add_argument("--max-messages", type=int, default=None, help="stop after N records")
    parser.add_argument("--group", default=None, help="consumer group (needs --zookeeper)")
    parser.add_argument("--zookeeper", default=None, metavar="HOST:PORT[/chroot]",
                        help="ZooKeeper of the cluster (needed for --group)")
    parser.add_argument("--print-key", action="store_true", help="print KEY<TAB>VALUE")
    parser.add_argument("--print-offset", action="store_true", help="prefix Partition:P<TAB>Offset:O<TAB>")
    parser.add_argument("--key-separator", default="\t", help="between key and value (default TAB)")
    parser.add_argument("--timeout-ms", type=int, default=None,
                        help="stop after this long without a record (default: run until Ctrl-C)")


def _text(b: bytes | None) -> str:
    return "null" if b is None else b.decode("utf-8", "replace")


def format_record(r: ConsumerRecord, print_key: bool, print_offset: bool, key_separator: str = "\t") -> str:
    """One output line for a record (without the newline)."""
    parts = []
    if print_offset:
        parts.append(f"Partition:{r.partition}\tOffset:{r.offset}\t")
    if print_key:
        parts.append(_text(r.key) + key_separator)
    parts.append(_text(r.value))
    return "".join(parts)


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Print records until a stop condition; 0 on a normal stop."""
    stdout = out if out is not None else sys.stdout
    stderr = err if err is not None else sys.stderr
    count = 0
    try:
        if args.offset is not None and args.partition is None:
            raise LocalUsageError("--offset needs --partition")
        reset = "earliest" if args.from_beginning else "latest"
        kwargs: dict[str, Any] = dict(bootstrap_servers=args.bootstrap_server, auto_offset_reset=reset)
        if args.group is not None:
            kwargs.update(group_id=args.group, zookeeper=args.zookeeper)
        if args.partition is not None:
            consumer = Consumer(**kwargs)
            tp = TopicPartition(args.topic, args.partition)
            consumer.assign([tp])
            if args.offset in (None, "latest", "earliest"):
                if args.offset == "earliest" or (args.offset is None and args.from_beginning):
                    consumer.seek_to_beginning(tp)
                else:
                    consumer.seek_to_end(tp)
            else:
                try:
                    consumer.seek(tp, int(args.offset))
                except ValueError:
                    raise LocalUsageError(f"--offset {args.offset!r} is not an offset") from None
        else:
            consumer = Consumer(args.topic, **kwargs)
    except (AnnalError, ValueError, TypeError) as exc:
        return fail(exc)
    status = 0
    try:
        last = time.monotonic()
        limit = args.max_messages
        while limit is None or count < limit:
            wait = 500.0
            if args.timeout_ms is not None:
                left = args.timeout_ms - (time.monotonic() - last) * 1000.0
                if left <= 0:
                    break
                wait = min(wait, left)
            batch = consumer.poll(timeout_ms=wait, max_records=None if limit is None else max(1, limit - count))
            if batch:
                last = time.monotonic()
            for recs in batch.values():
                for r in recs:
                    stdout.write(format_record(r, args.print_key, args.print_offset, args.key_separator) + "\n")
                    count += 1
            stdout.flush()
    except KeyboardInterrupt:
        pass
    except (AnnalError, ValueError) as exc:
        status = fail(exc)
    except BrokenPipeError:
        pass
    finally:
        if status == 0:
            # Stopped without an error: say so if it is because nothing could be reached or the
            # topic does not exist (Processed a total of 0 messages alone hides it).
            problem = consumer._problem()
            if problem is not None:
                status = fail(problem)
        consumer.close()
        print(f"Processed a total of {count} messages", file=stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    """Run as a program: ``python -m annal.client.console.consume ...``."""
    parser = argparse.ArgumentParser(prog="annal consume", description="Print records to stdout.")
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
