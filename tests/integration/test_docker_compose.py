"""docker/test.sh, run for real: the images built, the compose cluster (ZooKeeper, three brokers,
the bench service) started with podman, 100,000 records through it from the host, a broker
SIGKILLed and started again with every acknowledged record read back, and everything torn down.

Slow (a few minutes; more when the base image has to be made first) and opt-in:
``.venv/bin/python -m pytest -m slow tests/integration/test_docker_compose.py``. Needs root
(rootful podman, apt-get for podman itself when it is missing) and Debian's package mirror.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0,
                    reason="rootful podman: runs as root on Linux")
def test_docker_test_sh(tmp_path: pathlib.Path) -> None:
    log = tmp_path / "test.sh.log"
    env = dict(os.environ, PYTHON=sys.executable)  # this interpreter has annal installed
    with open(log, "wb") as out:
        rc = subprocess.run(
            ["bash", str(ROOT / "docker" / "test.sh")], cwd=ROOT, env=env,
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=1700,
        ).returncode
    text = log.read_text(errors="replace")
    summary = "\n".join(line for line in text.splitlines() if not line.startswith(("[", "20")))
    assert rc == 0 and "result: ok" in text, f"docker/test.sh exited {rc}:\n{summary[-6000:]}"
    print(summary[summary.find("== summary"):])
