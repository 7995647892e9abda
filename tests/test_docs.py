"""The documentation's Python examples run, in order, one namespace per file.

Every ```python fenced block of docs/*.md and README.md is executed; a failing
example fails the suite, so the docs cannot drift from the library.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def _blocks(path: Path) -> list[tuple[int, str]]:
    text = path.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in FENCE.finditer(text)]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_examples_run(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each Python example of the document runs without error, in document order."""
    blocks = _blocks(path)
    if not blocks:
        pytest.skip(f"{path.name} has no Python example")
    monkeypatch.chdir(ROOT)
    namespace: dict[str, object] = {"__name__": f"docs_{path.stem}"}
    for line, source in blocks:
        code = compile(source, f"{path.name}:{line}", "exec")
        exec(code, namespace)


def test_docs_exist() -> None:
    """The narrative documents named in the README are there."""
    assert (ROOT / "docs").is_dir()
    assert os.path.exists(ROOT / "README.md")
