"""nginx config as a tree of directives, quoted in one function and serialised once.

Pure (layer 1), and knows nothing of sockgate: the shape of nginxinc/crossplane's builder.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

# Characters that are never written bare: they end a token, open a block, start a comment or a
# quoted string, or escape. Control characters are quoted too, so the output stays readable.
_NEEDS_QUOTES = re.compile(r"[\s;{}\"'\\#]|[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Directive:
    """One nginx statement: `name args;`, or `name args { block }` when `block` is not None.

    `comment` is written as `#` lines just above the statement: the place for a "why".
    """

    name: str
    args: tuple[str, ...] = ()
    block: tuple[Directive, ...] | None = None
    comment: str = ""


def directive(name: str, *args: str, comment: str = "") -> Directive:
    return Directive(name, args, None, comment)


def block(name: str, *args: str, body: Sequence[Directive], comment: str = "") -> Directive:
    return Directive(name, args, tuple(body), comment)


def quote(arg: str) -> str:
    """`arg` as one nginx token: bare when that is unambiguous, quoted otherwise.

    This only guards the lexer. nginx still expands `$name` inside quotes, and has no escape for
    `$`; literal values that may not hold variables are checked before they get here.
    """
    if "\0" in arg:
        raise ValueError(f"nginx cannot express a NUL byte: {arg!r}")
    if arg and not _NEEDS_QUOTES.search(arg):
        return arg
    # Like Python's repr: single quotes when that avoids escaping double ones.
    mark = "'" if '"' in arg and "'" not in arg else '"'
    escaped = arg.replace("\\", "\\\\").replace(mark, "\\" + mark)
    # nginx turns these three escapes back into the characters inside quoted strings.
    escaped = escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f"{mark}{escaped}{mark}"


def serialise(statements: Sequence[Directive], indent: str = "    ") -> str:
    """The text of a whole file: one statement a line, blocks indented, blank lines around
    blocks and commented statements so the sections stand apart."""
    return "\n".join(_lines(statements, 0, indent)) + "\n"


def _lines(statements: Sequence[Directive], depth: int, indent: str) -> Iterator[str]:
    margin = indent * depth
    for index, stmt in enumerate(statements):
        if index and _apart(statements[index - 1], stmt):
            yield ""
        for line in stmt.comment.splitlines():
            yield f"{margin}# {line}".rstrip()
        head = " ".join(quote(part) for part in (stmt.name, *stmt.args))
        if stmt.block is None:
            yield f"{margin}{head};"
        else:
            yield f"{margin}{head} {{"
            yield from _lines(stmt.block, depth + 1, indent)
            yield f"{margin}}}"


def _apart(before: Directive, after: Directive) -> bool:
    """Whether a blank line goes between two statements: around blocks, and around a commented
    statement unless it continues a run of the same directive (a list of headers stays one)."""
    if before.block is not None or after.block is not None:
        return True
    return bool(before.comment or after.comment) and before.name != after.name
