"""Semantic versions (semver.org 2.0.0), ordered as the specification orders them.

Precedence compares major, minor and patch numerically; a pre-release sorts before its release;
pre-release identifiers compare one by one, numeric ones numerically and below alphanumeric ones,
and a shorter list of equal identifiers sorts first. Build metadata (`+build.7`) is kept for
display but ignored by precedence, so `1.0.0+a` and `1.0.0+b` are the same version.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from kiln.api import base

_PATTERN = re.compile(base.SEMVER_PATTERN)


@functools.total_ordering
@dataclass(frozen=True)
class Version:
    """A parsed semantic version; equality and order are semver precedence."""

    major: int
    minor: int
    patch: int
    prerelease: tuple[int | str, ...] = ()
    build: str = field(default="", compare=False)

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(str(identifier) for identifier in self.prerelease)
        return f"{text}+{self.build}" if self.build else text

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return _precedence(self) < _precedence(other)

    def __hash__(self) -> int:
        return hash(_precedence(self))


def _identifier(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def parse(text: str) -> Version:
    """Parse `1.4.0`, `2.0.0-rc.1` or `1.0.0-beta+exp.sha.5114f85`; ValueError names the rule."""
    if not _PATTERN.fullmatch(text):
        raise ValueError(f"{text!r} is not a semantic version such as 1.4.0 or 2.0.0-rc.1 (semver.org)")
    core, _, build = text.partition("+")
    release, _, prerelease = core.partition("-")
    major, minor, patch = (int(number) for number in release.split("."))
    identifiers = tuple(_identifier(part) for part in prerelease.split(".")) if prerelease else ()
    return Version(major, minor, patch, identifiers, build)


# A pre-release identifier's sort key: numeric identifiers (0, n) sort below alphanumeric (1, text).
_IdentifierKey = tuple[int, int, str]
_Precedence = tuple[int, int, int, int, tuple[_IdentifierKey, ...]]


def _precedence(version: Version) -> _Precedence:
    identifiers = tuple(
        (0, identifier, "") if isinstance(identifier, int) else (1, 0, identifier) for identifier in version.prerelease
    )
    # A release (no pre-release) ranks above every pre-release of the same major.minor.patch.
    is_release = 0 if version.prerelease else 1
    return (version.major, version.minor, version.patch, is_release, identifiers)
