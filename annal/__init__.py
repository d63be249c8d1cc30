"""Annal: a Kafka-style append-only log broker and its Python client.

    from annal import Producer, Consumer, Admin, NewTopic, TopicPartition

The package is one namespace in layers, as Apache Kafka's ``clients`` module is to its broker:

- the shared core, imported by both sides and importing neither: ``annal.errors`` (the one
  error hierarchy), ``annal.record`` (the RecordBatch v2 codec), ``annal.protocol`` (data-port
  framing and the generated gRPC modules), ``annal.zookeeper`` (znode layout and watch
  helpers), ``annal.cluster`` and ``annal.topic_names``;
- ``annal.client``: Producer, Consumer, Admin and the console tools (imports the core only, so
  an application that produces never loads the storage engine);
- ``annal.broker``: storage, servers and coordination (imports the core);
- ``annal.bench``: the ``annal-bench`` tool (imports the client and starts brokers as
  processes).

``annal.native`` says whether the compiled codec (annal/record/_native.c) runs or the
pure-Python one (``ANNAL_PURE_PYTHON=1`` forces it); ``annal --version`` prints the same.

The client names below are loaded on first use, so ``import annal.record`` (as the broker
does) does not import the client.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Installed, annal.broker/client/bench are folders inside this package. Imported straight from
# a checkout (``python -m annal.bench.codec`` run in the repository root puts the root on
# sys.path), they are the root's broker/, client/ and bench/ folders, as pyproject.toml's
# package-dir maps them: let this package's submodule search see the root too.
_CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if not os.path.isdir(os.path.join(os.path.dirname(__file__), "broker")) and all(
    os.path.exists(os.path.join(_CHECKOUT, name)) for name in ("pyproject.toml", "broker", "client", "bench")
):
    __path__.append(_CHECKOUT)  # noqa: F821 - a package's __path__

_CLIENT_NAMES = (
    "Admin",
    "BrokerMetadata",
    "ClusterDescription",
    "Consumer",
    "ConsumerRebalanceListener",
    "ConsumerRecord",
    "EARLIEST",
    "FutureRecordMetadata",
    "LATEST",
    "NewTopic",
    "OffsetAndTimestamp",
    "PartitionMetadata",
    "Producer",
    "RecordMetadata",
    "TopicDescription",
    "TopicPartition",
)

__all__ = [*_CLIENT_NAMES, "errors", "native", "__version__"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from annal import errors
    from annal.client import (
        EARLIEST,
        LATEST,
        Admin,
        BrokerMetadata,
        ClusterDescription,
        Consumer,
        ConsumerRebalanceListener,
        ConsumerRecord,
        FutureRecordMetadata,
        NewTopic,
        OffsetAndTimestamp,
        PartitionMetadata,
        Producer,
        RecordMetadata,
        TopicDescription,
        TopicPartition,
    )


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        value = getattr(importlib.import_module("annal.client"), name)
        globals()[name] = value
        return value
    if name == "errors":
        return importlib.import_module("annal.errors")
    if name == "native":
        # True when the compiled codec and send() fast path (annal.record._native) run; False
        # when the pure-Python code does (not built, or ANNAL_PURE_PYTHON=1).
        return importlib.import_module("annal.record._impl").native is not None
    raise AttributeError(f"module 'annal' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
