"""Test-wide set-up: the suite runs against the installed ``annal`` package.

``python -m pytest`` puts the working directory (the repository root) first on ``sys.path``,
where the ``annal/`` folder holds only the shared core: importing ``annal.broker`` from there
would fail, and passing tests would say nothing about what ``pip install`` gives. The root is
taken off ``sys.path`` before any test module imports ``annal``, and PYTHONSAFEPATH=1 keeps
it off in every process the tests start (``scripts/test`` sets it too).
"""

from __future__ import annotations

import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _is_root(entry: str) -> bool:
    try:
        return pathlib.Path(entry or ".").resolve() == ROOT
    except OSError:
        return False


sys.path[:] = [p for p in sys.path if not _is_root(p)]
# Every interpreter the tests start (brokers, tools, `python -c` probes) keeps its working
# directory off sys.path too.
os.environ["PYTHONSAFEPATH"] = "1"

if "annal" in sys.modules and ROOT in pathlib.Path(sys.modules["annal"].__file__ or "").resolve().parents:
    raise RuntimeError("annal was imported from the checkout, not the installed package; run bash scripts/test")
