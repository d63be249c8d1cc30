"""Run a standalone ZooKeeper server (the Debian ``zookeeper`` package) as a child process.

Used by ``annal cluster up`` and by the integration-test fixtures. The server gets its own
directory::

    <data_dir>/zoo.cfg          generated config (loopback clientPort, small tickTime)
    <data_dir>/data/            snapshots and transaction log (kept across restart())
    <data_dir>/zookeeper.log    the server's stdout+stderr (slf4j-simple logs to stderr)

The Java class path is ``/usr/share/java/zookeeper.jar`` (its manifest lists its own
dependencies) plus slf4j-simple for readable logs; ``ZOOKEEPER_CLASSPATH`` overrides it.
Readiness is checked with the ``ruok`` four-letter word, so the config whitelists it.

Not thread-safe: one thread starts and stops a given server.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = [
    "ZooKeeperNotInstalledError",
    "ZooKeeperServer",
    "find_free_port",
    "zookeeper_classpath",
    "four_letter_word",
    "INSTALL_HINT",
    "die_with_parent",
]

log = logging.getLogger(__name__)

INSTALL_HINT = "install it with: apt-get install -y zookeeper  (the package pulls in a Java runtime)"
_ZK_JAR = "/usr/share/java/zookeeper.jar"
_LOG_JARS = ("/usr/share/java/slf4j-simple.jar",)
_MAIN = "org.apache.zookeeper.server.ZooKeeperServerMain"


class ZooKeeperNotInstalledError(RuntimeError):
    """java or the ZooKeeper jars are missing; the message says how to install them."""


def find_free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the caller retries on the rare collision)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def zookeeper_classpath() -> str:
    """The class path that runs ZooKeeperServerMain; raises ZooKeeperNotInstalledError."""
    override = os.environ.get("ZOOKEEPER_CLASSPATH")
    if override:
        return override
    if not os.path.exists(_ZK_JAR):
        raise ZooKeeperNotInstalledError(f"ZooKeeper is not installed ({_ZK_JAR} is missing); {INSTALL_HINT}")
    parts = [_ZK_JAR] + [j for j in _LOG_JARS if os.path.exists(j)]
    return ":".join(parts)


def _java() -> str:
    java = shutil.which("java") or (os.path.join(os.environ["JAVA_HOME"], "bin", "java") if os.environ.get("JAVA_HOME") else None)
    if not java or not os.path.exists(java):
        raise ZooKeeperNotInstalledError(f"java was not found on PATH; {INSTALL_HINT}")
    return java


def four_letter_word(host: str, port: int, word: str = "ruok", timeout_s: float = 1.0) -> str:
    """Send a ZooKeeper four-letter command and return the reply ('' on any socket error)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as s:
            s.sendall(word.encode("ascii"))
            chunks = []
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
            return b"".join(chunks).decode("utf-8", "replace")
    except OSError:
        return ""


def die_with_parent() -> None:
    """preexec_fn: ask Linux to SIGKILL the child when the parent dies (PR_SET_PDEATHSIG)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 == PR_SET_PDEATHSIG
    except OSError:
        pass


class ZooKeeperServer:
    """One standalone ZooKeeper server on 127.0.0.1.

    ``port=0`` picks a free port at the first start; restart() keeps the port and the data,
    so clients reconnect to the same address and sessions survive a quick restart, as they
    do with a real ensemble member coming back.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        tick_time_ms: int = 500,
        min_session_timeout_ms: int = 1000,
        max_session_timeout_ms: int = 60000,
        die_with_parent: bool = True,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = int(port)
        self._port_fixed = bool(port)
        self.tick_time_ms = tick_time_ms
        self.min_session_timeout_ms = min_session_timeout_ms
        self.max_session_timeout_ms = max_session_timeout_ms
        self.die_with_parent = die_with_parent
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: object | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "zookeeper.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _write_config(self) -> Path:
        (self.data_dir / "data").mkdir(parents=True, exist_ok=True)
        cfg = self.data_dir / "zoo.cfg"
        cfg.write_text(
            "\n".join(
                [
                    f"tickTime={self.tick_time_ms}",
                    f"dataDir={(self.data_dir / 'data').resolve()}",
                    f"clientPort={self.port}",
                    f"clientPortAddress={self.host}",
                    f"minSessionTimeout={self.min_session_timeout_ms}",
                    f"maxSessionTimeout={self.max_session_timeout_ms}",
                    "maxClientCnxns=0",
                    "4lw.commands.whitelist=*",
                    "admin.enableServer=false",
                    # Tests and a local cluster do not need a durable fsync per write.
                    "forceSync=no",
                    "",
                ]
            )
        )
        return cfg

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the server and wait until it answers ``imok``; raises RuntimeError with
        the server's log tail if it exits or does not answer in time."""
        if self.running:
            return
        java = _java()
        classpath = zookeeper_classpath()
        attempts = 1 if self._port_fixed else 5
        for attempt in range(attempts):
            if not self._port_fixed and (self.port == 0 or attempt > 0):
                self.port = find_free_port(self.host)
            cfg = self._write_config()
            self.data_dir.mkdir(parents=True, exist_ok=True)
            log_file = open(self.log_path, "ab")
            cmd = [
                java,
                "-Xmx256m",
                "-XX:+UseSerialGC",
                "-Dzookeeper.jmx.log4j.disable=true",
                "-Dorg.slf4j.simpleLogger.showDateTime=true",
                "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS",
                "-cp",
                classpath,
                _MAIN,
                str(cfg.resolve()),
            ]
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=str(self.data_dir),
                preexec_fn=die_with_parent if self.die_with_parent else None,
            )
            log_file.close()
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    break
                if four_letter_word(self.host, self.port, "ruok", 0.5) == "imok":
                    log.info("ZooKeeper server pid %d listening on %s", self._proc.pid, self.address)
                    return
                time.sleep(0.05)
            tail = self.log_tail(40)
            self._kill()
            if "Address already in use" in tail and not self._port_fixed:
                continue
            raise RuntimeError(f"ZooKeeper server on {self.address} did not start; log tail:\n{tail}")
        raise RuntimeError(f"ZooKeeper server could not find a free port after {attempts} attempts")

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # The listening socket is gone once the process is; wait for the port to refuse.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and four_letter_word(self.host, self.port, "ruok", 0.2):
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the server (an abrupt crash)."""
        self._kill()

    def pause(self) -> None:
        """SIGSTOP the server: its sockets stay open but nothing answers, as in a long GC pause
        or a frozen VM. Sessions whose timeout passes meanwhile expire when it resumes."""
        if self.running:
            assert self._proc is not None
            os.kill(self._proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused server."""
        if self.running:
            assert self._proc is not None
            os.kill(self._proc.pid, signal.SIGCONT)

    def restart(self, timeout_s: float = 30.0) -> None:
        """Stop and start on the same port and data directory."""
        self._port_fixed = True
        self.stop()
        self.start(timeout_s)

    def log_tail(self, lines: int = 200) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def __enter__(self) -> "ZooKeeperServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
