"""docs/operations.md names every broker setting, flag, topic config key and metric.

The configuration reference is hand-written; these checks make a new setting that is not
documented (or a documented one that was renamed) fail the suite.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(30)

DOC = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()


def test_every_broker_setting_is_documented() -> None:
    from annal.broker.server.config import BrokerConfig

    keys = {f.name for f in dataclasses.fields(BrokerConfig)} - {"topic_defaults"}
    missing = sorted(k for k in keys if f"`{k}`" not in DOC)
    assert not missing, f"broker settings missing from docs/operations.md: {missing}"
    assert "`[topic_defaults]`" in DOC


def test_every_topic_config_key_is_documented_with_its_default() -> None:
    from annal.broker.server.config import DEFAULT_TOPIC_CONFIG

    for key, default in DEFAULT_TOPIC_CONFIG.items():
        row = re.search(rf"^\| `{key}` \| `(-?\d+)`", DOC, re.MULTILINE)
        assert row, f"topic config {key} has no row in docs/operations.md"
        assert int(row.group(1)) == default, f"{key}: documented {row.group(1)}, default is {default}"


def test_every_broker_start_flag_is_documented() -> None:
    from annal.broker.server import main

    parser = argparse.ArgumentParser()
    main.configure_parser(parser)
    start = next(
        a for a in parser._actions if isinstance(a, argparse._SubParsersAction)  # noqa: SLF001
    ).choices["start"]
    flags = {s for a in start._actions for s in a.option_strings if s.startswith("--") and s != "--help"}  # noqa: SLF001
    assert flags
    missing = sorted(f for f in flags if f"`{f}`" not in DOC)
    assert not missing, f"flags of `annal broker start` missing from docs/operations.md: {missing}"


def test_every_metric_is_documented() -> None:
    from annal.broker.server.metrics import BrokerMetrics

    metrics = BrokerMetrics(partition_stats=lambda: [("t", 0, 0, 1, 10)])
    names = set()
    for family in metrics.registry.collect():
        for sample in family.samples:
            name = sample.name
            if name.endswith(("_bucket", "_count", "_sum", "_created")):
                continue
            names.add(name)
    # Counters are exposed as <name>_total; labelled counters with no sample yet expose
    # nothing, so take the names from the families too.
    for family in metrics.registry.collect():
        names.add(family.name + ("_total" if family.type == "counter" else ""))
    names = {n for n in names if not n.endswith("_created")}
    missing = sorted(n for n in names if f"`{n}`" not in DOC)
    assert not missing, f"metrics missing from docs/operations.md: {missing}"


def test_example_config_file_loads(tmp_path: Path) -> None:
    from annal.broker.server.config import load_config

    blocks = re.findall(r"```toml\n(.*?)```", DOC, re.DOTALL)
    assert blocks, "docs/operations.md has no TOML example"
    path = tmp_path / "broker.toml"
    path.write_text(blocks[0])
    config = load_config(path, {})
    assert config.broker_id == 1
    assert config.zookeeper and config.advertised_host
    assert config.topic_defaults["partitions"] == 6
