"""Cluster-mode figures: failover, group rebalance and scale-out throughput.

    .venv/bin/python -m annal.bench.cluster [--runs 3] [--session-timeout-ms 6000] [--seconds 10]
                                      [--only failover,rebalance,throughput] [--out FILE]

Each run starts a fresh local cluster (``annal.broker.coordination.local_cluster.LocalCluster``:
the Debian ZooKeeper server and broker processes, ZooKeeper session timeout 6 s) and measures:

* **failover**: a producer (``Producer(zookeeper=...)``, keyless 100-byte records, ~1000/s)
  sends into a 6-partition topic over 3 brokers; one broker is SIGKILLed. Measured: from the
  kill to the last record the producer appended to a partition of the dead broker (after that
  every record goes to live brokers). Also reported: from the kill to the producer's
  metadata marking the broker dead.
* **rebalance**: 3 consumer processes in one group over a 6-partition topic (2 partitions
  each); one is SIGKILLed. Measured: from the kill to the moment the two survivors together
  own all 6 partitions (their own timestamps of the assignment change, same clock).
* **throughput**: 3 producer processes, keyless 100-byte records, ``linger_ms=5``,
  ``batch_size=65536``, ``acks=1``, as fast as they can for ``--seconds``, into a 6-partition
  topic over 3 brokers; versus 1 producer process into the same topic on a 1-broker cluster.

Prints one line per run and writes a markdown fragment (median of the runs, and every run)
to ``--out`` (default docs/benchmarks/cluster.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

__all__ = ["main"]

TOPIC_PARTITIONS = 6
VALUE = b"v" * 100


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class _Cluster:
    """A LocalCluster in a temporary directory, stopped and removed on exit."""

    def __init__(self, brokers: int, session_timeout_ms: int) -> None:
        from annal.broker.coordination.local_cluster import LocalCluster

        self._tmp = tempfile.TemporaryDirectory(prefix="annal-bench-cluster-")
        self.cluster = LocalCluster(
            brokers=brokers, data_dir=Path(self._tmp.name), session_timeout_ms=session_timeout_ms, log_level="WARNING"
        )

    def __enter__(self) -> "_Cluster":
        try:
            self.cluster.start()
        except BaseException:
            self.cluster.stop()
            self._tmp.cleanup()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.cluster.stop()
        self._tmp.cleanup()

    @property
    def zookeeper(self) -> str:
        assert self.cluster.zookeeper is not None
        return self.cluster.zookeeper

    def create_topic(self, name: str, partitions: int) -> dict[int, int]:
        from annal.zookeeper import paths as zk_paths
        from annal.client._zk import connect
        from annal.client.admin import Admin
        from annal.client.structs import NewTopic

        with Admin(bootstrap_servers=self.cluster.bootstrap_servers) as admin:
            admin.create_topics([NewTopic(name, partitions)])
        zk = connect(self.zookeeper)
        try:
            data, _ = zk.get(zk_paths.topic_path(name))
            return dict(zk_paths.decode_topic(name, data).partitions)
        finally:
            zk.stop()
            zk.close()

    def kill(self, broker_id: int) -> float:
        b = next(b for b in self.cluster.running if b.broker_id == broker_id)
        t0 = time.monotonic()
        b.proc.send_signal(signal.SIGKILL)
        b.proc.wait()
        self.cluster.running.remove(b)
        return t0


def _wait(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.005)


# -- failover -------------------------------------------------------------------------------


def run_failover(session_timeout_ms: int) -> dict[str, float]:
    from annal.client.producer import Producer

    with _Cluster(3, session_timeout_ms) as c:
        placement = c.create_topic("failover", TOPIC_PARTITIONS)
        victim = 2
        dead_parts = {p for p, b in placement.items() if b == victim}
        producer = Producer(zookeeper=c.zookeeper, linger_ms=1, batch_size=16384, delivery_timeout_ms=300000)
        sends: list[tuple[float, int]] = []
        stop = threading.Event()

        def send_loop() -> None:
            while not stop.is_set():
                f = producer.send("failover", VALUE)
                sends.append((time.monotonic(), f.topic_partition.partition))
                time.sleep(0.001)

        t = threading.Thread(target=send_loop, daemon=True)
        t.start()
        try:
            _wait(lambda: len({p for _, p in sends}) == TOPIC_PARTITIONS, 30, "records on every partition")
            t0 = c.kill(victim)
            md = producer._metadata
            t_notify = _wait(lambda: time.monotonic() if not md.is_alive(victim) else None, 60, "producer notified")
            time.sleep(2.0)  # keep sending: any record still placed on a dead partition shows up
        finally:
            stop.set()
            t.join()
            producer.close(timeout=0)
        last_dead = max((ts for ts, p in sends if ts >= t0 and p in dead_parts), default=t0)
        return {"failover_s": last_dead - t0, "notify_s": t_notify - t0}


# -- rebalance ------------------------------------------------------------------------------

_MEMBER = """
import sys, time
from annal.client.consumer import Consumer
c = Consumer(sys.argv[2], group_id="bench", zookeeper=sys.argv[1], auto_offset_reset="latest")
last = None
while True:
    c.poll(50)
    now = sorted(tp.partition for tp in c.assignment())
    if now != last:
        print("assigned %.6f %s" % (time.time(), ",".join(map(str, now))), flush=True)
        last = now
