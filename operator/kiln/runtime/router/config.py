"""kiln-router's configuration: which variants exist, where they are, and how traffic splits.

The operator writes it as JSON into the ConfigMap key `router.json` (or a file, for tests and
benchmarks). An example, a 10% canary with no mirroring:

    {
      "variants": {
        "stable": {"url": "http://iris-stable.ns.svc:80", "version": "1.0.0"},
        "candidate": {"url": "http://iris-canary.ns.svc:80", "version": "1.1.0"}
      },
      "weights": {"stable": 90, "candidate": 10},
      "mirror": {"variant": null, "percent": 0}
    }

- `variants` maps a name to an upstream `url` (http or https, scheme, host and optional port, no
  path) and the model `version` it serves, which labels the metrics. Names are data: blue-green
  adds `preview` the same way.
- `weights` gives every variant an integer 0..100; they sum to 100. A variant with weight 0 takes
  no weighted traffic but still answers requests that name it in the `x-kiln-variant` header.
- `mirror` (optional) copies `percent` (0..100) of requests to `variant`, fire-and-forget; `null`
  with 0 turns it off. The mirrored variant's answers never reach a client.
- `mirror.compare` (optional) turns the copies into a live comparison, for the shadow strategy:

      "mirror": {"variant": "candidate", "percent": 100,
                 "compare": {"against": "stable", "tolerance": 1e-6}}

  When a mirrored request's live copy was served by `against`, the router compares the mirrored
  variant's answer with that live answer (see `comparison`): class outputs must be equal,
  floating-point ones agree element by element within `tolerance` (a number >= 0, default 1e-6),
  absolute for magnitudes up to 1 and relative to the larger magnitude beyond. A request served by
  another variant is mirrored without comparison. `against` must be a variant other than the
  mirrored one, and `compare` needs a non-null `mirror.variant`. The outcomes are on `/metrics`
  and `/router/shadow`.

`parse` is pure and refuses anything else with a ConfigError naming the field and the rule, so
a bad ConfigMap is logged and the last good configuration keeps serving.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Any, Final

import yarl

TOTAL_WEIGHT: Final = 100
DEFAULT_TOLERANCE: Final = 1e-6
VARIANT_NAME: Final = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
"""A DNS label, as Kubernetes names are, so a variant name is safe as a metric label and a header."""


class ConfigError(ValueError):
    """The configuration breaks a rule; the message names the field and the rule."""


@dataclass(frozen=True)
class Variant:
    name: str
    url: str
    """The upstream's origin (scheme://host[:port]) with no trailing slash; the request's path follows it."""
    version: str


@dataclass(frozen=True)
class Compare:
    """Compare the mirrored variant's answers with the live answers of `against`."""

    against: str
    tolerance: float = DEFAULT_TOLERANCE


@dataclass(frozen=True)
class Mirror:
    variant: str | None = None
    percent: int = 0
    compare: Compare | None = None

    @property
    def active(self) -> bool:
        return self.variant is not None and self.percent > 0


@dataclass(frozen=True)
class RouterConfig:
    """One immutable configuration; a reload swaps the whole object, so a request sees one or the other."""

    variants: Mapping[str, Variant]
    weights: Mapping[str, int]
    mirror: Mirror
    digest: str
    """sha256 of the canonical JSON, so a caller can tell which configuration is loaded."""
    slots: tuple[str, ...]
    """TOTAL_WEIGHT variant names, each repeated as often as its weight: a weighted pick is one index."""

    def pick(self, draw: float) -> Variant:
        """The variant a draw in [0, 1) lands on, by weight."""
        return self.variants[self.slots[int(draw * TOTAL_WEIGHT)]]

    def document(self) -> dict[str, Any]:
        """The configuration in its JSON form."""
        return _document(self.variants, self.weights, self.mirror)


def parse(text: str | bytes) -> RouterConfig:
    """The configuration in `text`, or a ConfigError saying what is wrong with it."""
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"the configuration is not JSON: {error}") from None
    document = _object(document, "the configuration")
    _require_keys(document, "the configuration", required={"variants", "weights"}, optional={"mirror"})
    variants = _variants(document["variants"])
    weights = _weights(document["weights"], variants)
    mirror = _mirror(document.get("mirror"), variants)
    slots = tuple(name for name, weight in weights.items() for _ in range(weight))
    canonical = json.dumps(_document(variants, weights, mirror), sort_keys=True, separators=(",", ":"))
    return RouterConfig(variants, weights, mirror, hashlib.sha256(canonical.encode()).hexdigest(), slots)


def _document(variants: Mapping[str, Variant], weights: Mapping[str, int], mirror: Mirror) -> dict[str, Any]:
    return {
        "variants": {name: {"url": variant.url, "version": variant.version} for name, variant in variants.items()},
        "weights": dict(weights),
        "mirror": _mirror_document(mirror),
    }


