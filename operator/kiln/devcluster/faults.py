"""API fault injection for reliability tests of clients: which requests fail, slow down or have
their watch cut short, decided per request from rules with rates. Pure, but for `load_file`.

Off by default. On with a `faults:` section in the dev cluster config, or `kiln cluster start
--faults FILE` (a YAML file of the same section):

```yaml
faults:
  seed: 7                                   # optional: the same draws on every start
  rules:
    - verbs: [get, list]                    # get list watch create update patch delete
      resources: [pods, deployments.apps]   #   deletecollection, or "*"; plural[.group][/sub]
      namespaces: [default]                 # optional: any namespace when absent
      status: 503                           # 500, 503, 429 or 409
      rate: 0.2                             # the share of matching requests, 0 to 1
      retryAfterSeconds: 1                  # 429 (default 1) and 503: the Retry-After header
    - verbs: [update, patch]
      resources: ["*"]
      status: 409                           # only on writes that name an object
      rate: 0.1
    - verbs: ["*"]
      resources: [configmaps]
      delaySeconds: 0.5                     # slow responses: served after the delay
      rate: 0.5
    - verbs: [watch]
      resources: ["*"]
      watch: {closeAfterEvents: 3}          # or {closeAfterSeconds: 2}: the stream ends early
      rate: 1
```

A resource without a group matches that plural in every group; one without a subresource matches
its subresources too (`modelversions` covers `modelversions/status`). For each request the rules
are tried in order, one random draw per matching rule: the first delay that fires slows the
request, the first status or watch fault that fires decides its outcome. Every injected fault is
named in the request's audit log entry as the annotation `kiln.dev/injected-fault`.
"""

from __future__ import annotations

import pathlib
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from kiln.devcluster import errors

VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
CONFLICT_VERBS = ("update", "patch", "delete")
"""The writes a 409 Conflict is injected on: those naming an object, which a stale
resourceVersion makes kube-apiserver refuse."""
STATUSES = (500, 503, 429, 409)
ANNOTATION = "kiln.dev/injected-fault"
RULE_ANNOTATION = "kiln.dev/injected-fault-rule"

_RULE_FIELDS = ("verbs", "resources", "namespaces", "status", "rate", "retryAfterSeconds", "delaySeconds", "watch")
_FAULT_FIELDS = ("status", "delaySeconds", "watch")
_WATCH_FIELDS = ("closeAfterEvents", "closeAfterSeconds")


class FaultError(ValueError):
    """A fault config that cannot be used; the message names the rule and the field."""


@dataclass(frozen=True)
class Request:
    """The attributes of a request that rules match on."""

    verb: str
    group: str
    resource: str
    subresource: str | None = None
    namespace: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class ResourceMatch:
    """`plural[.group][/subresource]`; `*` for the plural matches every resource."""

    plural: str
    group: str | None = None
    subresource: str | None = None

    def matches(self, request: Request) -> bool:
        if self.plural not in ("*", request.resource):
            return False
        if self.group is not None and self.group != request.group:
            return False
        return self.subresource is None or self.subresource == request.subresource

    def __str__(self) -> str:
        text = self.plural + (f".{self.group}" if self.group is not None else "")
        return text + (f"/{self.subresource}" if self.subresource is not None else "")


@dataclass(frozen=True)
class WatchCut:
    """A watch stream ended early: after so many events, or so many seconds."""

    events: int | None = None
    seconds: float | None = None

    def timeout(self, requested: float) -> float:
        """The watch's timeout, shortened to the cut."""
        return requested if self.seconds is None else min(requested, self.seconds)

    def spent(self, sent: int) -> bool:
        """Whether the stream ends now, `sent` events in."""
        return self.events is not None and sent >= self.events

    def __str__(self) -> str:
        return (
            f"watch closed after {self.events} events"
            if self.events is not None
            else f"watch closed after {self.seconds}s"
        )


