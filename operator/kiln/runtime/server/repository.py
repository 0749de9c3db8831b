"""The models a server was told to serve, each in its own state, and how a request finds one.

`/v2/models/{name}/versions/{v}` picks exactly. `/v2/models/{name}` picks the newest version of
that name that is ready, in semver order (`1.10.0` above `1.9.0`, a pre-release below its
release); when none is ready, the newest declared one, whose readiness then says why not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from kiln.api import modelversion
from kiln.runtime.server import loading, protocol


class State(StrEnum):
    LOADING = "Loading"
    READY = "Ready"
    FAILED = "Failed"


@dataclass
class Slot:
    """One declared ModelVersion and where its loading stands."""

    version: modelversion.ModelVersion
    state: State = State.LOADING
    reason: str = "loading the artifact"
    served: loading.ServedModel | None = None

    @property
    def name(self) -> str:
        return self.version.spec.model_name

    @property
    def number(self) -> str:
        return self.version.spec.version

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.number)

    def status(self) -> dict[str, object]:
        status: dict[str, object] = {"name": self.name, "version": self.number, "state": self.state.value}
        if self.state is not State.READY:
            status["reason"] = self.reason
        return status


_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+.*)?$")


def semver_key(version: str) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
    """A sort key that orders versions as semver does; the API has already checked the syntax."""
    match = _SEMVER.match(version)
    if match is None:
        return (0, 0, 0, 0, ())
    major, minor, patch, pre = match.groups()
    if pre is None:
        return (int(major), int(minor), int(patch), 1, ())
    # Numeric identifiers sort numerically and below alphanumeric ones.
    identifiers = tuple((0, int(part)) if part.isdigit() else (1, part) for part in pre.split("."))
    return (int(major), int(minor), int(patch), 0, identifiers)


class Repository:
    """The declared models, newest version first within each name."""

    def __init__(self, versions: list[modelversion.ModelVersion]) -> None:
        self.slots = [Slot(version) for version in versions]
        self._by_name: dict[str, list[Slot]] = {}
        for slot in self.slots:
            self._by_name.setdefault(slot.name, []).append(slot)
        for versions_of_name in self._by_name.values():
            versions_of_name.sort(key=lambda slot: semver_key(slot.number), reverse=True)
        self._by_key = {slot.key: slot for slot in self.slots}

    @property
    def ready(self) -> bool:
        return all(slot.state is State.READY for slot in self.slots)

    def versions_of(self, name: str) -> list[Slot]:
        """Every version of `name`, newest first; 404 when the name is not served."""
        versions = self._by_name.get(name)
        if versions is None:
            raise protocol.RequestError(404, f"model {name!r} is not served here; see /v2/health/ready")
        return versions

    def find(self, name: str, version: str | None) -> Slot:
        """The slot a request addresses; 404 for an unknown model or version."""
        versions = self.versions_of(name)
        if version is None:
            return next((slot for slot in versions if slot.state is State.READY), versions[0])
        slot = self._by_key.get((name, version))
        if slot is None:
            served = ", ".join(slot.number for slot in versions)
            raise protocol.RequestError(404, f"model {name!r} has no version {version!r}; served: {served}")
        return slot
