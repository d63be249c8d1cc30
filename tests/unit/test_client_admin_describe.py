"""Admin.describe_topics with scripted Metadata answers (no broker): a named topic the
answering broker has not loaded yet (LEADER_NOT_AVAILABLE at topic level) is asked for again;
one it says does not exist raises at once."""

from __future__ import annotations

import pytest

from annal.client.admin import Admin
from annal.errors import LeaderNotAvailableError, UnknownTopicOrPartitionError
from annal.protocol import annal_pb2


def _answer(name: str, error_code: int = 0, partitions: int = 0) -> annal_pb2.MetadataResponse:
    resp = annal_pb2.MetadataResponse()
    resp.brokers.add(broker_id=1, host="127.0.0.1", port=1, fetch_port=2)
    t = resp.topics.add(name=name, error_code=error_code)
    for p in range(partitions):
        t.partitions.add(partition=p, leader=1, log_start_offset=0, log_end_offset=0)
    return resp


def _scripted(monkeypatch: pytest.MonkeyPatch, admin: Admin, answers: list[annal_pb2.MetadataResponse]) -> list[str]:
    calls: list[str] = []

    def call(method: str, request: object) -> annal_pb2.MetadataResponse:
        calls.append(method)
        return answers.pop(0) if len(answers) > 1 else answers[0]

    monkeypatch.setattr(admin, "_call", call)
    monkeypatch.setattr("annal.client.admin.UNSETTLED_RETRY_S", 0.001)
    return calls


def test_a_topic_not_loaded_yet_is_asked_for_again(monkeypatch: pytest.MonkeyPatch) -> None:
    admin = Admin("127.0.0.1:1", request_timeout_ms=5000)
    calls = _scripted(monkeypatch, admin, [_answer("new", 5), _answer("new", 5), _answer("new", 0, 3)])
    (desc,) = admin.describe_topics(["new"])
    assert desc.name == "new" and len(desc.partitions) == 3
    assert calls == ["Metadata"] * 3
    admin.close()


def test_a_topic_never_loaded_raises_leader_not_available_after_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    admin = Admin("127.0.0.1:1", request_timeout_ms=50)
    _scripted(monkeypatch, admin, [_answer("stuck", 5)])
    with pytest.raises(LeaderNotAvailableError, match="stuck"):
        admin.describe_topics(["stuck"])
    admin.close()


def test_a_missing_topic_raises_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    admin = Admin("127.0.0.1:1", request_timeout_ms=5000)
    calls = _scripted(monkeypatch, admin, [_answer("gone", 3)])
    with pytest.raises(UnknownTopicOrPartitionError, match="gone"):
        admin.describe_topics(["gone"])
    assert calls == ["Metadata"]
    admin.close()