@dataclass(frozen=True)
class Rule:
    verbs: tuple[str, ...]
    resources: tuple[ResourceMatch, ...]
    rate: float
    namespaces: tuple[str, ...] | None = None
    status: int | None = None
    retry_after_seconds: int | None = None
    delay_seconds: float | None = None
    watch: WatchCut | None = None

    def applies(self, request: Request) -> bool:
        if "*" not in self.verbs and request.verb not in self.verbs:
            return False
        if self.status == 409 and request.verb not in CONFLICT_VERBS:
            return False
        if self.watch is not None and request.verb != "watch":
            return False
        if self.namespaces is not None and (request.namespace or "") not in self.namespaces:
            return False
        return any(match.matches(request) for match in self.resources)

    def dump(self) -> dict[str, Any]:
        """The rule as it is written in YAML."""
        body: dict[str, Any] = {"verbs": list(self.verbs), "resources": [str(match) for match in self.resources]}
        if self.namespaces is not None:
            body["namespaces"] = list(self.namespaces)
        if self.status is not None:
            body["status"] = self.status
        if self.retry_after_seconds is not None:
            body["retryAfterSeconds"] = self.retry_after_seconds
        if self.delay_seconds is not None:
            body["delaySeconds"] = self.delay_seconds
        if self.watch is not None:
            cut = self.watch
            body["watch"] = (
                {"closeAfterEvents": cut.events} if cut.events is not None else {"closeAfterSeconds": cut.seconds}
            )
        body["rate"] = self.rate
        return body


@dataclass(frozen=True)
class FaultConfig:
    rules: tuple[Rule, ...] = ()
    seed: int | None = None

    def dump(self) -> dict[str, Any]:
        body: dict[str, Any] = {"rules": [rule.dump() for rule in self.rules]}
        if self.seed is not None:
            body["seed"] = self.seed
        return body


class InjectedError(errors.ApiError):
    """An injected Status error, with the headers it is answered with (Retry-After)."""

    def __init__(self, error: errors.ApiError, headers: Mapping[str, str]) -> None:
        super().__init__(error.code, error.reason, error.message, error.details)
        self.headers = dict(headers)


@dataclass(frozen=True)
class Injection:
    """What happens to one request: a delay first, then an error or a shortened watch (or neither)."""

    request: Request
    rules: tuple[int, ...]
    delay_seconds: float = 0.0
    status: int | None = None
    retry_after_seconds: int | None = None
    watch: WatchCut | None = None

    @property
    def annotations(self) -> dict[str, str]:
        """Audit annotations naming the faults, as kube audit annotations are: key to string."""
        faults = [f"delay {self.delay_seconds}s"] if self.delay_seconds else []
        faults += [str(self.status)] if self.status is not None else []
        faults += [str(self.watch)] if self.watch is not None else []
        return {ANNOTATION: ", ".join(faults), RULE_ANNOTATION: ",".join(f"rules[{index}]" for index in self.rules)}

    def error(self) -> InjectedError | None:
        """The Status error to answer with, worded as kube-apiserver words it."""
        if self.status is None:
            return None
        return status_error(self.request, self.status, self.retry_after_seconds)


def status_error(request: Request, status: int, retry_after_seconds: int | None = None) -> InjectedError:
    headers = {"Retry-After": str(retry_after_seconds)} if retry_after_seconds is not None else {}
    if status == 500:
        cause = "an injected fault (kiln dev cluster fault injection)"
        error = errors.ApiError(
            500, "InternalError", f"Internal error occurred: {cause}", {"causes": [{"message": cause}]}
        )
    elif status == 503:
        details = {"retryAfterSeconds": retry_after_seconds} if retry_after_seconds is not None else None
        error = errors.ApiError(
            503, "ServiceUnavailable", "the server is currently unable to handle the request", details
        )
    elif status == 429:
        details = {"retryAfterSeconds": retry_after_seconds} if retry_after_seconds is not None else None
        error = errors.ApiError(429, "TooManyRequests", "Too many requests, please try again later.", details)
    elif status == 409:
        error = errors.conflict(request.resource, request.group, request.name or "", errors.STALE_OBJECT)
    else:
        raise ValueError(f"no injected fault answers {status}")
    return InjectedError(error, headers)


Draw = Callable[[], float]
"""A random number in [0, 1): `random.Random(seed).random`."""


