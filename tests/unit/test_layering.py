"""The package's layers, read from the source: the shared core (``annal/``) imports neither the
client nor the broker, the client imports the core only, and nothing anywhere imports the bare
top-level names ``broker``, ``client`` or ``bench`` (they are ``annal.broker`` ... now).

Imports are read with ``ast`` from every module, including function-level imports; imports
under ``if TYPE_CHECKING:`` are skipped (they never run). ``annal/__init__.py`` reaches the
client's names through ``importlib`` on first attribute access, which this walk does not see and
which ``test_importing_the_client_loads_no_broker_module`` covers at run time.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Repository folder -> the package it installs as (pyproject.toml's package-dir).
FOLDERS = {"annal": "annal", "broker": "annal.broker", "client": "annal.client", "bench": "annal.bench"}


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT)
    parts = list(rel.with_suffix("").parts)
    parts[0] = FOLDERS[parts[0]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import statement that can run in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.extend((child.lineno, alias.name) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    name = ".".join(base + ([child.module] if child.module else []))
                else:
                    name = child.module or ""
                found.append((child.lineno, name))
                # `from annal import broker` imports the subpackage too.
                found.extend((child.lineno, f"{name}.{alias.name}") for alias in child.names)
            visit(child)

    visit(tree)
    return found


def _sources(folder: str) -> list[pathlib.Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def _violations(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in _sources(folder):
        for line, name in imports_of(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return bad


def test_the_walk_sees_imports() -> None:
    """The checks below would pass vacuously if the walk found nothing: it finds the client's
    imports of the core, and a relative import resolves."""
    names = {n for p in _sources("client") for _, n in imports_of(p)}
    assert "annal.record" in names and "annal.errors" in names
    assert "annal.client.structs" in names


def test_shared_core_imports_neither_side() -> None:
    assert _violations("annal", ("annal.broker", "annal.client", "annal.bench")) == []


def test_client_imports_the_core_only() -> None:
    assert _violations("client", ("annal.broker", "annal.bench")) == []


def test_nothing_imports_the_old_top_level_names() -> None:
    folders = ["annal", "broker", "client", "bench", "tests", "scripts", "proto", "docs"]
    bad = []
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                    names = [node.module]
                for name in names:
                    if name.split(".")[0] in ("broker", "client", "bench"):
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert bad == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "statement",
    ["import annal.client", "from annal import Producer, Consumer, Admin, NewTopic, TopicPartition",
     "import annal.record, annal.protocol.framing, annal.zookeeper.paths, annal.errors"],
)
def test_importing_the_client_loads_no_broker_module(statement: str, tmp_path: pathlib.Path) -> None:
    code = (
        f"{statement}\n"
        "import sys\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('annal.broker', 'annal.bench')))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=50)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"{statement!r} loaded {out.stdout.strip()}"


def test_public_api_is_the_clients() -> None:
    import annal
    import annal.client

    # annal lists the client's names itself (importing annal.client to read them would load
    # the client whenever the broker imports the core): the two lists must stay the same.
    assert set(annal._CLIENT_NAMES) == set(annal.client.__all__) - {"errors"}
    for name in annal._CLIENT_NAMES:
        assert getattr(annal, name) is getattr(annal.client, name)
    assert annal.errors.KafkaTimeoutError.__module__ == "annal.errors"
    with pytest.raises(AttributeError):
        annal.NoSuchName  # noqa: B018
