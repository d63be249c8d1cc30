"""Every ``annal`` / ``annal-bench`` command in the newcomer docs parses with the real parsers.

README.md, docker/README.md, docs/architecture.md and docs/operations.md show command lines in
``sh`` blocks; a renamed flag or subcommand must fail here, not in a reader's terminal. Commands
run through ``docker run IMAGE ...`` and ``docker compose ... run ... bench ...`` are checked too
(the image's entry point is ``annal``, the bench service's ``annal-bench``). The README's Python
example must at least compile and use only names the SDK exports.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
DOCS = ["README.md", "docker/README.md", "docs/architecture.md", "docs/operations.md"]


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"```(?:sh|bash|console)\n(.*?)```", text, re.DOTALL)


def command_lines(block: str) -> list[list[str]]:
    """Simple commands of a shell block: continuations joined, comments dropped, split at
    pipes and ``&&``."""
    joined = re.sub(r"\\\n\s*", " ", block)
    out = []
    for line in joined.splitlines():
        for part in re.split(r"\s\|\s|\s&&\s", line):
            words = shlex.split(part, comments=True)
            if words:
                out.append(words)
    return out


def _parse(parser: argparse.ArgumentParser, argv: list[str], where: str) -> argparse.Namespace:
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{where}: not a valid command line (exit {exc.code}): {' '.join(argv)}")


def check_annal(argv: list[str], where: str) -> None:
    from annal.broker import cli

    _parse(cli._parser_for(argv), argv, where)  # noqa: SLF001 - the parser `annal` itself builds


def check_bench(argv: list[str], where: str) -> None:
    from annal.bench.cli import COMMANDS

    assert argv and argv[0] in COMMANDS, f"{where}: unknown annal-bench tool: {argv}"
    module = importlib.import_module(COMMANDS[argv[0]][0])
    _parse(module.build_parser(), argv[1:], where)


_DOCKER_RUN_VALUE_OPTS = {"--name", "-p", "--publish", "-v", "--volume", "--network", "-e", "--env", "--entrypoint"}


def check_words(words: list[str], where: str) -> int:
    """Check one simple command; returns how many Annal command lines it held (0 or 1)."""
    if words[0] == "annal":
        check_annal(words[1:], where)
        return 1
    if words[0] == "annal-bench":
        check_bench(words[1:], where)
        return 1
    if words[:2] == ["docker", "run"]:
        rest = words[2:]
        i = 0
        while i < len(rest) and rest[i].startswith("-"):
            i += 2 if rest[i] in _DOCKER_RUN_VALUE_OPTS else 1
        image, args = rest[i], rest[i + 1 :]
        if image.split(":")[0] == "annal" and args:
            check_annal(args, where)
            return 1
        return 0
    if words[:2] == ["docker", "compose"] and "run" in words:
        rest = words[words.index("run") + 1 :]
        entrypoint = None
        while rest and rest[0].startswith("-"):
            if rest[0] == "--entrypoint":
                entrypoint = rest[1]
                rest = rest[2:]
            else:
                rest = rest[1:]
        service, args = rest[0], rest[1:]
        if service != "bench" or not args:
            return 0
        (check_annal if entrypoint == "annal" else check_bench)(args, where)
        return 1
    return 0


@pytest.mark.parametrize("doc", DOCS)
def test_doc_commands_parse(doc: str) -> None:
    text = (ROOT / doc).read_text()
    checked = 0
    for block in shell_blocks(text):
        for words in command_lines(block):
            checked += check_words(words, doc)
    if doc in ("README.md", "docker/README.md", "docs/operations.md"):
        assert checked >= 3, f"{doc}: expected Annal command lines in its sh blocks, found {checked}"


def test_readme_python_example() -> None:
    import annal

    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    assert blocks, "README.md has no Python example"
    example = blocks[0]
    assert len(example.strip().splitlines()) <= 12, "the README promises about ten lines"
    compile(example, "README.md", "exec")
    for names in re.findall(r"^from annal import (.+)$", example, re.MULTILINE):
        for name in (n.strip() for n in names.split(",")):
            assert hasattr(annal, name), f"annal has no {name}"


@pytest.mark.parametrize("doc", DOCS)
def test_doc_links_exist(doc: str) -> None:
    path = ROOT / doc
    targets = re.findall(r"\]\(((?!https?://)[^)#]+)", path.read_text())
    missing = [t for t in targets if not (path.parent / t).exists()]
    assert not missing, f"{doc} links to missing files: {missing}"
