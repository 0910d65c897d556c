"""The one Markdown table writer: reports, leaderboards, trials, the zoo and the benches."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

LEFT, RIGHT = "---", "---:"


def markdown_table(
    header: Sequence[str], rows: Iterable[Sequence[str]], right: Sequence[bool] | None = None
) -> str:
    """A GitHub Markdown table (no trailing newline); ``right`` right-aligns columns (numbers).
    A ``|`` inside a cell is escaped, so a cell never splits."""
    alignment = right if right is not None else [False] * len(header)
    lines = [
        _row(header),
        "|" + "".join(f"{RIGHT if flush else LEFT}|" for flush in alignment),
    ]
    lines += [_row(cells) for cells in rows]
    return "\n".join(lines)


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"
