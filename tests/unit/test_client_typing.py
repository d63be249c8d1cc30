"""The client package and the shared core type-check cleanly with mypy (as installed, from
their py.typed packages) and document every public name."""

from __future__ import annotations

import importlib
import inspect
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.timeout(240)
def test_mypy_clean(tmp_path: pathlib.Path):
    # From an empty directory, so mypy reads the installed package, not the checkout.
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--follow-imports=silent", "--config-file", str(REPO / "pyproject.toml"),
         "-p", "annal.client", "-p", "annal.record", "-p", "annal.errors"],
        cwd=tmp_path, capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize(
    "module",
    ["annal", "annal.client", "annal.client.producer", "annal.client.consumer", "annal.client.admin", "annal.client.structs", "annal.errors",
     "annal.client.console.topics", "annal.client.console.produce", "annal.client.console.consume"],
)
def test_every_public_name_has_a_docstring(module):
    mod = importlib.import_module(module)
    assert mod.__doc__
    for name in getattr(mod, "__all__", []):
        obj = getattr(mod, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, f"{module}.{name} has no docstring"
            if inspect.isclass(obj) and obj.__module__.startswith(("annal.client", "annal.errors")):
                for attr, member in vars(obj).items():
                    if not attr.startswith("_") and inspect.isfunction(member):
                        assert member.__doc__, f"{module}.{name}.{attr} has no docstring"
