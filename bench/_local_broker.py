"""A throwaway standalone broker for ``annal-bench`` runs given no ``--bootstrap-server``.

``LocalBroker`` makes a temporary data directory (or uses the one it is given) and starts ``python -m annal.broker broker start
--standalone --data-dir <tmp> --host 127.0.0.1 --port 0 --fetch-port 0 --metrics-port 0`` as a
child process in its own session, so a Ctrl-C at the terminal reaches the bench, not the broker,
and the bench stops the broker cleanly. The broker's stdout and stderr go to ``broker.log`` in a second
temporary directory, whose tail is printed if the broker fails to start or dies. On ``stop()``
the broker gets SIGTERM (SIGKILL after ``stop_timeout_s``) and both directories are removed.

The broker binds free ports itself (port 0) and logs one line once it serves, which gives them::

    annal broker 0 ready: grpc=127.0.0.1:40123 data=127.0.0.1:40124 metrics=127.0.0.1:40125 data_dir=...

``start()`` waits for that line (and checks both ports accept a connection).

Not thread-safe: one owner starts and stops it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from types import TracebackType
from typing import Any

__all__ = ["LocalBroker", "LocalBrokerError", "wait_for_port"]

_READY = re.compile(r"ready: grpc=([^\s:]+):(\d+) data=([^\s:]+):(\d+)")
_KAFKA = re.compile(r"ready: .* kafka=[^\s:]+:(\d+)")


def add_broker_pythonpath_option(parser: Any) -> None:
    """``--broker-pythonpath``: A/B comparisons of broker code with the same benchmark client."""
    parser.add_argument("--broker-pythonpath", default=None,
                        help="start the broker with this PYTHONPATH (an 'annal' package tree of other code: A/B "
                             "comparisons in one run; this benchmark's own client code stays the same)")


def use_broker_pythonpath(path: str | None) -> None:
    """Start every later ``LocalBroker`` with the ``annal`` tree at ``path`` (when given).
    Only the broker subprocess reads it: this process has imported its code already."""
    if path:
        os.environ["PYTHONPATH"] = path
        os.environ["PYTHONSAFEPATH"] = "1"


class LocalBrokerError(RuntimeError):
    """The local broker could not be started (its log tail is in the message)."""


def wait_for_port(host: str, port: int, deadline: float, alive: "subprocess.Popen[bytes] | None" = None) -> bool:
    """Poll until a TCP connect to (host, port) succeeds, the deadline passes, or ``alive`` exits."""
    while time.monotonic() < deadline:
        if alive is not None and alive.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class LocalBroker:
    """A standalone broker child process on a temporary data directory (see module docstring)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        extra_args: list[str] | None = None,
        start_timeout_s: float = 30.0,
        stop_timeout_s: float = 15.0,
        python: str = sys.executable,
        data_dir: str | None = None,
        kafka_port: int | None = 0,
    ) -> None:
        """``extra_args`` go after the defaults, so they override them (argparse keeps the last
        value): ``["--metrics-port", "-1", "--log-level", "WARNING"]``, say. A ``data_dir``
        given here is used as it is and kept on ``stop()``; by default a temporary one is made
        and removed. ``kafka_port``: the Kafka listener's port (0: any free one, -1: none); None
        leaves out ``--kafka-port`` (for an A/B base broker that predates the Kafka listener)."""
        self.host = host
        self.extra_args = list(extra_args or [])
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.python = python
        self.port = 0
        self.fetch_port = 0
        self.kafka_port = 0  # the Kafka protocol listener (annal.bench.kafka_clients)
        self._kafka_arg = kafka_port
        self._given_data_dir = data_dir
        self.data_dir = ""
        self._log_dir = ""
        self._log_file: object | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    bootstrap = bootstrap_servers

    @property
    def log_path(self) -> str:
        return os.path.join(self._log_dir, "broker.log")

    def command(self) -> list[str]:
        return [
            self.python, "-m", "annal.broker", "broker", "start", "--standalone",
            "--data-dir", self.data_dir,
            "--host", self.host,
            "--port", "0",
            "--fetch-port", "0",
            *(["--kafka-port", str(self._kafka_arg)] if self._kafka_arg is not None else []),
            "--metrics-port", "0",
            *self.extra_args,
        ]  # fmt: skip

    def log_tail(self, max_bytes: int = 4000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - max_bytes))
                return f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def _read_ready_line(self, deadline: float) -> bool:
        """Wait for the broker's ready line in its log; set the ports from it."""
        assert self.process is not None
        while time.monotonic() < deadline:
            m = _READY.search(self.log_tail(64 * 1024))
            if m:
                self.host = m.group(1)
                self.port = int(m.group(2))
                self.fetch_port = int(m.group(4))
                k = _KAFKA.search(self.log_tail(64 * 1024))
                self.kafka_port = int(k.group(1)) if k else 0
                return True
            if self.process.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def start(self) -> LocalBroker:
        """Start the broker and wait until it serves; raises ``LocalBrokerError`` otherwise."""
        if self._given_data_dir is not None:
            os.makedirs(self._given_data_dir, exist_ok=True)
            self.data_dir = self._given_data_dir
        else:
            self.data_dir = tempfile.mkdtemp(prefix="annal-bench-data-")
        self._log_dir = tempfile.mkdtemp(prefix="annal-bench-log-")
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log_file = log
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.process = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=env, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + self.start_timeout_s
        if (
            self._read_ready_line(deadline)
            and wait_for_port(self.host, self.port, deadline, self.process)
            and wait_for_port(self.host, self.fetch_port, deadline, self.process)
        ):
            return self
        last = self.log_tail()
        rc = self.process.poll()
        self.stop()
        state = f"exited with code {rc}" if rc is not None else f"not ready within {self.start_timeout_s} s"
        raise LocalBrokerError(f"the local broker {state}; last log lines:\n{last}")

    def _terminate(self) -> int | None:
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=self.stop_timeout_s)
            except ProcessLookupError:
                pass
        self.process = None
        return proc.returncode

    def _remove_dirs(self) -> None:
        dirs = [self._log_dir] if self._given_data_dir is not None else [self.data_dir, self._log_dir]
        for d in dirs:
            if d:
                shutil.rmtree(d, ignore_errors=True)
        self.data_dir = ""
        self._log_dir = ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> int | None:
        """Stop the broker and remove its directories; returns its exit code."""
        rc = self._terminate()
        if self._log_file is not None:
            self._log_file.close()  # type: ignore[attr-defined]
            self._log_file = None
        self._remove_dirs()
        return rc

    def __enter__(self) -> LocalBroker:
        return self.start() if self.process is None else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
