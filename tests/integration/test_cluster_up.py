"""``annal cluster up``: starts ZooKeeper and N brokers, prints parsable addresses, serves
produce/consume, and stops everything on SIGTERM or Ctrl-C leaving no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from annal.client.admin import Admin
from annal.client.consumer import Consumer
from annal.client.producer import Producer
from annal.client.structs import NewTopic, TopicPartition
from harness.zookeeper import wait_until

pytestmark = pytest.mark.timeout(120)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _group_members(pgid: int) -> list[int]:
    """Pids of live (non-zombie) processes in process group ``pgid``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != "Z":
            pids.append(int(entry))
    return pids


def _start(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], dict[str, str], Path]:
    out_path = tmp_path / "cluster.out"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    out = open(out_path, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "annal.broker", "cluster", "up", *args],
        stdout=out, stderr=subprocess.STDOUT, text=True, env=env, cwd=str(REPO_ROOT),
        start_new_session=True,  # its own process group, as a shell job would have
    )
    out.close()
    try:
        wait_until(lambda: "cluster ready" in out_path.read_text() or proc.poll() is not None, timeout_s=90)
    except BaseException:
        proc.kill()
        raise
    text = out_path.read_text()
    assert proc.poll() is None, text
    values = dict(line.split("=", 1) for line in text.splitlines() if line.split("=", 1)[0] in ("zookeeper", "bootstrap_servers"))
    return proc, values, out_path


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c"])
def test_cluster_up_serves_and_stops_leaving_no_process(tmp_path: Path, how: str) -> None:
    proc, values, out_path = _start(tmp_path, "--brokers", "2", "--data-dir", str(tmp_path / "data"), "--session-timeout-ms", "4000")
    pgid = proc.pid
    try:
        assert values["zookeeper"].endswith("/annal")
        bootstrap = values["bootstrap_servers"]
        assert len(bootstrap.split(",")) == 2
        # ZooKeeper (java) and two brokers run in the cluster's process group.
        assert len(_group_members(pgid)) == 4
        with Admin(bootstrap_servers=bootstrap) as admin:
            admin.create_topics([NewTopic("up", 2)])
        with Producer(zookeeper=values["zookeeper"], linger_ms=0) as p:
            for i in range(20):
                p.send("up", b"%d" % i, partition=i % 2)
            p.flush(30)
        got = []
        with Consumer(zookeeper=values["zookeeper"], auto_offset_reset="earliest") as c:
            c.assign([TopicPartition("up", 0), TopicPartition("up", 1)])
            deadline = time.monotonic() + 30
            while len(got) < 20 and time.monotonic() < deadline:
                got.extend(r.value for recs in c.poll(200).values() for r in recs)
        assert sorted(got, key=int) == [b"%d" % i for i in range(20)]
    finally:
        if how == "sigterm":
            proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(pgid, signal.SIGINT)  # what a terminal's Ctrl-C does
        try:
            rc = proc.wait(60)
        finally:
            if proc.poll() is None:
                os.killpg(pgid, signal.SIGKILL)
    assert rc == 0, out_path.read_text()
    wait_until(lambda: _group_members(pgid) == [], timeout_s=10, message="no process left in the cluster's group")


def test_cluster_up_without_java_says_how_to_install(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=str(tmp_path), JAVA_HOME="")
    proc = subprocess.run(
        [sys.executable, "-m", "annal.broker", "cluster", "up", "--brokers", "1", "--data-dir", str(tmp_path / "d")],
        capture_output=True, text=True, env=env, cwd=str(REPO_ROOT), timeout=60,
    )
    assert proc.returncode != 0
    assert "apt-get install -y zookeeper" in proc.stderr


def test_cluster_up_joins_a_given_zookeeper(tmp_path: Path, zk) -> None:  # type: ignore[no-untyped-def]
    proc, values, out_path = _start(tmp_path, "--brokers", "1", "--zookeeper", zk.hosts, "--session-timeout-ms", "4000")
    client = zk.client()
    try:
        assert values["zookeeper"] == zk.hosts
        assert "zookeeper.pid" not in out_path.read_text()  # no server of its own
        assert len(_group_members(proc.pid)) == 2  # itself and one broker
        assert client.get_children("/brokers/ids") == ["1"]
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    assert rc == 0
    wait_until(lambda: _group_members(proc.pid) == [], timeout_s=10)
    wait_until(lambda: client.get_children("/brokers/ids") == [], timeout_s=10, message="clean deregistration")


def test_cluster_up_fails_cleanly_when_a_broker_cannot_start(tmp_path: Path) -> None:
    import socket

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "annal.broker", "cluster", "up", "--brokers", "1", "--base-port", str(port),
             "--data-dir", str(tmp_path / "d")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(REPO_ROOT),
            start_new_session=True,
        )
        out, err = proc.communicate(timeout=90)
    finally:
        busy.close()
    assert proc.returncode == 1
    assert "broker 1 exited" in err and "cluster ready" not in out
    wait_until(lambda: _group_members(proc.pid) == [], timeout_s=10, message="ZooKeeper stopped too")


def test_cluster_up_puts_zookeeper_on_the_given_port(tmp_path: Path) -> None:
    from annal.broker.coordination.zk_server import find_free_port

    port = find_free_port()
    proc, values, _ = _start(tmp_path, "--brokers", "1", "--zookeeper-port", str(port), "--session-timeout-ms", "4000")
    try:
        assert values["zookeeper"] == f"127.0.0.1:{port}/annal"
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    assert rc == 0
    wait_until(lambda: _group_members(proc.pid) == [], timeout_s=10)