def decide(config: FaultConfig, request: Request, draw: Draw) -> Injection | None:
    """Which faults a request gets: one draw per matching rule, in order, until the request has a
    delay and an outcome; a rule fires when its draw is below its rate."""
    fired: list[int] = []
    delay: float | None = None
    outcome: Rule | None = None
    for index, rule in enumerate(config.rules):
        slows = rule.delay_seconds is not None
        if (delay is not None if slows else outcome is not None) or not rule.applies(request):
            continue
        if draw() >= rule.rate:
            continue
        fired.append(index)
        if slows:
            delay = rule.delay_seconds
        else:
            outcome = rule
        if delay is not None and outcome is not None:
            break
    if not fired:
        return None
    return Injection(
        request,
        tuple(fired),
        delay_seconds=delay or 0.0,
        status=outcome.status if outcome else None,
        retry_after_seconds=outcome.retry_after_seconds if outcome else None,
        watch=outcome.watch if outcome else None,
    )


class Injector:
    """A fault config and its random source, as the API server holds them; off without rules."""

    def __init__(self, config: FaultConfig | None, draw: Draw | None = None) -> None:
        self.config = config or FaultConfig()
        self.draw = draw or random.Random(self.config.seed).random

    @property
    def on(self) -> bool:
        return bool(self.config.rules)

    def decide(self, request: Request) -> Injection | None:
        return decide(self.config, request, self.draw) if self.config.rules else None


# parsing


def parse(document: object) -> FaultConfig:
    """A fault config from its YAML form: `{rules: [...], seed: N}`, or the list of rules alone."""
    if isinstance(document, FaultConfig):
        return document
    if document is None:
        return FaultConfig()
    if isinstance(document, list):
        document = {"rules": document}
    if not isinstance(document, dict):
        raise FaultError(f"faults must be a mapping with rules (or a list of rules), not {_shown(document)}")
    unknown = sorted(set(document) - {"rules", "seed"})
    if unknown:
        raise FaultError(f"faults: unknown field {unknown[0]!r}; the fields are rules and seed")
    seed = document.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise FaultError(f"faults.seed: must be an integer, not {_shown(seed)}")
    rules = document.get("rules")
    if rules is None:
        rules = []
    if not isinstance(rules, list):
        raise FaultError(f"faults.rules: must be a list of rules, not {_shown(rules)}")
    return FaultConfig(tuple(_rule(f"rules[{index}]", rule) for index, rule in enumerate(rules)), seed)


def load_file(path: pathlib.Path) -> FaultConfig:
    """A fault config from a YAML file: the `faults:` section's content, or a document with `faults:`."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise FaultError(f"{path}: {error}") from None
    if isinstance(document, dict) and set(document) == {"faults"}:
        document = document["faults"]
    try:
        return parse(document)
    except FaultError as error:
        raise FaultError(f"{path}: {error}") from None


def _rule(where: str, body: object) -> Rule:
    if not isinstance(body, dict):
        raise FaultError(f"{where}: a rule must be a mapping, not {_shown(body)}")
    unknown = sorted(set(body) - set(_RULE_FIELDS))
    if unknown:
        raise FaultError(f"{where}: unknown field {unknown[0]!r}; the fields are {', '.join(_RULE_FIELDS)}")
    given = [field for field in _FAULT_FIELDS if body.get(field) is not None]
    if len(given) != 1:
        found = f"it has {' and '.join(given)}" if given else "it has none"
        raise FaultError(f"{where}: a rule has exactly one fault, status, delaySeconds or watch; {found}")
    verbs = _names(f"{where}.verbs", body.get("verbs"), VERBS)
    resources = tuple(
        _resource(f"{where}.resources", text) for text in _strings(f"{where}.resources", body.get("resources"))
    )
    namespaces = None
    if body.get("namespaces") is not None:
        namespaces = _strings(f"{where}.namespaces", body["namespaces"])
    rate = _number(f"{where}.rate", body.get("rate"), required=True)
    assert rate is not None
    if not 0 <= rate <= 1:
        raise FaultError(f"{where}.rate: must be from 0 to 1, not {rate}")
    status, retry_after = _status(where, body, verbs)
    delay = _number(f"{where}.delaySeconds", body.get("delaySeconds"))
    if delay is not None and delay < 0:
        raise FaultError(f"{where}.delaySeconds: must be 0 or more, not {delay}")
    watch = _watch(f"{where}.watch", body.get("watch"))
    if watch is not None and "*" not in verbs and verbs != ("watch",):
        raise FaultError(f"{where}.verbs: a watch fault applies to the watch verb only, not to {', '.join(verbs)}")
    return Rule(verbs, resources, rate, namespaces, status, retry_after, delay, watch)


def _status(where: str, body: dict[str, Any], verbs: tuple[str, ...]) -> tuple[int | None, int | None]:
    """A rule's status and Retry-After seconds."""
    status = body.get("status")
    retry_after = body.get("retryAfterSeconds")
    if status is not None and (not isinstance(status, int) or isinstance(status, bool) or status not in STATUSES):
        raise FaultError(f"{where}.status: must be one of 500, 503, 429 or 409, not {_shown(status)}")
    if retry_after is not None:
        if status not in (429, 503):
            raise FaultError(f"{where}.retryAfterSeconds: only a 429 or 503 status has a Retry-After")
        if not isinstance(retry_after, int) or isinstance(retry_after, bool) or retry_after < 0:
            raise FaultError(
                f"{where}.retryAfterSeconds: must be a whole number of seconds, 0 or more, not {_shown(retry_after)}"
            )
    elif status == 429:
        retry_after = 1  # what kube-apiserver's max-in-flight filter asks
    if status == 409 and "*" not in verbs and set(verbs) - set(CONFLICT_VERBS):
        others = ", ".join(verb for verb in verbs if verb not in CONFLICT_VERBS)
        raise FaultError(f"{where}.verbs: a 409 Conflict is injected only on update, patch and delete, not on {others}")
    return status, retry_after