"""


def run_rebalance(session_timeout_ms: int) -> dict[str, float]:
    with _Cluster(3, session_timeout_ms) as c:
        c.create_topic("group", TOPIC_PARTITIONS)
        tmp = Path(tempfile.mkdtemp(prefix="annal-bench-members-"))
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        members = []
        outs = []
        try:
            for i in range(3):
                out = tmp / f"member{i}.out"
                with open(out, "wb") as f:
                    members.append(subprocess.Popen([sys.executable, "-c", _MEMBER, c.zookeeper, "group"], stdout=f, stderr=subprocess.STDOUT, env=env))
                outs.append(out)

            def latest(i: int) -> tuple[float, set[int]] | None:
                lines = [line.split() for line in outs[i].read_text().splitlines() if line.startswith("assigned")]
                if not lines:
                    return None
                parts = lines[-1][2].split(",") if len(lines[-1]) > 2 else []
                return float(lines[-1][1]), {int(p) for p in parts if p}

            def balanced(ids: list[int], share: int) -> float | None:
                views = [latest(i) for i in ids]
                if any(v is None or len(v[1]) != share for v in views):
                    return None
                owned = [v[1] for v in views]  # type: ignore[index]
                if set().union(*owned) != set(range(TOPIC_PARTITIONS)):
                    return None
                return max(v[0] for v in views)  # type: ignore[index]

            _wait(lambda: balanced([0, 1, 2], 2), 60, "3-member group balanced")
            t0 = time.time()
            members[0].send_signal(signal.SIGKILL)
            members[0].wait()
            done = _wait(lambda: balanced([1, 2], 3), 60, "2 survivors own all partitions")
            return {"rebalance_s": done - t0}
        finally:
            for m in members:
                if m.poll() is None:
                    m.kill()
                    m.wait()


# -- throughput -----------------------------------------------------------------------------

_PRODUCER = """
import sys, time
from annal.client.producer import Producer
zk, topic, seconds, start_at = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
value = b"v" * 100
p = Producer(zookeeper=zk, linger_ms=5, batch_size=65536, acks=1)
p.partitions_for(topic)
while time.time() < start_at:
    time.sleep(0.001)
t0 = time.monotonic()
cpu0 = time.process_time()
n = 0
send = p.send
while time.monotonic() - t0 < seconds:
    for _ in range(1000):
        send(topic, value)
    n += 1000
