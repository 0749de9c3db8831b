"""Label and field selectors, parsed and matched as the Kubernetes API server does."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kiln.devcluster import errors

_SET_REQUIREMENT = re.compile(r"^\s*(!?)\s*([A-Za-z0-9./_-]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")
_EQUALITY = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s*(==|!=|=)\s*([A-Za-z0-9._-]*)\s*$")


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        match self.operator:
            case "=":
                return present and value in self.values
            case "!=":
                return not present or value not in self.values
            case "in":
                return present and value in self.values
            case "notin":
                return not present or value not in self.values
            case "exists":
                return present
        return not present


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside a value set's parentheses."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part for part in parts if part.strip()]


def parse_label_selector(text: str | None) -> list[Requirement]:
    """Parse `a=b,c!=d,e in (x,y),f notin (z),g,!h`; a bad one is a 400 BadRequest."""
    requirements = []
    for part in _split_top_level(text or ""):
        equality = _EQUALITY.match(part)
        if equality:
            key, operator, value = equality.groups()
            requirements.append(Requirement(key, "!=" if operator == "!=" else "=", frozenset({value})))
            continue
        match = _SET_REQUIREMENT.match(part)
        if not match:
            raise errors.bad_request(f"unable to parse requirement: {part.strip()!r}")
        negated, key, operator, values = match.groups()
        if operator:
            requirements.append(Requirement(key, operator, frozenset(v.strip() for v in values.split(","))))
        else:
            requirements.append(Requirement(key, "!" if negated else "exists"))
    return requirements


def label_matcher(text: str | None) -> Callable[[dict[str, Any]], bool]:
    requirements = parse_label_selector(text)

    def matches(obj: dict[str, Any]) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(requirement.matches(labels) for requirement in requirements)

    return matches


def _field_value(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def field_matcher(text: str | None) -> Callable[[dict[str, Any]], bool]:
    """Field selectors: `metadata.name=x,status.phase!=Running`, any dotted path."""
    terms = []
    for part in _split_top_level(text or ""):
        match = _EQUALITY.match(part) or re.match(r"^\s*([A-Za-z0-9._-]+)\s*(==|!=|=)\s*(.*?)\s*$", part)
        if not match:
            raise errors.bad_request(f"invalid field selector: {part.strip()!r}")
        path, operator, value = match.groups()
        terms.append((path, operator == "!=", value))

    def matches(obj: dict[str, Any]) -> bool:
        return all((_field_value(obj, path) == value) != negated for path, negated, value in terms)

    return matches


def _expression_matches(expression: dict[str, Any], labels: dict[str, str]) -> bool:
    key, operator = expression.get("key", ""), expression.get("operator", "")
    values = set(expression.get("values") or [])
    match operator:
        case "In":
            return key in labels and labels[key] in values
        case "NotIn":
            return key not in labels or labels[key] not in values
        case "Exists":
            return key in labels
        case "DoesNotExist":
            return key not in labels
        case "Gt" | "Lt":
            try:
                have, bound = int(labels[key]), int(next(iter(values)))
            except (KeyError, ValueError, StopIteration):
                return False
            return have > bound if operator == "Gt" else have < bound
    return False


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A metav1.LabelSelector (matchLabels and matchExpressions); an empty selector selects everything."""
    if not selector:
        return True
    wanted = selector.get("matchLabels") or {}
    if any(labels.get(key) != value for key, value in wanted.items()):
        return False
    return all(_expression_matches(expression, labels) for expression in selector.get("matchExpressions") or [])


def node_selector_term_matches(term: dict[str, Any], labels: dict[str, str], fields: dict[str, str]) -> bool:
    """A NodeSelectorTerm: every label expression and every field expression must hold."""
    expressions = term.get("matchExpressions") or []
    field_expressions = term.get("matchFields") or []
    if not expressions and not field_expressions:
        return False  # an empty term matches no objects, as in kube-scheduler
    return all(_expression_matches(e, labels) for e in expressions) and all(
        _expression_matches(e, fields) for e in field_expressions
    )
