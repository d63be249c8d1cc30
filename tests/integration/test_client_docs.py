"""The python examples of docs/client.md run, in order and in one namespace, against a real
broker (``127.0.0.1:9092`` in the text is replaced by the broker's address)."""

from __future__ import annotations

import contextlib
import io
import pathlib
import re

import pytest

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "client.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_the_doc_has_examples():
    assert len(python_blocks(DOC.read_text())) >= 6


@pytest.mark.timeout(120)
def test_examples_run(broker):
    namespace: dict = {"__name__": "docs_client_md"}
    out = io.StringIO()
    for i, block in enumerate(python_blocks(DOC.read_text())):
        code = block.replace("127.0.0.1:9092", broker.bootstrap)
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"docs/client.md block {i + 1}", "exec"), namespace)
    text = out.getvalue()
    assert "orders" in text  # list_topics printed the topic
