"""The host side of docker/test.sh: produce and consume through the brokers' advertised addresses.

    python docker/roundtrip.py create  --bootstrap-server B --topic T --partitions 6
    python docker/roundtrip.py produce --bootstrap-server B --topic T --first 0 --count 100000 \\
        --acked FILE [--rate N] [--allow-failures]
    python docker/roundtrip.py consume --bootstrap-server B --topic T --acked FILE [FILE ...] \\
        [--exact]

Record i has the value ``b"%d" % i`` and the key ``b"key-%d" % (i % 1000)``. ``produce`` writes
the ids whose send was acknowledged (acks=1: the partition leader appended it) to ``--acked``,
one per line, and fails if any send failed unless ``--allow-failures`` (a broker is killed
while it runs). ``consume`` reads every partition from the beginning until every acknowledged id
has been read and fails if one is missing; ``--exact`` also requires each record exactly once
and, per key, in the order sent. One ``key=value`` summary line on stdout for each command.

Runs with the project's own SDK (``annal``) from the host's virtual environment. The
advertised names (``broker-1`` ...) must resolve to the host: docker/test.sh runs this script
with its own /etc/hosts in a private mount namespace.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

from annal import Admin, Consumer, NewTopic, Producer
from annal.errors import TopicAlreadyExistsError

KEYS = 1000


def key_of(i: int) -> bytes:
    return b"key-%d" % (i % KEYS)


def create(args: argparse.Namespace) -> int:
    admin = Admin(bootstrap_servers=args.bootstrap_server)
    try:
        admin.create_topics([NewTopic(args.topic, args.partitions)])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()
    print(f"topic={args.topic} partitions={args.partitions}")
    return 0


def produce(args: argparse.Namespace) -> int:
    producer = Producer(bootstrap_servers=args.bootstrap_server, acks=1)
    acked: list[int] = []
    failures: list[tuple[int, BaseException]] = []
    start = time.monotonic()
    futures = []
    for n, i in enumerate(range(args.first, args.first + args.count)):
        if args.rate > 0:
            # Paced sends, so that the run spans the broker restart.
            delay = start + n / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        futures.append((i, producer.send(args.topic, b"%d" % i, key=key_of(i))))
    producer.flush()
    for i, future in futures:
        try:
            future.get(timeout=args.timeout_s)
            acked.append(i)
        except Exception as exc:  # a failed send: not acknowledged, so not expected back
            failures.append((i, exc))
    producer.close()
    elapsed = time.monotonic() - start
    Path(args.acked).write_text("".join(f"{i}\n" for i in acked))
    print(
        f"produced={len(acked)} failed={len(failures)} seconds={elapsed:.2f} "
        f"records_per_s={len(acked) / elapsed:,.0f}"
    )
    if failures:
        kinds = sorted({type(exc).__name__ for _, exc in failures})
        print(f"first failure: record {failures[0][0]}: {failures[0][1]!r}; kinds: {kinds}", file=sys.stderr)
        if not args.allow_failures:
            return 1
    return 0


def consume(args: argparse.Namespace) -> int:
    expected: set[int] = set()
    for name in args.acked:
        expected.update(int(line) for line in Path(name).read_text().split())
    consumer = Consumer(
        args.topic,
        bootstrap_servers=args.bootstrap_server,
        auto_offset_reset="earliest",
        consumer_timeout_ms=args.idle_timeout_s * 1000,
    )
    seen: dict[int, int] = defaultdict(int)
    last_by_key: dict[bytes, int] = {}
    out_of_order = 0
    missing_left = set(expected)
    start = time.monotonic()
    records = 0
    for record in consumer:
        i = int(record.value)
        records += 1
        seen[i] += 1
        missing_left.discard(i)
        if record.key != key_of(i):
            print(f"record {i} has key {record.key!r}", file=sys.stderr)
            return 1
        if last_by_key.get(record.key, -1) > i:
            out_of_order += 1
        last_by_key[record.key] = i
        if not missing_left and records >= len(expected):
            break
    consumer.close()
    elapsed = time.monotonic() - start
    duplicates = sum(n - 1 for n in seen.values() if n > 1)
    unexpected = len(set(seen) - expected)
    print(
        f"consumed={records} acknowledged={len(expected)} missing={len(missing_left)} "
        f"duplicates={duplicates} unacknowledged_read={unexpected} out_of_order={out_of_order} "
        f"seconds={elapsed:.2f} records_per_s={records / elapsed:,.0f}"
    )
    if missing_left:
        print(f"acknowledged but never read: {sorted(missing_left)[:20]} ...", file=sys.stderr)
        return 1
    if args.exact and (duplicates or unexpected or out_of_order):
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("create", "produce", "consume"):
        p = sub.add_parser(name)
        p.add_argument("--bootstrap-server", required=True)
        p.add_argument("--topic", required=True)
    sub.choices["create"].add_argument("--partitions", type=int, default=6)
    p = sub.choices["produce"]
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--rate", type=float, default=0, help="records/s; 0 = as fast as possible")
    p.add_argument("--acked", required=True, help="file to write the acknowledged ids to")
    p.add_argument("--allow-failures", action="store_true")
    p.add_argument("--timeout-s", type=float, default=180)
    p = sub.choices["consume"]
    p.add_argument("--acked", nargs="+", required=True)
    p.add_argument("--exact", action="store_true")
    p.add_argument("--idle-timeout-s", type=float, default=30)
    args = parser.parse_args(argv)
    return {"create": create, "produce": produce, "consume": consume}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
