"""The client package type-checks cleanly with mypy and documents every public name."""

from __future__ import annotations

import importlib
import inspect
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.timeout(240)
def test_mypy_clean():
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--follow-imports=silent", "client/"],
        cwd=REPO, capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize(
    "module",
    ["client", "client.producer", "client.consumer", "client.admin", "client.structs", "client.errors",
     "client.console.topics", "client.console.produce", "client.console.consume"],
)
def test_every_public_name_has_a_docstring(module):
    mod = importlib.import_module(module)
    assert mod.__doc__
    for name in getattr(mod, "__all__", []):
        obj = getattr(mod, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, f"{module}.{name} has no docstring"
            if inspect.isclass(obj) and obj.__module__.startswith("client"):
                for attr, member in vars(obj).items():
                    if not attr.startswith("_") and inspect.isfunction(member):
                        assert member.__doc__, f"{module}.{name}.{attr} has no docstring"
