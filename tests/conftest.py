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


# ------------------------------------------------------------------ both codec implementations
#
# annal.record runs the compiled annal.record._native when it is built, else the pure-Python
# modules. Test modules that put `pytest.mark.usefixtures("codec_impl")` in their pytestmark
# run every test once with each. ANNAL_REQUIRE_NATIVE=1 (scripts/test sets it where a C
# compiler exists) turns a missing native build into a failure instead of a skip.

import pytest  # noqa: E402


@pytest.fixture(params=["python", "native"], scope="module")
def codec_impl(request: pytest.FixtureRequest):
    """Module-scoped (hypothesis refuses function-scoped fixtures under @given): every test of
    the module runs with the pure-Python codec, then with the compiled one."""
    from annal.record import _builder, _impl

    use_native = request.param == "native"
    if use_native and _impl.available is None:
        if os.environ.get("ANNAL_REQUIRE_NATIVE") == "1":
            pytest.fail("annal.record._native is not built (ANNAL_REQUIRE_NATIVE=1)")
        pytest.skip("annal.record._native is not built in this installation")
    before = _impl.native is not None
    _impl.use_native(use_native)
    # A test module that imported BatchBuilder by name gets the selected one too.
    module = request.module
    saved = getattr(module, "BatchBuilder", None)
    if saved is not None:
        module.BatchBuilder = _impl.available.BatchBuilder if use_native else _builder.BatchBuilder
    yield request.param
    if saved is not None:
        module.BatchBuilder = saved
    _impl.use_native(before)
