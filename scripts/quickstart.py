"""The Python half of ``bash scripts/run``: a local cluster, one topic, records through the SDK.

Steps, each announced with a ``==`` line:

1. ``annal cluster up --brokers 3 --data-dir DATA_DIR/cluster`` as a child process in its own
   session (so a Ctrl-C at the terminal reaches this script, which then stops the cluster in
   order), its output in ``DATA_DIR/cluster.log``; the bootstrap and ZooKeeper strings are read
   from that output.
2. ``Admin.create_topics``: topic ``quickstart`` with 6 partitions (two per broker).
3. ``Producer.send`` of ``--records`` records (key ``key-<i mod 1000>``, value: the record number
   in 8 ASCII digits padded to ``--record-size`` bytes), with a progress bar; every future must
   succeed.
4. ``Consumer`` in group ``quickstart`` from the earliest offset until every record came back;
   each record is checked: every number exactly once, offsets increasing within a partition,
   numbers increasing within a key (a key always maps to one partition). The group's offsets
   are committed (to ZooKeeper in cluster mode) and read back.
5. ``annal-bench produce`` and ``annal-bench consume`` against the same cluster; their final
   lines are printed.
6. The cluster is stopped (SIGTERM to its supervisor, SIGKILL to its process group after a
   grace period) and ``/proc`` is scanned: no process may still name DATA_DIR.

Exit status 0 only when every check passed. SIGINT and SIGTERM stop the run and still stop the
cluster. Output ends with a summary block (``records produced: N``, ``records consumed: N``,
``bench produce: ...``, ``bench consume: ...``), which tests/integration/test_quickstart.py reads.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

TOPIC = "quickstart"
BENCH_TOPIC = "quickstart-bench"
GROUP = "quickstart"


class RunFailed(Exception):
    """A step failed; the message says which and why."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived. A BaseException so that no ``except Exception`` swallows it."""


# ----------------------------------------------------------------------------- signals

_signalled: list[int] = []


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # Raise once; a second signal (bash forwards SIGTERM after the terminal's SIGINT) must not
    # interrupt the clean-up that the first one started.
    first = not _signalled
    _signalled.append(signum)
    if first:
        raise Interrupted(signal.Signals(signum).name)


def install_signal_handlers() -> None:
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)


# ----------------------------------------------------------------------------- processes


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def processes_naming(path: str) -> list[tuple[int, str]]:
    """Live processes (other than this one) whose command line contains ``path``."""
    out = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        cmd = _cmdline(int(entry))
        if path in cmd:
            out.append((int(entry), cmd.strip()))
    return out


def _annal_command(python: str, tool: str) -> list[str]:
    """``annal`` / ``annal-bench`` next to ``python`` (the venv's console script), else -c."""
    script = Path(python).parent / tool
    if script.exists():
        return [str(script)]
    module = "annal.broker.cli" if tool == "annal" else "annal.bench.cli"
    return [python, "-c", f"import sys; from {module} import main; sys.exit(main())"]


