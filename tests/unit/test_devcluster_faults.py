"""Dev cluster fault injection (pure): parsing and its errors, matching, rates with an injected
random source, 409 only on writes, Status bodies worded as kube-apiserver words them."""

from __future__ import annotations

import pathlib
import random
from collections.abc import Iterator
from typing import Any

import pytest

from kiln.devcluster import config, faults

Object = dict[str, Any]


def rule(**overrides: Any) -> Object:
    return {"verbs": ["*"], "resources": ["*"], "status": 500, "rate": 1} | overrides


def request(verb: str = "get", resource: str = "pods", **overrides: Any) -> faults.Request:
    fields: Object = {"group": "", "subresource": None, "namespace": "default", "name": "web"}
    return faults.Request(verb, resource=resource, **(fields | overrides))


def draws(*values: float) -> faults.Draw:
    """A random source that gives these numbers, then fails the test if asked for more."""
    given: Iterator[float] = iter(values)
    return lambda: next(given)


# parsing


def test_a_full_config_parses_and_dumps_back_to_the_same_yaml() -> None:
    document = {
        "seed": 7,
        "rules": [
            {"verbs": ["get", "list"], "resources": ["pods", "deployments.apps"], "namespaces": ["default"],
             "status": 503, "retryAfterSeconds": 2, "rate": 0.2},
            {"verbs": ["update", "patch"], "resources": ["*"], "status": 409, "rate": 0.1},
            {"verbs": ["*"], "resources": ["configmaps"], "delaySeconds": 0.5, "rate": 0.5},
            {"verbs": ["watch"], "resources": ["modelversions.kiln.dev"], "watch": {"closeAfterEvents": 3},
             "rate": 1.0},
            {"verbs": ["watch"], "resources": ["pods/log"], "watch": {"closeAfterSeconds": 2.0}, "rate": 1.0},
        ],
    }  # fmt: skip
    parsed = faults.parse(document)
    assert parsed.seed == 7
    assert [r.status for r in parsed.rules] == [503, 409, None, None, None]
    assert parsed.rules[0].resources == (faults.ResourceMatch("pods"), faults.ResourceMatch("deployments", "apps"))
    assert parsed.rules[2].delay_seconds == 0.5
    assert parsed.rules[3].watch == faults.WatchCut(events=3)
    assert parsed.rules[4].watch == faults.WatchCut(seconds=2.0)
    assert parsed.rules[4].resources == (faults.ResourceMatch("pods", None, "log"),)
    assert faults.parse(parsed.dump()) == parsed
    assert parsed.dump() == document


def test_a_429_asks_to_retry_after_a_second_unless_told() -> None:
    parsed = faults.parse([rule(status=429), rule(status=503), rule(status=429, retryAfterSeconds=5)])
    assert [r.retry_after_seconds for r in parsed.rules] == [1, None, 5]


