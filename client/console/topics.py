"""``annal topics create|list|describe|delete``: manage topics (Kafka's kafka-topics.sh).

    annal topics create --bootstrap-server 127.0.0.1:9092 --topic t --partitions 3 --replication-factor 3 \
        --config retention_ms=60000 --config min_insync_replicas=2
    annal topics list
    annal topics describe [--topic t]
    annal topics delete --topic t

``describe`` prints Kafka's shape: one line per topic, then one per partition::

    Topic: t	PartitionCount: 3	ReplicationFactor: 3	Configs: retention_ms=60000,...
    	Topic: t	Partition: 0	Leader: 2	Replicas: 2,3,1	Isr: 2,3,1	LogStartOffset: 0	LogEndOffset: 42
"""

from __future__ import annotations

import argparse
import sys

from annal.errors import AnnalError, LocalUsageError

from annal.client.admin import Admin
from annal.client.console._common import add_bootstrap, fail
from annal.client.structs import NewTopic

__all__ = ["configure_parser", "run", "main", "parse_configs"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``topics`` options to ``parser``."""
    parser.add_argument("action", choices=["create", "list", "describe", "delete"], help="what to do")
    add_bootstrap(parser)
    parser.add_argument("--topic", action="append", default=None, help="topic name (repeatable)")
    parser.add_argument("--partitions", type=int, default=1, help="partitions of a new topic (default 1)")
    parser.add_argument(
        "--replication-factor", type=int, default=-1,
        help="copies of each partition of a new topic (default: the broker's default_replication_factor)",
    )
    parser.add_argument(
        "--config", action="append", default=[], metavar="KEY=VALUE",
        help="topic config of a new topic, e.g. retention_ms=60000 (repeatable)",
    )
    parser.add_argument("--if-not-exists", action="store_true", help="create: no error if the topic exists")


def parse_configs(items: list[str]) -> dict[str, int]:
    """``["k=v", ...]`` -> ``{"k": int(v)}``; raises LocalUsageError for a malformed item."""
    out: dict[str, int] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LocalUsageError(f"--config {item!r} is not KEY=VALUE")
        try:
            out[key.strip().replace(".", "_")] = int(value)
        except ValueError:
            raise LocalUsageError(f"--config {item!r}: the value must be an integer") from None
    return out


def run(args: argparse.Namespace) -> int:
    """Run one ``topics`` action; 0 on success, 1 on an error (printed to stderr)."""
    try:
        with Admin(args.bootstrap_server) as admin:
            return _run(admin, args)
    except (AnnalError, ValueError, TypeError) as exc:
        return fail(exc)


def _run(admin: Admin, args: argparse.Namespace) -> int:
    topics: list[str] = args.topic or []
    if args.action in ("create", "delete") and not topics:
        raise LocalUsageError(f"topics {args.action} needs --topic")
    if args.action == "create":
        configs = parse_configs(args.config)
        results = admin.create_topics(
            [NewTopic(t, args.partitions, configs, args.replication_factor) for t in topics], raise_errors=False
        )
        status = 0
        for name, err in results.items():
            if err is None:
                print(f"Created topic {name}.")
            elif args.if_not_exists and type(err).__name__ == "TopicAlreadyExistsError":
                pass
            else:
                status = fail(err)
        return status
    if args.action == "delete":
        status = 0
        for name, err in admin.delete_topics(topics, raise_errors=False).items():
            if err is None:
                print(f"Deleted topic {name}.")
            else:
                status = fail(err)
        return status
    if args.action == "list":
        for name in admin.list_topics():
            print(name)
        return 0
    for desc in admin.describe_topics(topics or None):
        shown = ",".join(f"{k}={v}" for k, v in sorted(desc.configs.items()))
        rf = max((len(p.replicas) for p in desc.partitions), default=1) or 1
        print(f"Topic: {desc.name}\tPartitionCount: {desc.partition_count}\tReplicationFactor: {rf}"
              f"\tConfigs: {shown}")
        for p in desc.partitions:
            replicas = ",".join(str(b) for b in p.replicas) or str(p.leader)
            isr = ",".join(str(b) for b in p.isr) or replicas
            print(
                f"\tTopic: {desc.name}\tPartition: {p.partition}\tLeader: {p.leader}"
                f"\tReplicas: {replicas}\tIsr: {isr}"
                f"\tLogStartOffset: {p.log_start_offset}\tLogEndOffset: {p.log_end_offset}"
                f"\tSizeBytes: {p.size_bytes}"
            )
    sys.stdout.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run as a program: ``python -m annal.client.console.topics ...``."""
    parser = argparse.ArgumentParser(prog="annal topics", description="Create, list, describe and delete topics.")
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