def _watch(where: str, body: object) -> WatchCut | None:
    if body is None:
        return None
    if not isinstance(body, dict):
        raise FaultError(f"{where}: must be a mapping with closeAfterEvents or closeAfterSeconds, not {_shown(body)}")
    unknown = sorted(set(body) - set(_WATCH_FIELDS))
    if unknown:
        raise FaultError(
            f"{where}: unknown field {unknown[0]!r}; the fields are closeAfterEvents and closeAfterSeconds"
        )
    if len(body) != 1:
        raise FaultError(f"{where}: needs exactly one of closeAfterEvents and closeAfterSeconds")
    if "closeAfterEvents" in body:
        events = body["closeAfterEvents"]
        if not isinstance(events, int) or isinstance(events, bool) or events < 0:
            raise FaultError(f"{where}.closeAfterEvents: must be a whole number, 0 or more, not {_shown(events)}")
        return WatchCut(events=events)
    seconds = _number(f"{where}.closeAfterSeconds", body["closeAfterSeconds"], required=True)
    assert seconds is not None
    if seconds < 0:
        raise FaultError(f"{where}.closeAfterSeconds: must be 0 or more, not {seconds}")
    return WatchCut(seconds=seconds)


def _names(where: str, value: object, allowed: tuple[str, ...]) -> tuple[str, ...]:
    names = _strings(where, value)
    for name in names:
        if name != "*" and name not in allowed:
            raise FaultError(f"{where}: unknown verb {name!r}; the verbs are {', '.join(allowed)} or *")
    return names


def _strings(where: str, value: object) -> tuple[str, ...]:
    if value is None:
        raise FaultError(f'{where}: required, a list of names (or ["*"])')
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(item, str) and item for item in value):
        raise FaultError(f"{where}: must be a non-empty list of names, not {_shown(value)}")
    return tuple(value)


def _resource(where: str, text: str) -> ResourceMatch:
    head, _, subresource = text.partition("/")
    plural, dot, group = head.partition(".")
    if not plural or (dot and not group) or ("/" in text and not subresource):
        raise FaultError(f"{where}: {text!r} is not plural[.group][/subresource] or *")
    if plural == "*" and dot:
        raise FaultError(f"{where}: {text!r}: * matches every resource of every group; it takes no group")
    return ResourceMatch(plural, group if dot else None, subresource or None)


def _number(where: str, value: object, required: bool = False) -> float | None:
    if value is None:
        if required:
            raise FaultError(f"{where}: required")
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise FaultError(f"{where}: must be a number, not {_shown(value)}")
    return float(value)


def _shown(value: object) -> str:
    return f"{type(value).__name__} {value!r}"