def test_no_section_and_no_rules_inject_nothing() -> None:
    assert faults.parse(None) == faults.FaultConfig()
    assert faults.parse({"rules": []}) == faults.FaultConfig()
    assert not faults.Injector(None).on
    assert faults.Injector(None).decide(request()) is None
    assert config.ClusterConfig().faults == faults.FaultConfig()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("often", "faults must be a mapping with rules (or a list of rules), not str 'often'"),
        ({"rule": []}, "faults: unknown field 'rule'; the fields are rules and seed"),
        ({"seed": "x", "rules": []}, "faults.seed: must be an integer, not str 'x'"),
        ({"rules": {"verbs": ["*"]}}, "faults.rules: must be a list of rules"),
        ([rule(), "503"], "rules[1]: a rule must be a mapping, not str '503'"),
        ([rule(codes=[500])], "rules[0]: unknown field 'codes'; the fields are verbs, resources"),
        ([rule(status=None)], "rules[0]: a rule has exactly one fault, status, delaySeconds or watch; it has none"),
        ([rule(delaySeconds=1)], "rules[0]: a rule has exactly one fault, status, delaySeconds or watch; "
                                 "it has status and delaySeconds"),
        ([rule(verbs=None)], "rules[0].verbs: required"),
        ([rule(verbs=["read"])], "rules[0].verbs: unknown verb 'read'; the verbs are get, list, watch"),
        ([rule(verbs=[])], "rules[0].verbs: must be a non-empty list of names"),
        ([rule(resources=None)], "rules[0].resources: required"),
        ([rule(resources=["deployments."])], "rules[0].resources: 'deployments.' is not plural[.group][/subresource]"),
        ([rule(resources=["pods/"])], "rules[0].resources: 'pods/' is not plural[.group][/subresource]"),
        ([rule(resources=["*.apps"])], "rules[0].resources: '*.apps': * matches every resource of every group"),
        ([rule(namespaces=[1])], "rules[0].namespaces: must be a non-empty list of names, not list [1]"),
        ([rule(rate=None)], "rules[0].rate: required"),
        ([rule(rate="20%")], "rules[0].rate: must be a number, not str '20%'"),
        ([rule(rate=1.5)], "rules[0].rate: must be from 0 to 1, not 1.5"),
        ([rule(), rule(status=404)], "rules[1].status: must be one of 500, 503, 429 or 409, not int 404"),
        ([rule(status="503")], "rules[0].status: must be one of 500, 503, 429 or 409, not str '503'"),
        ([rule(retryAfterSeconds=1)], "rules[0].retryAfterSeconds: only a 429 or 503 status has a Retry-After"),
        ([rule(status=429, retryAfterSeconds=0.5)], "rules[0].retryAfterSeconds: must be a whole number of seconds"),
        ([rule(status=409, verbs=["get", "patch"])],
         "rules[0].verbs: a 409 Conflict is injected only on update, patch and delete, not on get"),
        ([rule(status=409, verbs=["create"])], "a 409 Conflict is injected only on update, patch and delete"),
        ([rule(status=None, delaySeconds=-1)], "rules[0].delaySeconds: must be 0 or more, not -1.0"),
        ([rule(status=None, watch=3)], "rules[0].watch: must be a mapping with closeAfterEvents or closeAfterSeconds"),
        ([rule(status=None, watch={"afterEvents": 3})], "rules[0].watch: unknown field 'afterEvents'"),
        ([rule(status=None, watch={})], "rules[0].watch: needs exactly one of closeAfterEvents and closeAfterSeconds"),
        ([rule(status=None, watch={"closeAfterEvents": 1, "closeAfterSeconds": 1})], "needs exactly one of"),
        ([rule(status=None, watch={"closeAfterEvents": 1.5})], "rules[0].watch.closeAfterEvents: must be a whole"),
        ([rule(status=None, watch={"closeAfterSeconds": "1s"})], "rules[0].watch.closeAfterSeconds: must be a number"),
        ([rule(status=None, watch={"closeAfterEvents": 1}, verbs=["list", "watch"])],
         "rules[0].verbs: a watch fault applies to the watch verb only, not to list, watch"),
    ],
)  # fmt: skip
def test_a_bad_config_is_refused_naming_the_rule_and_the_field(document: object, message: str) -> None:
    with pytest.raises(faults.FaultError) as refused:
        faults.parse(document)
    assert message in str(refused.value)


def test_the_cluster_config_reports_a_bad_fault_rule_under_faults() -> None:
    with pytest.raises(config.ConfigError) as refused:
        config.load(None, {"faults": {"rules": [rule(rate=2)]}})
    assert str(refused.value) == "invalid dev cluster config: faults: rules[0].rate: must be from 0 to 1, not 2.0"
    loaded = config.load(None, {"faults": [rule(status=503)]})
    assert loaded.faults.rules[0].status == 503
    dumped = loaded.model_dump(mode="json", by_alias=True)
    assert dumped["faults"] == {"rules": [{"verbs": ["*"], "resources": ["*"], "status": 503, "rate": 1.0}]}
    assert config.ClusterConfig.model_validate(dumped) == loaded


