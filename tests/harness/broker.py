"""Run a real Annal broker process for tests and benchmarks.

    with BrokerProcess(tmp_path / "data") as b:          # python -m annal.broker broker start --standalone
        client = Producer(bootstrap_servers=b.bootstrap)  # "127.0.0.1:<grpc port>"
        ... b.fetch_port, b.metrics_port ...
        b.restart()                                       # SIGTERM, wait, start again on the same ports
        b.kill()                                          # SIGKILL (a crash)

The broker binds port 0 (the OS picks free ports, so there is no race between choosing and
binding) and reports the ports it got in its "ready" log line, which ``start()`` waits for by
polling the log file (with a deadline) while watching the process; a broker that exits or does not
get ready in time raises ``BrokerStartError`` with its log. ``restart()`` reuses the ports chosen
the first time, so a client's bootstrap address stays valid. The log (stdout + stderr) goes to
``log_path``; ``log_text()`` returns it.

Pytest fixtures (imported by tests/integration/conftest.py): ``broker`` (one started standalone
broker per test, data dir under tmp_path) and ``broker_factory`` (call it to start more, with
extra arguments or a config dict written as TOML). At teardown each broker is stopped; a failed
test's report gets each broker's log (``BrokerLogPlugin``, registered by ``register_plugin`` from
the conftest's ``pytest_configure``).

Not thread-safe: drive one ``BrokerProcess`` from one thread.
"""

from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Generator, Iterator, Mapping, Sequence

import pytest

__all__ = [
    "BrokerProcess",
    "BrokerStartError",
    "BrokerLogPlugin",
    "register_plugin",
    "attach_logs",
    "broker",
    "broker_factory",
    "write_toml",
]

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
_READY = re.compile(
    r"annal broker (?P<id>\d+) ready: grpc=(?P<host>\S+):(?P<port>\d+) data=\S+:(?P<fetch>\d+) "
    r"metrics=(?:\S+:(?P<metrics>\d+)|off)"
)


_KAFKA = re.compile(r"annal broker \d+ ready: .* kafka=\S+:(?P<kafka>\d+)")


class BrokerStartError(RuntimeError):
    """The broker exited or did not report ready in time; the message holds its log."""