def _tail(path: Path, max_bytes: int = 3000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


@dataclass
class LocalCluster:
    """``annal cluster up`` (or one ``annal broker start --standalone``) as a child process.

    The child runs in its own session; its stdout and stderr go to ``log_path``. ``stop()``
    sends SIGTERM, waits ``stop_timeout_s``, then SIGKILLs the whole process group. Not
    thread-safe.
    """

    python: str
    data_dir: Path
    brokers: int = 3
    standalone: bool = False
    start_timeout_s: float = 120.0
    stop_timeout_s: float = 45.0
    process: subprocess.Popen[bytes] | None = None
    bootstrap_servers: str = ""
    zookeeper: str = ""
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.data_dir / "cluster.log"

    def command(self) -> list[str]:
        annal = _annal_command(self.python, "annal")
        if self.standalone:
            from annal.broker.coordination.zk_server import find_free_port

            self.bootstrap_servers = f"127.0.0.1:{find_free_port()}"
            fetch, metrics = find_free_port(), find_free_port()
            return [*annal, "broker", "start", "--standalone",
                    "--data-dir", str(self.data_dir / "broker"),
                    "--port", self.bootstrap_servers.rsplit(":", 1)[1],
                    "--fetch-port", str(fetch), "--metrics-port", str(metrics),
                    "--kafka-port", "0"]  # fmt: skip
        return [*annal, "cluster", "up", "--brokers", str(self.brokers),
                "--data-dir", str(self.data_dir / "cluster")]  # fmt: skip

    def start(self) -> None:
        cmd = self.command()
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it; closed by exit
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=env, start_new_session=True,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RunFailed(
                    f"`{' '.join(cmd)}` exited with {self.process.returncode}:\n{_tail(self.log_path)}"
                )
            if self._ready():
                return
            time.sleep(0.1)
        raise RunFailed(f"the cluster was not ready after {self.start_timeout_s:.0f} s:\n{_tail(self.log_path)}")

    def _ready(self) -> bool:
        if self.standalone:
            from annal.broker.server.health import UnhealthyError, check

            try:
                check(self.bootstrap_servers, timeout_ms=1000)
                return True
            except UnhealthyError:
                return False
        # `annal cluster up` prints machine-parsable lines, then "cluster ready: ...".
        text = _tail(self.log_path, 64_000)
        if not re.search(r"^cluster ready:", text, re.MULTILINE):
            return False
        bootstrap = re.search(r"^bootstrap_servers=(\S+)", text, re.MULTILINE)
        zookeeper = re.search(r"^zookeeper=(\S+)", text, re.MULTILINE)
        if bootstrap is None or zookeeper is None:
            raise RunFailed(f"`annal cluster up` did not print bootstrap_servers= and zookeeper=:\n{text}")
        self.bootstrap_servers = bootstrap.group(1)
        self.zookeeper = zookeeper.group(1)
        return True

    def stop(self) -> int | None:
        """Stop the cluster; returns its exit status (None if it had to be killed)."""
        p = self.process
        if p is None:
            return None
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                print(f"== the cluster did not stop in {self.stop_timeout_s:.0f} s: killing it", file=sys.stderr)
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
                return None
        # Its children may outlive a crashed supervisor: the group goes too.
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return p.returncode


# ----------------------------------------------------------------------------- steps


@dataclass
class Summary:
    produced: int = 0
    produce_s: float = 0.0
    consumed: int = 0
    consume_s: float = 0.0
    record_size: int = 0
    committed: int = 0
    bench_lines: dict[str, str] = field(default_factory=dict)
    leftovers: list[tuple[int, str]] = field(default_factory=list)


def _progress(total: int, desc: str):  # type: ignore[no-untyped-def]
    from tqdm import tqdm

    # disable=None: a bar on a terminal, nothing when the output is a pipe or a file.
    return tqdm(total=total, desc=desc, unit="rec", unit_scale=True, mininterval=0.25,
                disable=None, file=sys.stderr, dynamic_ncols=True)  # fmt: skip


def _value(i: int, size: int) -> bytes:
    head = b"%08d" % i
    return head + b"." * (size - len(head)) if size > len(head) else head


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    from annal.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError
    from annal.client import Admin, NewTopic

    admin = Admin(bootstrap_servers=bootstrap)
    try:
        try:
            admin.create_topics([NewTopic(name, partitions)])
        except TopicAlreadyExistsError:
            pass
        # Every broker learns of the topic through its ZooKeeper watch, so the broker that
        # answers may not know it yet: wait until one answer shows every partition led.
        deadline = time.monotonic() + 30
        leaders: list[int] = []
        while True:
            try:
                description = admin.describe_topics([name])[0]
                leaders = [p.leader for p in description.partitions]
            except UnknownTopicOrPartitionError:
                leaders = []
            if len(leaders) == partitions and all(leader >= 0 for leader in leaders):
                print(f"   topic {name}: {partitions} partitions, leaders {leaders}")
                return
            if time.monotonic() > deadline:
                raise RunFailed(f"topic {name} has no leader for every partition: {leaders}")
            time.sleep(0.1)
    finally:
        admin.close()


def produce(bootstrap: str, records: int, record_size: int, summary: Summary) -> None:
    from annal.client import Producer

    producer = Producer(bootstrap_servers=bootstrap, acks=1, linger_ms=5)
    futures = []
    start = time.perf_counter()
    try:
        with _progress(records, "produce") as bar:
            step = 0
            for i in range(records):
                futures.append(producer.send(TOPIC, _value(i, record_size), key=b"key-%d" % (i % 1000)))
                step += 1
                if step == 1000:
                    bar.update(step)
                    step = 0
            producer.flush(timeout=120)
            bar.update(step)
    finally:
        producer.close(timeout=10)
    elapsed = time.perf_counter() - start
    failed = [f.exception for f in futures if not f.succeeded()]
    if failed:
        raise RunFailed(f"{len(failed)} of {records} sends failed; first: {failed[0]!r}")
    summary.produced = records
    summary.produce_s = elapsed


def consume(bootstrap: str, zookeeper: str, records: int, summary: Summary, idle_timeout_s: float = 60.0) -> None:
    """Read the topic back and check every record. With ``zookeeper`` (cluster mode) as a
    member of group ``quickstart``, committing at the end; standalone, with every partition
    assigned and no group (groups live in ZooKeeper)."""
    from annal.client import Consumer, TopicPartition

    if zookeeper:
        consumer = Consumer(TOPIC, bootstrap_servers=bootstrap, group_id=GROUP, zookeeper=zookeeper,
                            auto_offset_reset="earliest", enable_auto_commit=False)  # fmt: skip
    else:
        consumer = Consumer(TOPIC, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    seen = bytearray(records)
    last_offset: dict[tuple[str, int], int] = {}
    last_of_key: dict[bytes, int] = {}
    count = 0
    start = time.perf_counter()
    last_progress = time.monotonic()
    try:
        with _progress(records, "consume") as bar:
            while count < records:
                batches = consumer.poll(timeout_ms=500)
                got = 0
                for tp_records in batches.values():
                    for r in tp_records:
                        n = int(r.value[:8])
                        if not 0 <= n < records:
                            raise RunFailed(f"record {r.topic}-{r.partition}@{r.offset} has number {n}")
                        if seen[n]:
                            raise RunFailed(f"record {n} consumed twice (again at {r.topic}-{r.partition}@{r.offset})")
                        seen[n] = 1
                        tp = (r.topic, r.partition)
                        if last_offset.get(tp, -1) >= r.offset:
                            raise RunFailed(f"offsets went back in {tp}: {last_offset[tp]} then {r.offset}")
                        last_offset[tp] = r.offset
                        if last_of_key.get(r.key, -1) >= n:
                            raise RunFailed(f"key {r.key!r}: record {n} after {last_of_key[r.key]}")
                        last_of_key[r.key] = n
                        got += 1
                if got:
                    count += got
                    bar.update(got)
                    last_progress = time.monotonic()
                elif time.monotonic() - last_progress > idle_timeout_s:
                    raise RunFailed(f"consumed {count} of {records}, then nothing for {idle_timeout_s:.0f} s")
        summary.consume_s = time.perf_counter() - start
        summary.consumed = count
        if zookeeper:
            consumer.commit()
            committed = 0
            for topic, partition in last_offset:
                committed += consumer.committed(TopicPartition(topic, partition)) or 0
            summary.committed = committed
            if committed != records:
                raise RunFailed(f"the group committed offsets summing to {committed}, expected {records}")
    finally:
        consumer.close()


def run_bench(python: str, bootstrap: str, records: int, record_size: int, summary: Summary) -> None:
    bench = _annal_command(python, "annal-bench")
    for mode in ("produce", "consume"):
        cmd = [*bench, mode, "--bootstrap-server", bootstrap, "--topic", BENCH_TOPIC,
               "--num-records", str(records), "--record-size", str(record_size)]  # fmt: skip
        print(f"   $ annal-bench {' '.join(cmd[len(bench):])}")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        lines: list[str] = []
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip()
                lines.append(line)
                print(f"   | {line}")
            proc.wait()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait()
        if proc.returncode != 0:
            raise RunFailed(f"annal-bench {mode} exited with {proc.returncode}")
        summary.bench_lines[mode] = _bench_result(lines)


def _bench_result(lines: list[str]) -> str:
    """The tool's result line: the producer's last ``N records sent, ...`` line, or the
    consumer's Kafka CSV row turned into words."""
    for i, line in enumerate(lines):
        if line.startswith("start.time,") and i + 1 < len(lines):
            row = dict(zip((h.strip() for h in line.split(",")), (v.strip() for v in lines[i + 1].split(","))))
            try:
                return (f"{int(row['data.consumed.in.nMsg'])} records consumed, "
                        f"{float(row['nMsg.sec']):.1f} records/sec ({float(row['MB.sec']):.2f} MB/sec), "
                        f"{int(row['fetch.time.ms'])} ms")  # fmt: skip
            except (KeyError, ValueError):
                break
    final = [ln for ln in lines if re.search(r"\brecords sent\b", ln)]
    return (final or lines or ["(no output)"])[-1].strip()


# ----------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    env_records = os.environ.get("ANNAL_RUN_RECORDS", "").replace("_", "").replace(",", "")
    parser = argparse.ArgumentParser(
        prog="bash scripts/run",
        description="Start a local Annal cluster, produce and consume through the SDK, bench it, stop it.",
        epilog="Environment: ANNAL_RUN_RECORDS (default --records), ANNAL_RUN_DIR (the directory "
               "everything goes under; default a new temporary one), ANNAL_RUN_PYTHON (an interpreter "
               "with Annal installed: skips the set-up).",
    )
    # Given by scripts/run, which also removes the directory and every process under it.
    parser.add_argument("--data-dir", required=True, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--records", type=int, default=int(env_records) if env_records.isdigit() else 100_000,
                        help="records to produce and consume through the SDK (default: 100000, or $ANNAL_RUN_RECORDS)")
    parser.add_argument("--record-size", type=int, default=100, help="bytes per record value (default: %(default)s)")
    parser.add_argument("--brokers", type=int, default=3, help="brokers in the local cluster (default: %(default)s)")
    parser.add_argument("--standalone", action="store_true",
                        help="one standalone broker instead of a ZooKeeper cluster (no Java needed)")
    parser.add_argument("--bench-records", type=int, default=None,
                        help="records per annal-bench run (default: 2 x --records; 0 skips the bench)")
    parser.add_argument("--keep-data", action="store_true",
                        help="keep the run's directory (data and logs) afterwards; its path is printed")
    return parser  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    env_records = os.environ.get("ANNAL_RUN_RECORDS", "")
    if env_records and not env_records.replace("_", "").replace(",", "").isdigit():
        parser.error(f"ANNAL_RUN_RECORDS must be a whole number, not {env_records!r}")
    args = parser.parse_args(argv)
    if args.records <= 0 or args.record_size < 8 or args.brokers <= 0:
        print("error: --records and --brokers must be > 0 and --record-size >= 8", file=sys.stderr)
        return 2
    bench_records = 2 * args.records if args.bench_records is None else args.bench_records
    install_signal_handlers()
    data_dir = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    summary = Summary(record_size=args.record_size)
    cluster = LocalCluster(sys.executable, data_dir, brokers=args.brokers, standalone=args.standalone)
    rc = 0
    try:
        what = "a standalone broker" if args.standalone else f"ZooKeeper and {args.brokers} brokers"
        print(f"== starting {what} under {data_dir}  (log: {cluster.log_path})", flush=True)
        cluster.start()
        print(f"   bootstrap servers: {cluster.bootstrap_servers}")
        if cluster.zookeeper:
            print(f"   zookeeper: {cluster.zookeeper}")
        partitions = 2 * (1 if args.standalone else args.brokers)
        print(f"== creating topic {TOPIC}", flush=True)
        create_topic(cluster.bootstrap_servers, TOPIC, partitions)
        print(f"== producing {args.records:,} records of {args.record_size} bytes", flush=True)
        produce(cluster.bootstrap_servers, args.records, args.record_size, summary)
        if cluster.zookeeper:
            print(f"== consuming them in group {GROUP}", flush=True)
        else:
            print("== consuming them (every partition, no group)", flush=True)
        consume(cluster.bootstrap_servers, cluster.zookeeper, args.records, summary)
        if bench_records > 0:
            print(f"== annal-bench against the cluster ({bench_records:,} records)", flush=True)
            create_topic(cluster.bootstrap_servers, BENCH_TOPIC, partitions)
            run_bench(sys.executable, cluster.bootstrap_servers, bench_records, args.record_size, summary)
    except RunFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        rc = 1
    except Interrupted as exc:
        print(f"\n== {exc}: stopping", file=sys.stderr)
        rc = 130
    except Exception as exc:  # an SDK error: report it, then still stop the cluster
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        rc = 1
    finally:
        print("== stopping the cluster", flush=True)
        status = cluster.stop()
        summary.leftovers = processes_naming(str(data_dir))
    if status not in (0, None) and rc == 0:
        print(f"error: the cluster exited with status {status}:\n{_tail(cluster.log_path)}", file=sys.stderr)
        rc = 1
    if summary.leftovers:
        for pid, cmd in summary.leftovers:
            print(f"error: process {pid} still running: {cmd}", file=sys.stderr)
        rc = rc or 1
    _print_summary(summary, rc)
    return rc


def _print_summary(s: Summary, rc: int) -> None:
    print("== summary")
    if s.produced:
        mb = s.produced * s.record_size / 1e6
        print(f"records produced: {s.produced}  ({s.produced / s.produce_s:,.0f} records/s, "
              f"{mb / s.produce_s:.1f} MB/s, {s.produce_s:.2f} s)")  # fmt: skip
    if s.consumed:
        group = f"; group offsets committed: {s.committed}" if s.committed else ""
        print(f"records consumed: {s.consumed}  ({s.consumed / max(s.consume_s, 1e-9):,.0f} records/s, "
              f"{s.consume_s:.2f} s; each once, in order per partition and per key{group})")  # fmt: skip
    for mode, line in s.bench_lines.items():
        print(f"bench {mode}: {line}")
    if not s.leftovers:
        print("processes left behind: none")
    print("result: " + ("ok" if rc == 0 else f"FAILED (exit {rc})"))


if __name__ == "__main__":
    sys.exit(main())