def test_a_faults_file_is_the_section_or_a_document_holding_it(tmp_path: pathlib.Path) -> None:
    section = tmp_path / "section.yaml"
    section.write_text("rules:\n  - {verbs: [get], resources: [pods], status: 429, rate: 0.5}\n")
    wrapped = tmp_path / "wrapped.yaml"
    wrapped.write_text("faults:\n  rules:\n    - {verbs: [get], resources: [pods], status: 429, rate: 0.5}\n")
    assert faults.load_file(section) == faults.load_file(wrapped)
    assert faults.load_file(section).rules[0].retry_after_seconds == 1
    broken = tmp_path / "broken.yaml"
    broken.write_text("rules:\n  - {verbs: [get], resources: [pods], status: 418, rate: 0.5}\n")
    with pytest.raises(faults.FaultError, match=r"broken\.yaml: rules\[0\]\.status: must be one of"):
        faults.load_file(broken)


# matching


@pytest.mark.parametrize(
    ("overrides", "asked", "matches"),
    [
        ({}, request(), True),
        ({"verbs": ["get"]}, request("get"), True),
        ({"verbs": ["get"]}, request("list", name=None), False),
        ({"verbs": ["list", "watch"]}, request("watch", name=None), True),
        ({"resources": ["pods"]}, request(resource="configmaps"), False),
        ({"resources": ["pods", "configmaps"]}, request(resource="configmaps"), True),
        ({"resources": ["deployments"]}, request(resource="deployments", group="apps"), True),
        ({"resources": ["deployments.apps"]}, request(resource="deployments", group="apps"), True),
        ({"resources": ["deployments.apps"]}, request(resource="deployments", group="extensions"), False),
        ({"resources": ["modelversions"]}, request("patch", "modelversions", subresource="status"), True),
        ({"resources": ["modelversions/status"]}, request("patch", "modelversions", subresource="status"), True),
        ({"resources": ["modelversions/status"]}, request("patch", "modelversions"), False),
        ({"resources": ["*/status"]}, request("patch", "pods", subresource="status"), True),
        ({"namespaces": ["default"]}, request(), True),
        ({"namespaces": ["team-a"]}, request(), False),
        ({"namespaces": ["default"]}, request("list", namespace=None, name=None), False),
        ({"namespaces": ["default"]}, request("get", "nodes", namespace=None), False),
    ],
)
def test_a_rule_matches_by_verb_resource_and_namespace(overrides: Object, asked: faults.Request, matches: bool) -> None:
    parsed = faults.parse([rule(**overrides)])
    assert parsed.rules[0].applies(asked) is matches
    injected = faults.decide(parsed, asked, draws(0.0))
    assert (injected is not None) is matches


@pytest.mark.parametrize(
    ("verb", "injected"),
    [("get", False), ("list", False), ("watch", False), ("create", False), ("deletecollection", False),
     ("update", True), ("patch", True), ("delete", True)],
)  # fmt: skip
def test_a_409_is_injected_only_on_writes_that_name_an_object(verb: str, injected: bool) -> None:
    parsed = faults.parse([rule(status=409)])
    decided = faults.decide(parsed, request(verb), draws(0.0))
    assert (decided is not None) is injected
    if decided is not None:
        assert decided.status == 409


def test_a_watch_fault_is_injected_only_on_watches() -> None:
    parsed = faults.parse([rule(status=None, watch={"closeAfterEvents": 2})])
    assert faults.decide(parsed, request("list", name=None), draws(0.0)) is None
    decided = faults.decide(parsed, request("watch", name=None), draws(0.0))
    assert decided is not None
    assert decided.watch == faults.WatchCut(events=2)
    assert decided.annotations[faults.ANNOTATION] == "watch closed after 2 events"


# rates and draws


@pytest.mark.parametrize(
    ("rate", "draw", "fires"),
    [(0.0, 0.0, False), (0.2, 0.0, True), (0.2, 0.1999, True), (0.2, 0.2, False), (0.2, 0.9, False),
     (1.0, 0.9999, True)],
)  # fmt: skip
def test_a_rule_fires_when_its_draw_is_below_its_rate(rate: float, draw: float, fires: bool) -> None:
    decided = faults.decide(faults.parse([rule(rate=rate)]), request(), draws(draw))
    assert (decided is not None) is fires


