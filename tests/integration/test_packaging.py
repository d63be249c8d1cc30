"""What ``pip install annal`` gives a user: the wheel built from this tree, installed into a
fresh virtual environment outside the repository, used from a directory that holds files
named ``client.py`` and ``broker.py`` (which the old top-level packages collided with).

The wheel must install one top-level package, ``annal``; ``from annal import ...`` must work
there; the console scripts must answer; a standalone broker must start; and ``annal-bench
produce`` and ``consume`` must run against it. Dependencies come from the package index (pip's
cache makes a second run quick).
"""

from __future__ import annotations

import csv
import io
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
import venv
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _run(cmd: list[str], cwd: pathlib.Path, timeout: float = 300, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("wheel")
    # Build from a copy of the tracked files, so a developer's build/ or egg-info cannot leak in.
    src = tmp_path_factory.mktemp("src")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        target = src / name
        if not (ROOT / name).is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((ROOT / name).read_bytes())
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)], cwd=out, timeout=300)
    wheels = list(out.glob("annal-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_installs_only_the_annal_package(wheel: pathlib.Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        record_name = next(n for n in z.namelist() if n.endswith(".dist-info/RECORD"))
        rows = list(csv.reader(io.StringIO(z.read(record_name).decode())))
        entry_points = z.read(record_name.replace("RECORD", "entry_points.txt")).decode()
    tops = {row[0].split("/")[0] for row in rows if row}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert tops - dist_info == {"annal"}, sorted(tops)
    paths = {row[0] for row in rows if row}
    for module in ("annal/broker/server/main.py", "annal/client/producer.py", "annal/bench/cli.py",
                   "annal/record/_builder.py", "annal/protocol/annal_pb2.py", "annal/py.typed"):
        assert module in paths, module
    assert "annal = annal.broker.cli:main" in entry_points
    assert "annal-bench = annal.bench.cli:main" in entry_points


@pytest.mark.timeout(900)
def test_fresh_install_outside_the_repository(wheel: pathlib.Path, tmp_path: pathlib.Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = str(env_dir / "bin" / "python")
    _run([py, "-m", "pip", "install", "-q", f"{wheel}[bench]"], cwd=tmp_path, timeout=600)

    # A user's project with its own client.py and broker.py next to the script.
    work = tmp_path / "project"
    work.mkdir()
    (work / "client.py").write_text("raise SystemExit('the user\\'s client.py was imported')\n")
    (work / "broker.py").write_text("raise SystemExit('the user\\'s broker.py was imported')\n")
    (work / "bench.py").write_text("raise SystemExit('the user\\'s bench.py was imported')\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    probe = (
        "import annal, sys\n"
        "from annal import Producer, Consumer, Admin, NewTopic, TopicPartition\n"
        "from annal.errors import KafkaTimeoutError\n"
        "assert annal.__file__.startswith(sys.prefix), annal.__file__\n"
        "print('ok', annal.__version__)\n"
    )
    assert "ok" in _run([py, "-c", probe], cwd=work, env=env)
    bin_dir = env_dir / "bin"
    assert "broker" in _run([str(bin_dir / "annal"), "--help"], cwd=work, env=env)
    assert "produce" in _run([str(bin_dir / "annal-bench"), "--help"], cwd=work, env=env)

    data = tmp_path / "data"
    log = (tmp_path / "broker.log").open("wb")
    broker = subprocess.Popen(
        [str(bin_dir / "annal"), "broker", "start", "--standalone", "--data-dir", str(data), "--host", "127.0.0.1",
         "--port", "0", "--fetch-port", "0", "--metrics-port", "0", "--kafka-port", "0"],
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        ready = None
        while time.monotonic() < deadline and broker.poll() is None:
            ready = re.search(r"ready: grpc=([\d.]+:\d+)", (tmp_path / "broker.log").read_text(errors="replace"))
            if ready:
                break
            time.sleep(0.1)
        assert ready, (tmp_path / "broker.log").read_text(errors="replace")
        bootstrap = ready.group(1)
        out = _run([str(bin_dir / "annal-bench"), "produce", "--bootstrap-server", bootstrap, "--topic", "pkg",
                    "--num-records", "20000", "--record-size", "100"], cwd=work, env=env)
        assert re.search(r"20000 records sent", out), out
        out = _run([str(bin_dir / "annal-bench"), "consume", "--bootstrap-server", bootstrap, "--topic", "pkg",
                    "--num-records", "20000"], cwd=work, env=env)
        assert "20000" in out, out
    finally:
        if broker.poll() is None:
            os.killpg(broker.pid, signal.SIGTERM)
            broker.wait(timeout=30)
        log.close()
    assert broker.returncode == 0, (tmp_path / "broker.log").read_text(errors="replace")


def test_wheel_carries_the_compiled_codec(wheel: pathlib.Path) -> None:
    """Built where a C compiler exists (as here), the wheel holds annal.record._native."""
    if os.environ.get("ANNAL_REQUIRE_NATIVE") != "1" and not _has_compiler():
        pytest.skip("no C compiler on this machine")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    assert any(re.fullmatch(r"annal/record/_native\..*\.so", n) for n in names), [n for n in names if "record/" in n]


def _has_compiler() -> bool:
    import shutil

    return shutil.which(os.environ.get("CC", "cc")) is not None


@pytest.mark.timeout(900)
def test_without_a_compiler_the_install_is_pure_python(tmp_path: pathlib.Path) -> None:
    """CC=/bin/false stands in for a machine without a compiler: the wheel still builds, the
    build says once that the extension was not built, and the installed package runs the
    pure-Python codec."""
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes((ROOT / name).read_bytes())
    out = tmp_path / "wheel"
    env = dict(os.environ, CC="/bin/false", LDSHARED="/bin/false")
    log = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(out), str(src)], cwd=tmp_path, env=env)
    assert log.count("annal: the C extension annal.record._native was not built") == 1, log[-3000:]
    (whl,) = out.glob("annal-*.whl")
    with zipfile.ZipFile(whl) as z:
        assert not [n for n in z.namelist() if n.endswith(".so")]
    target = tmp_path / "site"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(whl)], cwd=tmp_path)
    probe = (
        "import annal, annal.record as r\n"
        "from annal.broker.cli import version_line\n"
        "b = r.BatchBuilder(); b.append(5, None, b'v')\n"
        "assert [x.value for x in r.decode_batch(b.build())[1]] == [b'v']\n"
        "print(annal.native, version_line())\n"
    )
    env = dict(os.environ, PYTHONPATH=str(target))
    printed = _run([sys.executable, "-c", probe], cwd=tmp_path, env=env)
    assert printed.startswith("False annal "), printed
    assert "(codec: pure Python (the C extension is not built))" in printed