def write_toml(path: pathlib.Path, config: Mapping[str, Any]) -> pathlib.Path:
    """Write a flat TOML file (plus one level of tables) from a dict; enough for broker configs."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f"{k} = {value(v)}" for k, v in config.items() if not isinstance(v, Mapping)]
    for k, v in config.items():
        if isinstance(v, Mapping):
            lines.append(f"\n[{k}]")
            lines.extend(f"{kk} = {value(vv)}" for kk, vv in v.items())
    path.write_text("\n".join(lines) + "\n")
    return path


class BrokerProcess:
    """One ``python -m annal.broker broker start`` process on 127.0.0.1."""

    def __init__(
        self,
        data_dir: pathlib.Path | str,
        *,
        extra_args: Sequence[str] = (),
        config: Mapping[str, Any] | None = None,
        broker_id: int | None = None,
        port: int = 0,
        fetch_port: int = 0,
        metrics_port: int = 0,
        kafka_port: int = 0,
        log_level: str = "INFO",
        log_path: pathlib.Path | str | None = None,
        env: Mapping[str, str] | None = None,
        python: str = sys.executable,
    ) -> None:
        self.data_dir = pathlib.Path(data_dir)
        self.extra_args = list(extra_args)
        self.config = dict(config) if config else None
        self.broker_id = broker_id
        self.host = "127.0.0.1"
        self.port = port
        self.fetch_port = fetch_port
        self.metrics_port = metrics_port
        self.kafka_port = kafka_port
        self.log_level = log_level
        self.log_path = pathlib.Path(log_path) if log_path else self.data_dir.parent / f"{self.data_dir.name}.broker.log"
        self.env = dict(env) if env else None
        self.python = python
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self._log_file: Any = None
        self._log_offset = 0

    # ------------------------------------------------------------------ properties

    @property
    def bootstrap(self) -> str:
        """``"127.0.0.1:<grpc port>"``, for ``bootstrap_servers``."""
        return f"{self.host}:{self.port}"

    @property
    def kafka_bootstrap(self) -> str:
        """``"127.0.0.1:<Kafka port>"``, for Kafka clients' ``bootstrap.servers``."""
        return f"{self.host}:{self.kafka_port}"

    @property
    def fetch_address(self) -> tuple[str, int]:
        return (self.host, self.fetch_port)

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        args = [self.python, "-m", "annal.broker", "broker", "start"]
        if "--zookeeper" not in self.extra_args:
            args.append("--standalone")
        args += ["--data-dir", str(self.data_dir), "--host", self.host, "--port", str(self.port),
                 "--fetch-port", str(self.fetch_port), "--metrics-port", str(self.metrics_port),
                 "--kafka-port", str(self.kafka_port),
                 "--log-level", self.log_level]
        if self.broker_id is not None:
            args += ["--broker-id", str(self.broker_id)]
        if self.config:
            cfg_path = self.data_dir.parent / f"{self.data_dir.name}.broker.toml"
            write_toml(cfg_path, self.config)
            args += ["--config", str(cfg_path)]
        return args + self.extra_args

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 60.0) -> "BrokerProcess":
        """Start the process and wait until it logs its ready line (raises BrokerStartError)."""
        assert not self.running, "already running"
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")
        self._log_offset = self._log_file.tell()
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        if self.env:
            env.update(self.env)
        self.returncode = None
        self.proc = subprocess.Popen(
            self.command(), stdout=self._log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=str(REPO_ROOT), env=env,
        )
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            text = self._read_log(self._log_offset)
            m = _READY.search(text)
            if m:
                self.port = int(m["port"])
                self.fetch_port = int(m["fetch"])
                self.metrics_port = int(m["metrics"]) if m["metrics"] else -1
                self.broker_id = int(m["id"])
                k = _KAFKA.search(text)
                self.kafka_port = int(k["kafka"]) if k else -1
                return
            try:
                rc = self.proc.wait(timeout=0.02)  # the poll interval; returns early if it exits
            except subprocess.TimeoutExpired:
                rc = None
            if rc is not None:
                self.returncode = rc
                self._close_log()
                raise BrokerStartError(f"broker exited with status {rc} before it was ready:\n{self.log_text()}")
            if time.monotonic() > deadline:
                self.kill()
                raise BrokerStartError(f"broker not ready after {timeout:.0f} s:\n{self.log_text()}")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait for the exit; returns the exit status (SIGKILL after ``timeout``)."""
        return self._signal_and_wait(signal.SIGTERM, timeout)

    def kill(self) -> int:
        """SIGKILL (a crash: nothing is flushed) and wait."""
        return self._signal_and_wait(signal.SIGKILL, 30.0)

    def restart(self, timeout: float = 60.0) -> "BrokerProcess":
        """Stop (cleanly) if running, then start again on the same data dir and ports."""
        if self.running:
            self.stop()
        return self.start(timeout)

    def _signal_and_wait(self, sig: int, timeout: float) -> int:
        if self.proc is None:
            return self.returncode if self.returncode is not None else 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.returncode = self.proc.returncode
        self.proc = None
        self._close_log()
        return self.returncode

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    # ------------------------------------------------------------------ log

    def _read_log(self, offset: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_text(self) -> str:
        """Everything the broker logged (all runs of this object)."""
        return self._read_log(0)

    def wait_for_log(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """Poll the log (with a deadline) until ``pattern`` (a regex) appears in it."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log_text())
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not in the broker log after {timeout} s:\n{self.log_text()}")
            if self.proc is not None:
                try:
                    self.proc.wait(timeout=0.02)
                except subprocess.TimeoutExpired:
                    pass
            else:
                time.sleep(0.02)

    def __enter__(self) -> "BrokerProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.proc.pid}" if self.proc else f"exited={self.returncode}"
        return f"BrokerProcess({self.bootstrap}, fetch_port={self.fetch_port}, {state}, data_dir={self.data_dir})"


# ---------------------------------------------------------------------- pytest fixtures


_BROKERS = pytest.StashKey[list]()


class BrokerLogPlugin:
    """Adds the log of every broker a failed test started to its report (register once per
    session: ``config.pluginmanager.register(BrokerLogPlugin(), BrokerLogPlugin.name)``)."""

    name = "annal-broker-logs"

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
        outcome: Any = yield
        report = outcome.get_result()
        if report.failed:
            for b in item.stash.get(_BROKERS, []):
                lines = b.log_text().splitlines()[-300:]
                report.sections.append((f"broker log of {b!r} (last 300 lines)", "\n".join(lines)))


def attach_logs(request: pytest.FixtureRequest, *brokers: BrokerProcess) -> None:
    """Attach these brokers' logs to the report if the requesting test fails (for brokers
    shared by a module, which the function-scoped fixtures do not know about)."""
    request.node.stash.setdefault(_BROKERS, []).extend(brokers)


def register_plugin(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin(BrokerLogPlugin.name):
        config.pluginmanager.register(BrokerLogPlugin(), BrokerLogPlugin.name)


@pytest.fixture
def broker_factory(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[Callable[..., BrokerProcess]]:
    """``broker_factory(name=None, start=True, **BrokerProcess kwargs) -> BrokerProcess``; every
    broker made is stopped at teardown, and its log is attached to the report of a failed test."""
    started: list[BrokerProcess] = request.node.stash.setdefault(_BROKERS, [])

    def make(name: str | None = None, *, start: bool = True, **kwargs: Any) -> BrokerProcess:
        name = name or f"broker{len(started)}"
        b = BrokerProcess(tmp_path / name, **kwargs)
        started.append(b)
        if start:
            b.start()
        return b

    yield make
    for b in started:
        b.stop()


@pytest.fixture
def broker(broker_factory: Callable[..., BrokerProcess]) -> BrokerProcess:
    """One started standalone broker on free ports, data dir under tmp_path."""
    return broker_factory("broker")