def test_rules_are_tried_in_order_one_draw_each_until_one_decides_the_outcome() -> None:
    parsed = faults.parse([
        rule(verbs=["list"], status=429),  # does not match a get: no draw
        rule(status=503, rate=0.5),
        rule(status=500, rate=0.5),
        rule(status=None, delaySeconds=0.25, rate=0.5),
    ])  # fmt: skip
    decided = faults.decide(parsed, request(), draws(0.7, 0.1, 0.9))
    assert decided is not None
    assert (decided.status, decided.delay_seconds, decided.rules) == (500, 0.0, (2,))
    decided = faults.decide(parsed, request(), draws(0.1, 0.1))  # the 500 is not drawn for: 503 decided
    assert decided is not None
    assert (decided.status, decided.delay_seconds, decided.rules) == (503, 0.25, (1, 3))
    assert decided.annotations == {faults.ANNOTATION: "delay 0.25s, 503", faults.RULE_ANNOTATION: "rules[1],rules[3]"}
    assert faults.decide(parsed, request(), draws(0.9, 0.9, 0.9)) is None


def test_a_delay_alone_slows_the_request_and_lets_it_through() -> None:
    parsed = faults.parse([rule(status=None, delaySeconds=1.5, rate=0.5)])
    decided = faults.decide(parsed, request(), draws(0.4))
    assert decided is not None
    assert (decided.delay_seconds, decided.status, decided.watch, decided.error()) == (1.5, None, None, None)
    assert decided.annotations[faults.ANNOTATION] == "delay 1.5s"


def test_a_seeded_injector_injects_at_about_the_rate_and_the_same_way_each_time() -> None:
    parsed = faults.parse({"seed": 42, "rules": [rule(status=503, rate=0.2)]})

    def outcomes() -> list[bool]:
        injector = faults.Injector(parsed)
        return [injector.decide(request()) is not None for _ in range(2000)]

    first = outcomes()
    assert first == outcomes()
    assert 0.17 < sum(first) / len(first) < 0.23
    rng = random.Random(42)
    assert first[:50] == [rng.random() < 0.2 for _ in range(50)]


# Status bodies


def test_the_injected_statuses_are_worded_as_kube_apiserver_words_them() -> None:
    internal = faults.status_error(request(), 500)
    assert internal.status() == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "Internal error occurred: an injected fault (kiln dev cluster fault injection)",
        "reason": "InternalError", "code": 500,
        "details": {"causes": [{"message": "an injected fault (kiln dev cluster fault injection)"}]},
    }  # fmt: skip
    assert internal.headers == {}
    unavailable = faults.status_error(request(), 503, 2)
    assert unavailable.status()["reason"] == "ServiceUnavailable"
    assert unavailable.status()["message"] == "the server is currently unable to handle the request"
    assert unavailable.status()["details"] == {"retryAfterSeconds": 2}
    assert unavailable.headers == {"Retry-After": "2"}
    assert "details" not in faults.status_error(request(), 503).status()
    throttled = faults.status_error(request(), 429, 1)
    assert (throttled.code, throttled.reason, throttled.message) == (
        429, "TooManyRequests", "Too many requests, please try again later.",
    )  # fmt: skip
    assert throttled.status()["details"] == {"retryAfterSeconds": 1}
    assert throttled.headers == {"Retry-After": "1"}
    conflict = faults.status_error(request("update", "modelversions", group="kiln.dev", name="iris-v1"), 409)
    assert conflict.status()["reason"] == "Conflict"
    assert conflict.message == (
        'Operation cannot be fulfilled on modelversions.kiln.dev "iris-v1": '
        "the object has been modified; please apply your changes to the latest version and try again"
    )
    assert conflict.status()["details"] == {"name": "iris-v1", "group": "kiln.dev", "kind": "modelversions"}
    core = faults.status_error(request("patch", "configmaps", name="settings"), 409)
    assert core.message.startswith('Operation cannot be fulfilled on configmaps "settings": the object has been')


def test_an_injection_answers_with_its_rules_status() -> None:
    parsed = faults.parse([rule(status=429, retryAfterSeconds=3)])
    decided = faults.decide(parsed, request(), draws(0.0))
    assert decided is not None
    error = decided.error()
    assert error is not None
    assert (error.code, error.headers) == (429, {"Retry-After": "3"})
    assert decided.annotations == {faults.ANNOTATION: "429", faults.RULE_ANNOTATION: "rules[0]"}
