"""The ``annal-bench`` command: Annal's performance tools, named after Kafka's.

=========  =========================================  ==========================================
command    measures                                   Kafka's counterpart
=========  =========================================  ==========================================
produce    producer throughput and send-to-ack        ``kafka-producer-perf-test``
           latency
consume    consumer throughput                        ``kafka-consumer-perf-test``
e2e        produce-to-consume latency at a set rate   ``kafka.tools.EndToEndLatency``
ceiling    this machine's disk, loopback and          (none)
           pure-Python limits
=========  =========================================  ==========================================

Each tool lives in its own module with ``build_parser()`` and ``main(argv=None) -> int``;
this module only dispatches, importing the tool lazily. The tools need the ``bench`` extra
(``pip install 'annal[bench]'``: HdrHistogram, tqdm, matplotlib); without it ``annal-bench
--help`` still answers and a tool says what to install. See docs/bench.md.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["main", "COMMANDS"]

# name -> (module, help)
COMMANDS: dict[str, tuple[str, str]] = {
    "produce": ("annal.bench.producer_performance", "producer throughput and latency (like kafka-producer-perf-test)"),
    "consume": ("annal.bench.consumer_performance", "consumer throughput (like kafka-consumer-perf-test)"),
    "e2e": ("annal.bench.end_to_end_latency", "end-to-end latency at a fixed rate"),
    "ceiling": ("annal.bench.ceiling", "this machine's disk, loopback and pure-Python limits"),
}


# What `pip install 'annal[bench]'` adds (pyproject.toml); the SDK and the broker need none of it.
_EXTRA_MODULES = frozenset({"hdrh", "tqdm", "matplotlib"})


def _usage() -> str:
    lines = ["usage: annal-bench COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<9} {help_text}" for name, (_, help_text) in COMMANDS.items()]
    lines += ["", "annal-bench COMMAND --help shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"annal-bench: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(COMMANDS[name][0])
    except ModuleNotFoundError as exc:
        if exc.name not in _EXTRA_MODULES:
            raise
        print(
            f"annal-bench {name} needs the bench extra ({exc.name} is not installed): "
            "pip install 'annal[bench]'",
            file=sys.stderr,
        )
        return 2
    try:
        return int(module.main(rest) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
