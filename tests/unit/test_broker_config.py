"""Unit tests of annal.broker.server.config: defaults, TOML file, flags winning, validation."""

from __future__ import annotations

import pathlib

import pytest

from annal.errors import InvalidConfigError, InvalidPartitionsError
from annal.broker.server.config import DEFAULT_TOPIC_CONFIG, NEVER, BrokerConfig, load_config, validate_topic_config


def write(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    p = tmp_path / "broker.toml"
    p.write_text(text)
    return p


def test_defaults(tmp_path):
    c = load_config(None, {"data_dir": str(tmp_path)})
    assert (c.host, c.port, c.fetch_port, c.metrics_port, c.broker_id) == ("127.0.0.1", 9092, 9093, 9094, 0)
    assert c.topic_defaults == DEFAULT_TOPIC_CONFIG
    assert c.topic_defaults["max_message_bytes"] == 1048588 and c.topic_defaults["flush_ms"] == NEVER
    assert c.data_dir == tmp_path


def test_file_then_flags(tmp_path):
    path = write(tmp_path, 'port = 1000\nfetch_port = 1001\nlog_level = "debug"\n[topic_defaults]\npartitions = 4\nretention_ms = 1000\n')
    c = load_config(path, {"data_dir": str(tmp_path), "port": 2000, "fetch_port": None})
    assert (c.port, c.fetch_port, c.log_level) == (2000, 1001, "DEBUG")  # flag wins, None = not given
    assert c.topic_defaults["partitions"] == 4 and c.topic_defaults["retention_ms"] == 1000
    assert c.topic_config({"retention_ms": 5})["retention_ms"] == 5


def test_data_dir_from_file(tmp_path):
    c = load_config(write(tmp_path, f'data_dir = "{tmp_path}/d"\n'), {})
    assert c.data_dir == tmp_path / "d"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("colour = 1\n", "unknown broker config key 'colour'"),
        ("[topic_defaults]\nsegment_size = 1\n", "unknown topic config key 'segment_size'"),
        ("[topic_defaults]\nsegment_bytes = 10\n", "segment_bytes=10 is out of range"),
        ("[topic_defaults]\nsegment_bytes = 4294967296\n", "out of range"),
        ("[topic_defaults]\nretention_ms = 0\n", "out of range"),
        ("[topic_defaults]\nflush_ms = true\n", "must be an integer"),
        ("port = 70000\n", "port must be 0..65535"),
        ("port = '9092'\n", "port must be 0..65535"),
        ("log_level = 'LOUD'\n", "log_level must be one of"),
        ("request_timeout_ms = 0\n", "request_timeout_ms must be a positive integer"),
        ("max_request_bytes = 4294967296\n", "int32"),
        ("topic_defaults = 3\n", "must be a table"),
        ("port = = 1\n", "not valid TOML"),
    ],
)
def test_bad_files_are_rejected(tmp_path, text, fragment):
    with pytest.raises(InvalidConfigError) as ei:
        load_config(write(tmp_path, text), {"data_dir": str(tmp_path)})
    assert fragment in ei.value.message


def test_missing_file_and_missing_data_dir(tmp_path):
    with pytest.raises(InvalidConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.toml", {"data_dir": str(tmp_path)})
    with pytest.raises(InvalidConfigError, match="data_dir is required"):
        load_config(None, {})


def test_validate_topic_config():
    assert validate_topic_config({"retention_bytes": -1, "retention_ms": -1, "flush_messages": 1}) == {
        "retention_bytes": -1, "retention_ms": -1, "flush_messages": 1}
    with pytest.raises(InvalidPartitionsError):
        validate_topic_config({"partitions": 0})
    with pytest.raises(InvalidPartitionsError):
        validate_topic_config({"partitions": 10_001})
    with pytest.raises(InvalidConfigError, match="unknown topic config key 'partitions'"):
        validate_topic_config({"partitions": 2}, allow_partitions=False)
    with pytest.raises(InvalidConfigError):
        validate_topic_config({"retention_bytes": -2})
    with pytest.raises(InvalidConfigError):
        validate_topic_config({"max_message_bytes": 60})


def test_public_host():
    assert BrokerConfig(data_dir=pathlib.Path("."), host="0.0.0.0").public_host == "127.0.0.1"
    assert BrokerConfig(data_dir=pathlib.Path("."), host="0.0.0.0", advertised_host="b1").public_host == "b1"