p.flush()
elapsed = time.monotonic() - t0
cpu = time.process_time() - cpu0
p.close()
print("records", n, "elapsed", elapsed, "cpu", cpu, flush=True)
"""


def _cpu_s(pid: int) -> float:
    """utime + stime of a live process, in seconds (from /proc/<pid>/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _produce_with(c: _Cluster, topic: str, producers: int, seconds: float) -> tuple[float, float]:
    """(records/s over all producers, CPU cores busy: brokers + producers CPU s / wall s)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    start_at = time.time() + 4.0  # every process has connected and fetched metadata by then
    procs = [
        subprocess.Popen([sys.executable, "-c", _PRODUCER, c.zookeeper, topic, str(seconds), str(start_at)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        for _ in range(producers)
    ]
    brokers = [b.proc.pid for b in c.cluster.running]
    time.sleep(max(0.0, start_at - time.time()))
    broker_cpu0 = sum(_cpu_s(pid) for pid in brokers)
    total = 0
    longest = 0.0
    producer_cpu = 0.0
    for p in procs:
        out, err = p.communicate(timeout=seconds + 120)
        if p.returncode != 0:
            raise RuntimeError(f"producer failed: {err[-2000:]}")
        fields = out.split()
        total += int(fields[1])
        longest = max(longest, float(fields[3]))
        producer_cpu += float(fields[5])
    broker_cpu = sum(_cpu_s(pid) for pid in brokers) - broker_cpu0
    return total / longest, (broker_cpu + producer_cpu) / longest


def run_throughput(session_timeout_ms: int, seconds: float) -> dict[str, float]:
    with _Cluster(3, session_timeout_ms) as c:
        c.create_topic("scale", TOPIC_PARTITIONS)
        cluster_rate, cluster_cores = _produce_with(c, "scale", 3, seconds)
    with _Cluster(1, session_timeout_ms) as c:
        c.create_topic("scale", TOPIC_PARTITIONS)
        single_rate, single_cores = _produce_with(c, "scale", 1, seconds)
    return {"cluster_rps": cluster_rate, "single_rps": single_rate, "cluster_cores": cluster_cores, "single_cores": single_cores}


# -- report ---------------------------------------------------------------------------------


def _machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"nproc={os.cpu_count()}, {model}, Python {platform.python_version()}"


def _fmt(values: list[float], unit: str, digits: int = 2) -> tuple[str, str]:
    med = statistics.median(values)
    if unit == "rec/s":
        return f"{med:,.0f} rec/s", ", ".join(f"{v:,.0f}" for v in values)
    return f"{med:.{digits}f} {unit}", ", ".join(f"{v:.{digits}f}" for v in values)


def _rows(name: str, runs: list[dict[str, float]], session_timeout_ms: int) -> list[tuple[str, str, str, str, str]]:
    """Table rows (figure, target, median, met, runs) of one figure's runs."""
    session_s = session_timeout_ms / 1000
    limit_s = session_s + 2

    def met(ok: bool) -> str:
        return "yes" if ok else "no"

    rows: list[tuple[str, str, str, str, str]] = []
    if name == "failover":
        values = [r["failover_s"] for r in runs]
        med, each = _fmt(values, "s")
        rows.append((f"SIGKILL of a broker -> producer sends only to live brokers (3 brokers, {session_s:g} s session)",
                     f"<= {limit_s:g} s", med, met(statistics.median(values) <= limit_s), each))
        med, each = _fmt([r["notify_s"] for r in runs], "s")
        rows.append(("of which: SIGKILL -> producer metadata marks the broker dead", "informational", med, "-", each))
    elif name == "rebalance":
        values = [r["rebalance_s"] for r in runs]
        med, each = _fmt(values, "s")
        rows.append((f"3-member group: SIGKILL of a member -> survivors own all 6 partitions ({session_s:g} s session)",
                     f"<= {limit_s:g} s", med, met(statistics.median(values) <= limit_s), each))
    elif name == "throughput":
        ratios = [r["cluster_rps"] / r["single_rps"] for r in runs]
        ok = statistics.median(ratios) > 1
        med, each = _fmt([r["cluster_rps"] for r in runs], "rec/s")
        rows.append(("3 producer processes -> 6 partitions over 3 brokers (100 B records)", "> the 1 x 1 figure below", med, met(ok), each))
        med, each = _fmt([r["single_rps"] for r in runs], "rec/s")
        rows.append(("1 producer process -> 6 partitions on 1 broker (100 B records)", "baseline", med, "-", each))
        med, each = _fmt(ratios, "x")
        rows.append(("scale-out ratio (3 x 3 / 1 x 1)", "> 1 x", med, met(ok), each))
        med, each = _fmt([r["cluster_cores"] for r in runs], "cores")
        rows.append(("CPU busy during 3 x 3 (brokers + producers CPU s / wall s)", f"informational (machine has {os.cpu_count()})", med, "-", each))
        med, each = _fmt([r["single_cores"] for r in runs], "cores")
        rows.append(("CPU busy during 1 x 1", f"informational (machine has {os.cpu_count()})", med, "-", each))
    return rows


def write_report(path: Path, figures: dict[str, dict[str, Any]]) -> None:
    """Write the markdown fragment from ``figures`` (name -> {"runs", "command", "date",
    "session_timeout_ms"}); hand-written notes (from the first ``### `` heading on) of the
    existing file are kept."""
    notes = ""
    if path.exists():
        old = path.read_text()
        at = old.find("\n### ")
        if at >= 0:
            notes = old[at + 1 :]
    lines = [
        "## Cluster mode (ZooKeeper)",
        "",
        f"Machine: {_machine()}. Each run starts a fresh local ZooKeeper (Debian package, tickTime 500 ms) "
        "and broker processes via `LocalCluster`; the median of the runs is reported.",
        "",
        "| Figure | Target | Median | Met | Runs | Command | Date |",
        "|---|---|---|---|---|---|---|",
    ]
    loads = []
    for name in ("failover", "rebalance", "throughput"):
        fig = figures.get(name)
        if not fig:
            continue
        for a, b, c, d, e in _rows(name, fig["runs"], fig["session_timeout_ms"]):
            lines.append(f"| {a} | {b} | {c} | {d} | {e} | `{fig['command']}` | {fig['date']} |")
        loads.append(f"{name}: " + "/".join(f"{r['load1_before']:.1f}" for r in fig["runs"]))
    lines += ["", f"1-minute load average before each run (other work shares this machine): {', '.join(loads)}.", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n" + (("\n" + notes) if notes else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m annal.bench.cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--session-timeout-ms", type=int, default=6000)
    parser.add_argument("--seconds", type=float, default=10.0, help="producer run length for the throughput figure")
    parser.add_argument("--only", default="failover,rebalance,throughput")
    parser.add_argument(
        "--out", default="cluster.md",
        help="Markdown table to write (its runs are kept beside it as .json); the repository's is "
        "docs/benchmarks/cluster.md",
    )
    args = parser.parse_args(argv)
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    out = Path(args.out)
    store = out.with_suffix(".json")  # every figure's runs; --only re-measures some, keeps the rest
    figures: dict[str, dict[str, Any]] = json.loads(store.read_text()) if store.exists() else {}
    command = ("python -m annal.bench.cluster " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    for name in wanted:
        if name not in ("failover", "rebalance", "throughput"):
            parser.error(f"unknown figure {name!r}")
        runs: list[dict[str, float]] = []
        for run in range(1, args.runs + 1):
            load1 = os.getloadavg()[0]  # the machine is shared: record how busy it was
            if name == "failover":
                r = run_failover(args.session_timeout_ms)
            elif name == "rebalance":
                r = run_rebalance(args.session_timeout_ms)
            else:
                r = run_throughput(args.session_timeout_ms, args.seconds)
            r["load1_before"] = load1
            runs.append(r)
            print(f"{name} run {run}: " + ", ".join(f"{k}={v:,.3f}" for k, v in r.items()), flush=True)
        figures[name] = {
            "runs": runs,
            "command": command,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "session_timeout_ms": args.session_timeout_ms,
            "seconds": args.seconds,
        }
        store.write_text(json.dumps(figures, indent=1, sort_keys=True) + "\n")
    write_report(out, figures)
    print(out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
