"""The JSONPath subset the web provider understands, with no library behind it.

`$` (the whole document), `.key`, `['key']` or `["key"]`, `[index]` (negative counts from the
end) and `[*]` or `.*` (every element or member). Enough to reach a number in any JSON answer;
filters, slices and recursive descent (`..`) are refused with a message saying what is
understood, never guessed at.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

STEP = re.compile(
    r"\.(?P<name>[A-Za-z_][\w-]*)"
    r"|\['(?P<single>[^']*)'\]"
    r'|\["(?P<double>[^"]*)"\]'
    r"|\[(?P<index>-?\d+)\]"
    r"|(?P<wildcard>\.\*|\[\*\])"
)
UNDERSTOOD = "$, .key, ['key'], [index] and [*]"


@dataclasses.dataclass(frozen=True)
class Step:
    key: str | int | None
    """A member name, a list index, or None for every element."""


class PathError(ValueError):
    """The path is not in the understood subset; the message says where and what is."""


def parse(path: str) -> list[Step]:
    if not path.startswith("$"):
        raise PathError(f"JSONPath {path!r} must start with $ (understood: {UNDERSTOOD})")
    steps: list[Step] = []
    position = 1
    while position < len(path):
        match = STEP.match(path, position)
        if match is None:
            raise PathError(f"JSONPath {path!r} is not understood at {path[position:]!r} (understood: {UNDERSTOOD})")
        steps.append(_step(match))
        position = match.end()
    return steps


def _step(match: re.Match[str]) -> Step:
    if match["wildcard"]:
        return Step(None)
    if match["index"] is not None:
        return Step(int(match["index"]))
    return Step(next(key for key in (match["name"], match["single"], match["double"]) if key is not None))


def find(document: Any, steps: list[Step]) -> list[Any]:
    """Every node the steps reach; a missing key or index reaches nothing, it is not an error."""
    nodes = [document]
    for step in steps:
        nodes = [child for node in nodes for child in _children(node, step)]
    return nodes


def _children(node: Any, step: Step) -> list[Any]:
    if step.key is None:
        if isinstance(node, dict):
            return list(node.values())
        return list(node) if isinstance(node, list) else []
    if isinstance(step.key, str):
        return [node[step.key]] if isinstance(node, dict) and step.key in node else []
    if isinstance(node, list) and -len(node) <= step.key < len(node):
        return [node[step.key]]
    return []
