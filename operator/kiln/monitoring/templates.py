"""Rendering a trigger's PromQL template, and PromQL text Kiln writes itself."""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping

VARIABLES = ("namespace", "model", "deployment", "version", "since")
_VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def render(template: str, variables: Mapping[str, str]) -> str:
    """The template with `{{name}}` replaced; ValueError naming an unknown variable."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in VARIABLES:
            raise ValueError(f"unknown variable {{{{{name}}}}} (known: {', '.join(VARIABLES)})")
        return variables[name]

    return _VARIABLE.sub(value, template)


def label_value(text: str) -> str:
    """`text` as a PromQL string literal's contents: backslashes and quotes escaped."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def duration(length: datetime.timedelta) -> str:
    """A PromQL range of whole seconds, at least one: `1800s`."""
    return f"{max(1, int(length.total_seconds()))}s"
