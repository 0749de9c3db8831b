"""The CEL libraries kube-apiserver adds to the CEL standard: the strings extension (cel-go's
`ext.Strings`, which Kubernetes enables for CRD rules and admission policies alike) and the list
functions of Kubernetes' own library. The CEL runtime Kiln uses ships only the standard, so a rule a
real cluster accepts, `self.name.lowerAscii().startsWith(...)`, would fail here without them.

Each function takes the receiver first (`"a".replace("a", "b")` calls replace("a", "a", "b")).
Indexes count code points, as cel-go's do.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import cel


def _char_at(text: str, index: int) -> str:
    if not 0 <= index <= len(text):
        raise IndexError(f"index out of range: {index}")
    return text[index : index + 1]


def _index_of(receiver: str | list[Any], needle: Any, start: int = 0) -> int:
    if isinstance(receiver, list):
        return receiver.index(needle) if needle in receiver else -1
    if not 0 <= start <= len(receiver):
        raise IndexError(f"index out of range: {start}")
    return receiver.find(needle, start)


def _last_index_of(receiver: str | list[Any], needle: Any, end: int | None = None) -> int:
    if isinstance(receiver, list):
        return len(receiver) - 1 - receiver[::-1].index(needle) if needle in receiver else -1
    if end is None:
        return receiver.rfind(needle)
    if not 0 <= end <= len(receiver):
        raise IndexError(f"index out of range: {end}")
    return receiver.rfind(needle, 0, end + len(needle))


def _replace(text: str, old: str, new: str, count: int = -1) -> str:
    return text.replace(old, new, count)


def _split(text: str, separator: str, limit: int = -1) -> list[str]:
    """At most `limit` parts (all of them when negative), the last holding the rest."""
    if limit == 0:
        return []
    parts = text.split(separator) if separator else list(text)
    if limit < 0 or len(parts) <= limit:
        return parts
    return [*parts[: limit - 1], separator.join(parts[limit - 1 :])]


def _substring(text: str, start: int, end: int | None = None) -> str:
    stop = len(text) if end is None else end
    if not 0 <= start <= stop <= len(text):
        raise IndexError(f"index out of range: {start}, {stop}")
    return text[start:stop]


def _join(items: list[str], separator: str = "") -> str:
    return separator.join(items)


def _is_sorted(items: list[Any]) -> bool:
    return all(left <= right for left, right in itertools.pairwise(items))


def _min(items: list[Any]) -> Any:
    if not items:
        raise ValueError("min of an empty list")
    return min(items)


def _max(items: list[Any]) -> Any:
    if not items:
        raise ValueError("max of an empty list")
    return max(items)


FUNCTIONS: Mapping[str, Callable[..., Any]] = {
    "charAt": _char_at,
    "indexOf": _index_of,
    "lastIndexOf": _last_index_of,
    "lowerAscii": lambda text: "".join(c.lower() if c.isascii() else c for c in text),
    "upperAscii": lambda text: "".join(c.upper() if c.isascii() else c for c in text),
    "replace": _replace,
    "split": _split,
    "substring": _substring,
    "trim": lambda text: text.strip(),
    "join": _join,
    "reverse": lambda text: text[::-1],
    "isSorted": _is_sorted,
    "sum": sum,
    "min": _min,
    "max": _max,
}


def context(variables: Mapping[str, Any]) -> cel.Context:
    """An evaluation context with the variables and every function above."""
    return cel.Context(variables=dict(variables), functions=dict(FUNCTIONS))
