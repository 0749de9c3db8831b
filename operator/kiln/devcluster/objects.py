"""Helpers over Kubernetes objects as plain dicts: names, timestamps, owners, JSONPath."""

from __future__ import annotations

import datetime
import re
import secrets
from typing import Any

Object = dict[str, Any]

_NAME_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def format_time(moment: datetime.datetime) -> str:
    """A time as Kubernetes writes timestamps: RFC 3339, seconds, UTC."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def now() -> str:
    return format_time(datetime.datetime.now(datetime.UTC))


def timestamp_after(seconds: float) -> str:
    return format_time(datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds))


def parse_time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def generated_name(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_NAME_SUFFIX_ALPHABET) for _ in range(5))


def human_age(timestamp: str | None, at: datetime.datetime | None = None) -> str:
    """An age as kubectl prints it: 45s, 3m12s, 5h, 12d."""
    if not timestamp:
        return "<unknown>"
    seconds = int(((at or datetime.datetime.now(datetime.UTC)) - parse_time(timestamp)).total_seconds())
    seconds = max(seconds, 0)
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 48:
        return f"{hours}h"
    return f"{hours // 24}d"


def owner_uids(obj: dict[str, Any]) -> set[str]:
    return {ref["uid"] for ref in obj.get("metadata", {}).get("ownerReferences") or [] if "uid" in ref}


def json_path(obj: Any, path: str) -> list[Any]:
    """Evaluate the JSONPath subset printer columns use: `.a.b`, `[0]`, `[*]`, `[?(@.k=="v")]`."""
    tokens = re.findall(r"\.([A-Za-z0-9_$-]+)|\[(\d+|\*|\?\(@\.[A-Za-z0-9_]+\s*==\s*[\"'][^\"']*[\"']\))\]", path)
    values = [obj]
    for name, bracket in tokens:
        following: list[Any] = []
        for value in values:
            if name:
                if isinstance(value, dict) and name in value:
                    following.append(value[name])
            elif isinstance(value, list):
                following.extend(_select(value, bracket))
        values = following
    return values


def _select(items: list[Any], bracket: str) -> list[Any]:
    if bracket == "*":
        return items
    if bracket.isdigit():
        index = int(bracket)
        return [items[index]] if index < len(items) else []
    match = re.match(r"\?\(@\.([A-Za-z0-9_]+)\s*==\s*[\"']([^\"']*)[\"']\)", bracket)
    if not match:
        return []
    key, wanted = match.groups()
    return [item for item in items if isinstance(item, dict) and str(item.get(key)) == wanted]


def set_condition(  # noqa: PLR0917 - a condition's fields, in the order the API lists them
    conditions: list[Object], kind: str, status: str, reason: str, message: str, now: str, **extra: Any
) -> list[Object]:
    """Conditions with one set: lastTransitionTime moves only when the status does; an empty reason
    or message is left out, as the API's JSON omits empty strings."""
    updated = []
    found = False
    texts = {key: value for key, value in (("reason", reason), ("message", message)) if value}
    for entry in conditions:
        if entry.get("type") != kind:
            updated.append(entry)
            continue
        found = True
        transition = entry.get("lastTransitionTime", now) if entry.get("status") == status else now
        kept = {key: value for key, value in entry.items() if key not in ("reason", "message")}
        updated.append({**kept, **extra, "status": status, **texts, "lastTransitionTime": transition})
    if not found:
        updated.append({"type": kind, "status": status, **texts, "lastTransitionTime": now, **extra})
    return updated
