"""Generated blocks in text files: the text between a `<!-- name:start -->` line and its `<!-- name:end -->` line.

The README's results, benchmark and seed-grid tables and RESULTS.md-style blocks are written by scripts; these
two functions are the only code that finds or replaces such a block.
"""

from __future__ import annotations

from ..errors import PipelineError


def markers(name: str) -> tuple[str, str]:
    """The start and end markers of block `name`."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def _split(text: str, name: str, where: str) -> tuple[str, str, str]:
    start, end = markers(name)
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise PipelineError(f"{where} needs one {start} line and one {end} line after it; add them where the "
                            "block goes")
    before, rest = text.split(start, 1)
    inside, after = rest.split(end, 1)
    return before, inside, after


def between(text: str, name: str, *, where: str = "the file") -> str:
    """The text of block `name` in `text`, without the newlines next to its markers."""
    return _split(text, name, where)[1].strip("\n")


def replace_between(text: str, name: str, block: str, *, where: str = "the file") -> str:
    """`text` with block `name` holding `block` (its leading and trailing newlines dropped) on lines of its own.

    `where` names the file in the error raised when `text` lacks one start marker followed by one end marker.
    """
    before, _, after = _split(text, name, where)
    start, end = markers(name)
    body = block.strip("\n")
    return f"{before}{start}\n{body}\n{end}{after}"