def _mirror_document(mirror: Mirror) -> dict[str, Any]:
    found: dict[str, Any] = {"variant": mirror.variant, "percent": mirror.percent}
    if mirror.compare is not None:
        found["compare"] = {"against": mirror.compare.against, "tolerance": mirror.compare.tolerance}
    return found


def _variants(value: object) -> dict[str, Variant]:
    value = _object(value, "variants")
    if not value:
        raise ConfigError("variants must name at least one variant")
    variants = {}
    for name, raw in value.items():
        if not VARIANT_NAME.fullmatch(name):
            raise ConfigError(f"variants: {name!r} is not a valid name (lower-case letters, digits and '-')")
        where = f"variants.{name}"
        spec = _object(raw, where)
        _require_keys(spec, where, required={"url", "version"})
        for key in ("url", "version"):
            if not isinstance(spec[key], str) or not spec[key]:
                raise ConfigError(f"{where}.{key} must be a non-empty string")
        variants[name] = Variant(name, _origin(spec["url"], f"{where}.url"), spec["version"])
    return variants


def _origin(url: str, where: str) -> str:
    try:
        parsed = yarl.URL(url)
    except ValueError as error:
        raise ConfigError(f"{where} is not a URL: {error}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(f"{where} must be an http:// or https:// URL with a host, not {url!r}")
    if parsed.path not in ("", "/") or parsed.query_string or parsed.fragment:
        raise ConfigError(f"{where} must have no path, query or fragment (the request's path follows it): {url!r}")
    return url.rstrip("/")


def _weights(value: object, variants: Mapping[str, Variant]) -> dict[str, int]:
    value = _object(value, "weights")
    unknown = sorted(set(value) - set(variants))
    if unknown:
        raise ConfigError(f"weights: {', '.join(unknown)} is not a variant (variants are {', '.join(variants)})")
    missing = [name for name in variants if name not in value]
    if missing:
        raise ConfigError(f"weights: every variant needs a weight; {', '.join(missing)} has none")
    for name, weight in value.items():
        if not _is_int(weight) or not 0 <= weight <= TOTAL_WEIGHT:
            raise ConfigError(f"weights.{name} must be an integer from 0 to {TOTAL_WEIGHT}, not {weight!r}")
    total = sum(value.values())
    if total != TOTAL_WEIGHT:
        raise ConfigError(f"weights must sum to {TOTAL_WEIGHT}, not {total}")
    return {name: value[name] for name in variants}


def _mirror(value: object, variants: Mapping[str, Variant]) -> Mirror:
    if value is None:
        return Mirror()
    value = _object(value, "mirror")
    _require_keys(value, "mirror", required={"variant", "percent"}, optional={"compare"})
    variant, percent = value["variant"], value["percent"]
    if not _is_int(percent) or not 0 <= percent <= TOTAL_WEIGHT:
        raise ConfigError(f"mirror.percent must be an integer from 0 to {TOTAL_WEIGHT}, not {percent!r}")
    if variant is None:
        if percent:
            raise ConfigError("mirror.percent must be 0 when mirror.variant is null")
        if value.get("compare") is not None:
            raise ConfigError("mirror.compare needs a mirror.variant to compare; it is null")
        return Mirror()
    if variant not in variants:
        raise ConfigError(f"mirror.variant: {variant!r} is not a variant (variants are {', '.join(variants)})")
    return Mirror(variant, percent, _compare(value.get("compare"), variant, variants))


def _compare(value: object, mirrored: str, variants: Mapping[str, Variant]) -> Compare | None:
    if value is None:
        return None
    value = _object(value, "mirror.compare")
    _require_keys(value, "mirror.compare", required={"against"}, optional={"tolerance"})
    against = value["against"]
    if not isinstance(against, str) or against not in variants:
        raise ConfigError(f"mirror.compare.against: {against!r} is not a variant (variants are {', '.join(variants)})")
    if against == mirrored:
        raise ConfigError(f"mirror.compare.against must be a variant other than the mirrored one ({mirrored!r})")
    tolerance = value.get("tolerance", DEFAULT_TOLERANCE)
    numeric = isinstance(tolerance, int | float) and not isinstance(tolerance, bool)
    if not numeric or not math.isfinite(tolerance) or tolerance < 0:
        raise ConfigError(f"mirror.compare.tolerance must be a finite number >= 0, not {tolerance!r}")
    return Compare(against, float(tolerance))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a JSON object, not {type(value).__name__}")
    return value


def _require_keys(value: dict[str, Any], where: str, required: Set[str], optional: Set[str] = frozenset()) -> None:
    missing = sorted(required - set(value))
    if missing:
        raise ConfigError(f"{where} needs {', '.join(missing)}")
    extra = sorted(set(value) - required - optional)
    if extra:
        raise ConfigError(f"{where} has unknown field(s) {', '.join(extra)}")
