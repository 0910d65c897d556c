"""Every network file in src/archs opens with its provenance (issue 24, point 5): an ``Upstream:``
paragraph in the module docstring naming the upstream repository (or saying there is no official
one) and the licence. Parsed with ``ast``; nothing is imported."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ARCHS = Path(__file__).resolve().parents[1] / "src" / "archs"
# Shared helpers, not networks: no upstream of their own.
NOT_NETWORKS = {"__init__", "base", "common", "window", "swin_skeleton", "reparam"}
NETWORK_FILES = sorted(p for p in ARCHS.glob("*.py") if p.stem not in NOT_NETWORKS)

URL = re.compile(r"https?://\S+")
NO_REPO = "no official repository"
# SPDX-like licence ids, or an explicit statement that there is none.
LICENCE = re.compile(
    r"\b(MIT|Apache-2\.0|BSD-[23]-Clause|GPL-[23]\.0|LGPL-[23]\.[01]|MPL-2\.0|CC-BY(-NC)?(-SA)?-4\.0"
    r"|Unlicense)\b|\bno licen[cs]e\b",
    re.IGNORECASE,
)


def upstream_paragraph(path: Path) -> str | None:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")), clean=True)
    if not doc:
        return None
    for paragraph in doc.split("\n\n"):
        if paragraph.lstrip().startswith("Upstream:"):
            return paragraph
    return None


def test_there_are_network_files() -> None:
    assert len(NETWORK_FILES) >= 33


@pytest.mark.parametrize("path", NETWORK_FILES, ids=lambda p: p.stem)
def test_network_file_names_upstream_and_licence(path: Path) -> None:
    paragraph = upstream_paragraph(path)
    assert paragraph is not None, f"{path.name}: module docstring has no 'Upstream:' paragraph"
    first_line = paragraph.splitlines()[0]
    assert URL.search(first_line) or NO_REPO in first_line.lower(), (
        f"{path.name}: the 'Upstream:' line names neither a URL nor '{NO_REPO}': {first_line!r}"
    )
    assert LICENCE.search(paragraph), (
        f"{path.name}: the 'Upstream:' paragraph names no licence (an SPDX id or 'no licence')"
    )
