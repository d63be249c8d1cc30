"""The committed gRPC modules (annal/protocol/annal_pb2*.py) match proto/annal/v1/annal.proto:
regenerate them into a temporary directory with proto/generate.py and compare byte for byte."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
GENERATED = ("annal_pb2.py", "annal_pb2.pyi", "annal_pb2_grpc.py")


@pytest.mark.timeout(120)
def test_generated_modules_are_fresh(tmp_path: pathlib.Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "proto" / "generate.py"), "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=110,
    )
    assert proc.returncode == 0, proc.stderr
    stale = [
        name for name in GENERATED
        if (tmp_path / name).read_bytes() != (ROOT / "annal" / "protocol" / name).read_bytes()
    ]
    assert not stale, (
        f"{', '.join(stale)} differ from what proto/annal/v1/annal.proto generates; "
        "run `.venv/bin/python proto/generate.py` and commit the result"
    )
