"""Cluster-mode figures under ZooKeeper faults (docs/reliability.md, issue 13).

    python -m annal.bench.cluster_faults [--runs 3] [--pauses 10] [--pause-s 6] [--outage-s 30]
                                         [--session-timeout-ms 4000]

Each run starts a fresh ``LocalCluster`` (the Debian ZooKeeper server, brokers as processes)
and measures:

* **convergence**: 3 brokers; ZooKeeper is frozen (SIGSTOP) for ``--pause-s`` (longer than the
  session timeout), then resumed (SIGCONT), ``--pauses`` times. After each resume: the time
  until every broker has connected again, its registration is owned by its current session,
  ``/brokers/ids`` holds the 3 brokers and each broker's ``describe_cluster()`` lists exactly
  those and the controller ``/controller`` names. Reported: the max over the pauses.
* **outage read rate**: 1 broker, a topic of 2 partitions, a producer writing ~500 records/s,
  a group member (auto-commit every 200 ms) and a plain consumer (``assign``) in the same
  process. ZooKeeper is frozen for ``--outage-s``. Reported: records the member read during the
  outage / records the plain consumer read in the same window.
* **duplicates after the session expiry**: the member's records read twice after that outage
  (its session expired: it resumed at its last successful commit), and the records it read
  from its last successful commit before the freeze (less one auto-commit interval, the age of
  the positions it wrote) to the moment it lost its partitions: the bound.

Prints one line per run and the medians, with the load average.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

__all__ = ["main", "run_convergence", "run_outage"]

_CONNECTED = re.compile(r"ZooKeeper connected \(session 0x([0-9a-f]+)\)")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


class _Local:
    def __init__(self, brokers: int, session_timeout_ms: int) -> None:
        from annal.broker.coordination.local_cluster import LocalCluster

        self._tmp = tempfile.TemporaryDirectory(prefix="annal-bench-faults-")
        self.cluster = LocalCluster(brokers=brokers, data_dir=Path(self._tmp.name),
                                    session_timeout_ms=session_timeout_ms, log_level="INFO")

    def __enter__(self) -> "_Local":
        from annal.client._zk import connect

        try:
            self.cluster.start()
        except BaseException:
            self.cluster.stop()
            self._tmp.cleanup()
            raise
        assert self.cluster.zookeeper is not None
        self.zk = connect(self.cluster.zookeeper)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cluster.zk_server is not None:
            self.cluster.zk_server.resume()
        try:
            self.zk.stop()
            self.zk.close()
        finally:
            self.cluster.stop()
            self._tmp.cleanup()

    def registered(self) -> dict[int, int]:
        """``{broker id: owner session}`` of ``/brokers/ids``."""
        from annal.zookeeper import paths

        out = {}
        for child in self.zk.get_children(paths.BROKER_IDS):
            stat = self.zk.exists(paths.broker_path(int(child)))
            if stat is not None:
                out[int(child)] = stat.ephemeralOwner
        return out

    def controller(self) -> int:
        from annal.zookeeper import paths
        from annal.zookeeper.reads import read_controller_id

        return read_controller_id(self.zk)

    def sessions(self) -> dict[int, list[int]]:
        return {b.broker_id: [int(m, 16) for m in _CONNECTED.findall(b.log_path.read_text(errors="replace"))]
                for b in self.cluster.running}


def _broker_view(address: str) -> tuple[set[int], int]:
    from annal.client.admin import Admin

    try:
        with Admin(bootstrap_servers=address, request_timeout_ms=2000) as admin:
            d = admin.describe_cluster()
        return {b.broker_id for b in d.brokers}, d.controller_id
    except Exception:
        return set(), -2


def run_convergence(pauses: int, pause_s: float, session_timeout_ms: int) -> dict[str, float]:
    """Max and median seconds from a resume to every broker's view equal to ZooKeeper's."""
    times: list[float] = []
    with _Local(3, session_timeout_ms) as local:
        server = local.cluster.zk_server
        assert server is not None
        ids = {1, 2, 3}
        _wait(lambda: set(local.registered()) == ids, 30, "3 brokers registered")
        for i in range(pauses):
            before = {b: len(s) for b, s in local.sessions().items()}
            server.pause()
            time.sleep(pause_s)  # the fault's length
            server.resume()
            resumed = time.monotonic()

            def converged() -> bool:
                sessions = local.sessions()
                try:
                    reg = local.registered()
                    controller = local.controller()
                except Exception:
                    return False
                if set(reg) != ids or controller not in ids:
                    return False
                for b in ids:
                    if len(sessions[b]) <= before[b] or reg[b] != sessions[b][-1]:
                        return False
                return all(_broker_view(b.grpc) == (ids, controller) for b in local.cluster.running)

            _wait(converged, 120, f"pause {i}: every broker's view equal to ZooKeeper's")
            times.append(time.monotonic() - resumed)
            _log(f"  pause {i}: converged in {times[-1]:.2f} s")
    return {"convergence_max_s": max(times), "convergence_median_s": statistics.median(times)}


class _Reader:
    def __init__(self, consumer: Any) -> None:
        self.consumer = consumer
        self.seen: list[tuple[float, int, int]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                for recs in self.consumer.poll(timeout_ms=100).values():
                    now = time.monotonic()
                    self.seen.extend((now, r.partition, r.offset) for r in recs)
        finally:
            self.consumer.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)


def run_outage(outage_s: float, session_timeout_ms: int) -> dict[str, float]:
    """The group member's read rate during a ZooKeeper freeze against a plain consumer's, and
    the duplicates after the session expiry that follows."""
    from annal.client import Admin, Consumer, NewTopic, Producer, TopicPartition

    topic = "faults"
    with _Local(1, session_timeout_ms) as local:
        server = local.cluster.zk_server
        assert server is not None and local.cluster.zookeeper is not None
        bootstrap = local.cluster.bootstrap_servers
        with Admin(bootstrap_servers=bootstrap) as admin:
            admin.create_topics([NewTopic(topic, 2)])
        member_consumer = Consumer(group_id="bench", zookeeper=local.cluster.zookeeper, auto_offset_reset="earliest",
                                   enable_auto_commit=True, auto_commit_interval_ms=200, fetch_max_wait_ms=100)
        lost_at: list[float] = []

        class _Listener:
            def on_partitions_lost(self, _tps: Any) -> None:
                lost_at.append(time.monotonic())

        member_consumer.subscribe([topic], listener=_Listener())
        plain_consumer = Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=100)
        plain_consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
        member, plain = _Reader(member_consumer), _Reader(plain_consumer)
        committer = member_consumer._group.auto_committer
        producer = Producer(bootstrap_servers=bootstrap, linger_ms=1)
        sent: list[Any] = []
        stop = threading.Event()

        def produce() -> None:
            i = 0
            while not stop.is_set():
                sent.append(producer.send(topic, b"%09d" % i))
                i += 1
                time.sleep(0.002)

        producing = threading.Thread(target=produce, daemon=True)
        producing.start()
        try:
            _wait(lambda: len(member.seen) >= 1000 and len(plain.seen) >= 1000, 60, "both consumers reading")
            paused_at = time.monotonic()
            server.pause()
            try:
                time.sleep(outage_s)  # the fault's length
                # The last commit that succeeded: before the freeze (nothing succeeds during it).
                last_commit_at = committer.last_commit_at or 0.0
                resumed_at = time.monotonic()
            finally:
                server.resume()
            member_in = sum(1 for t, _, _ in member.seen if paused_at <= t < resumed_at)
            plain_in = sum(1 for t, _, _ in plain.seen if paused_at <= t < resumed_at)
            marker = len(sent)
            _wait(lambda: len(sent) >= marker + 1000, 60, "1000 records after the resume")
        finally:
            stop.set()
            producing.join()
            producer.flush(30)
            producer.close()
        ends = {(f.get(30).partition, f.get(30).offset) for f in sent}
        _wait(lambda: ends <= {(p, o) for _, p, o in member.seen}, 120, "the member reading everything")
        member.close()
        plain.close()
    duplicates = len(member.seen) - len({(p, o) for _, p, o in member.seen})
    return {
        "member_read_in_outage": float(member_in),
        "plain_read_in_outage": float(plain_in),
        "read_rate_fraction": member_in / plain_in if plain_in else 0.0,
        # 1 when the member's session expired on the resume (ZooKeeper may instead revalidate a
        # session whose client reconnects before its expiry thread runs: then 0 duplicates).
        "member_session_expired": 1.0 if lost_at else 0.0,
        "duplicates_after_expiry": float(duplicates),
        # The bound: records read from the positions of the last successful commit (taken up
        # to one auto_commit_interval_ms before it succeeded) to the moment the member lost its
        # partitions (it learns of the expiry after the resume).
        "read_since_last_commit": float(sum(
            1 for t, _, _ in member.seen if last_commit_at - 0.2 <= t < (lost_at[0] if lost_at else resumed_at)
        )),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m annal.bench.cluster_faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pauses", type=int, default=10)
    parser.add_argument("--pause-s", type=float, default=6.0)
    parser.add_argument("--outage-s", type=float, default=30.0)
    parser.add_argument("--session-timeout-ms", type=int, default=4000)
    parser.add_argument("--only", default="convergence,outage")
    args = parser.parse_args(argv)
    wanted = {w.strip() for w in args.only.split(",") if w.strip()}
    results: dict[str, list[float]] = {}
    for run in range(1, args.runs + 1):
        load = " ".join(open("/proc/loadavg").read().split()[:3])
        r: dict[str, float] = {}
        if "convergence" in wanted:
            r.update(run_convergence(args.pauses, args.pause_s, args.session_timeout_ms))
        if "outage" in wanted:
            r.update(run_outage(args.outage_s, args.session_timeout_ms))
        print(f"run {run} (load average {load}): " + ", ".join(f"{k}={v:.3f}" for k, v in r.items()), flush=True)
        for k, v in r.items():
            results.setdefault(k, []).append(v)
    print(f"median of {args.runs} (load average now {' '.join(open('/proc/loadavg').read().split()[:3])}):")
    for k, vs in results.items():
        print(f"  {k}: {statistics.median(vs):.3f}  (runs: {', '.join(f'{v:.3f}' for v in vs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
