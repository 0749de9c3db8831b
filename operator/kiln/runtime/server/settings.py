"""What kiln-server is told: the ModelVersions to serve and how to behave.

A serving pod learns its models from `--model-version FILE` (a ModelVersion manifest, YAML or
JSON, one or more documents) or from the env `KILN_MODEL_VERSIONS`, a JSON list of ModelVersion
objects, which is what an operator can write into a pod's env. Both may be given; each model and
version may appear once.
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pydantic
import yaml

from kiln.api import modelversion


class SettingsError(Exception):
    """The server was told something it cannot act on; the message says what."""


@dataclass(frozen=True)
class FaultInjection:
    """Failures and slowness injected into inference requests, for tests and demos of rollback.

    Off unless `KILN_FAULT_INJECTION` holds a JSON object such as
    `{"errorRate": 0.3, "errorStatus": 500, "delayRate": 0.5, "delaySeconds": 0.2}`.
    """

    error_rate: float = 0.0
    """The share of requests answered with `error_status` instead of a prediction."""
    error_status: int = 500
    delay_rate: float = 0.0
    """The share of requests held back `delay_seconds` before they are answered."""
    delay_seconds: float = 0.0

    @property
    def active(self) -> bool:
        return self.error_rate > 0 or (self.delay_rate > 0 and self.delay_seconds > 0)

    @classmethod
    def parse(cls, text: str | None) -> FaultInjection:
        if not text:
            return cls()
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise SettingsError(f"KILN_FAULT_INJECTION is not JSON: {error}") from None
        keys = {"errorRate": "error_rate", "errorStatus": "error_status", "delayRate": "delay_rate"}
        keys["delaySeconds"] = "delay_seconds"
        if not isinstance(document, dict) or set(document) - set(keys):
            raise SettingsError(f"KILN_FAULT_INJECTION must be a JSON object with the keys {', '.join(keys)}")
        values = {keys[key]: value for key, value in document.items()}
        if not all(isinstance(value, int | float) and not isinstance(value, bool) for value in values.values()):
            raise SettingsError("KILN_FAULT_INJECTION's values must be numbers")
        faults = cls(**values)
        if not (0 <= faults.error_rate <= 1 and 0 <= faults.delay_rate <= 1):
            raise SettingsError("KILN_FAULT_INJECTION's errorRate and delayRate must lie between 0 and 1")
        if not 400 <= faults.error_status <= 599 or faults.delay_seconds < 0:
            raise SettingsError("KILN_FAULT_INJECTION's errorStatus must be 4xx or 5xx and delaySeconds not negative")
        return faults


@dataclass(frozen=True)
class ServerSettings:
    host: str = "0.0.0.0"
    port: int = 8080
    allow_unsafe_formats: bool = False
    max_body_bytes: int = 8 << 20
    max_batch_size: int = 0
    """The most rows one inference request may carry; 0 for no limit."""
    extra_trusted_types: tuple[str, ...] = ()
    fast_predict: bool = True
    faults: FaultInjection = field(default_factory=FaultInjection)
    drain_delay: float = 2.0
    """Seconds between SIGTERM and closing the listener, while readiness already says 503, so
    Endpoints and load balancers stop sending before the server stops accepting."""
    shutdown_timeout: float = 25.0
    """The longest the server waits for in-flight requests once it stops accepting."""


def artifact_cache_dir() -> pathlib.Path:
    """`KILN_ARTIFACT_CACHE`, where verified artifacts are kept (a serving pod's emptyDir, which
    outlives a restart of the container); below the temporary directory when unset."""
    configured = os.environ.get("KILN_ARTIFACT_CACHE")
    return pathlib.Path(configured) if configured else pathlib.Path(tempfile.gettempdir()) / "kiln-artifacts"


def model_versions(files: Sequence[pathlib.Path], env_value: str | None) -> list[modelversion.ModelVersion]:
    """Every ModelVersion the files and the env declare, refusing repeats of a model and version."""
    declared: list[modelversion.ModelVersion] = []
    for path in files:
        try:
            documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
        except (OSError, yaml.YAMLError) as error:
            raise SettingsError(f"{path}: {error}") from None
        declared.extend(_parsed(documents, str(path)))
    if env_value:
        try:
            documents = json.loads(env_value)
        except json.JSONDecodeError as error:
            raise SettingsError(f"KILN_MODEL_VERSIONS is not JSON: {error}") from None
        if not isinstance(documents, list):
            raise SettingsError("KILN_MODEL_VERSIONS must be a JSON list of ModelVersion objects")
        declared.extend(_parsed(documents, "KILN_MODEL_VERSIONS"))
    if not declared:
        raise SettingsError("no ModelVersion to serve: give --model-version FILE or KILN_MODEL_VERSIONS")
    seen: set[tuple[str, str]] = set()
    for version in declared:
        key = (version.spec.model_name, version.spec.version)
        if key in seen:
            raise SettingsError(f"model {key[0]} version {key[1]} is declared more than once")
        seen.add(key)
    return declared


def _parsed(documents: Iterable[Any], source: str) -> list[modelversion.ModelVersion]:
    parsed = []
    for position, document in enumerate(documents):
        try:
            parsed.append(modelversion.ModelVersion.model_validate(document))
        except pydantic.ValidationError as error:
            raise SettingsError(f"{source}: document {position} is not a ModelVersion: {error}") from None
    return parsed
