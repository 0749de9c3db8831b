"""Which ModelVersion a ModelDeployment serves: only Validated versions with a verified artifact, picked by
the version policy in semver order, skipping rolled-back ones; and a candidate whose inputs differ from
the stable version's refused."""

from __future__ import annotations

from typing import Any

import delivery_fixtures as fx
import pytest

from kiln.api import modeldeployment
from kiln.delivery import versions


def spec(**fields: Any) -> modeldeployment.ModelDeploymentSpec:
    return modeldeployment.ModelDeploymentSpec.model_validate({"model": "iris", **fields})


def found(*bodies: dict[str, Any]) -> list[versions.Candidate]:
    return versions.candidates(bodies, "iris")


def chosen(selecting: modeldeployment.ModelDeploymentSpec, *bodies: Any, rolled_back: tuple[str, ...] = ()) -> Any:
    choice = versions.choose(selecting, found(*bodies), rolled_back)
    return choice.chosen.version if choice.chosen else None


V = fx.version_body
LATEST = {"versionPolicy": "LatestValidated"}
PRODUCTION = {"versionPolicy": "Production"}


@pytest.mark.parametrize(
    ("offered", "expected"),
    [
        pytest.param(["1.2.0", "1.10.0", "1.9.0"], "1.10.0", id="numeric-not-lexical"),
        pytest.param(["1.9.0", "2.0.0-rc.1"], "2.0.0-rc.1", id="pre-release-above-older-release"),
        pytest.param(["2.0.0-rc.1", "2.0.0"], "2.0.0", id="release-above-its-pre-release"),
        pytest.param(["1.0.0-alpha.2", "1.0.0-alpha.10"], "1.0.0-alpha.10", id="numeric-pre-release-identifiers"),
        pytest.param(["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-beta"], "1.0.0-beta", id="alphanumeric-identifiers"),
    ],
)
def test_latest_validated_picks_the_highest_in_semver_order(offered: list[str], expected: str) -> None:
    assert chosen(spec(**LATEST), *(V(version) for version in offered)) == expected


@pytest.mark.parametrize(
    ("newest", "why"),
    [
        pytest.param(V("2.0.0", phase="Validating"), "not-validated-yet", id="validating"),
        pytest.param(V("2.0.0", phase="Rejected"), "rejected", id="rejected"),
        pytest.param(V("2.0.0", verified=False), "artifact-not-verified", id="unverified"),
    ],
)
def test_latest_validated_skips_versions_that_are_not_servable(newest: dict[str, Any], why: str) -> None:
    assert chosen(spec(**LATEST), V("1.0.0"), newest) == "1.0.0", why


def test_a_version_without_status_is_not_servable() -> None:
    body = V("2.0.0")
    del body["status"]

    assert chosen(spec(**LATEST), V("1.0.0"), body) == "1.0.0"


def test_latest_validated_skips_rolled_back_versions() -> None:
    assert chosen(spec(**LATEST), V("1.0.0"), V("1.1.0"), rolled_back=("1.1.0",)) == "1.0.0"


def test_versions_of_other_models_and_unparseable_bodies_are_left_out() -> None:
    broken = V("3.0.0")
    broken["spec"]["artifact"] = {"uri": "ftp://nowhere"}

    offered = found(V("1.0.0"), V("2.0.0", model="roses"), broken)

    assert [c.version for c in offered] == ["1.0.0"]


def test_nothing_servable_says_why() -> None:
    choice = versions.choose(spec(**LATEST), found(V("1.0.0", phase="Validating")), ())

    assert choice.chosen is None
    assert "no version of model iris is Validated" in choice.reason


@pytest.mark.parametrize(
    ("stages", "expected"),
    [
        pytest.param({"1.0.0": "Production", "1.1.0": "Staging"}, "1.0.0", id="only-production"),
        pytest.param({"1.0.0": "Production", "1.1.0": "Production"}, "1.1.0", id="highest-in-production"),
        pytest.param({"1.0.0": "Staging"}, None, id="none-in-production"),
    ],
)
def test_production_picks_the_highest_version_in_stage_production(stages: dict[str, str], expected: str | None) -> None:
    bodies = [V(version, stage=stage) for version, stage in stages.items()]

    assert chosen(spec(**PRODUCTION), *bodies) == expected


def test_production_is_the_policy_when_no_version_is_set() -> None:
    assert versions.policy_of(spec()) is versions.Policy.PRODUCTION
    assert chosen(spec(), V("1.0.0", stage="Production"), V("2.0.0")) == "1.0.0"


def test_production_skips_an_unverified_version_in_production() -> None:
    bodies = [V("1.0.0", stage="Production"), V("1.1.0", stage="Production", verified=False)]

    assert chosen(spec(**PRODUCTION), *bodies) == "1.0.0"


def test_pin_serves_exactly_the_version_asked_for() -> None:
    assert versions.policy_of(spec(version="1.0.0")) is versions.Policy.PIN
    assert chosen(spec(version="1.0.0"), V("1.0.0"), V("2.0.0")) == "1.0.0"


@pytest.mark.parametrize(
    ("bodies", "rolled_back", "reason"),
    [
        pytest.param([V("2.0.0")], (), "no ModelVersion of model iris has version 1.0.0", id="missing"),
        pytest.param([V("1.0.0", phase="Validating")], (), "is Validating, not Validated", id="not-validated"),
        pytest.param([V("1.0.0", verified=False)], (), "not Validated with a verified artifact", id="unverified"),
        pytest.param([V("1.0.0")], ("1.0.0",), "was rolled back", id="rolled-back"),
    ],
)
def test_pin_refuses_with_a_reason(bodies: list[dict[str, Any]], rolled_back: tuple[str, ...], reason: str) -> None:
    choice = versions.choose(spec(version="1.0.0"), found(*bodies), rolled_back)

    assert choice.chosen is None
    assert reason in choice.reason


@pytest.mark.parametrize(
    ("selecting", "words"),
    [
        ({"version": "1.2.0"}, "iris Pin 1.2.0"),
        (LATEST, "iris LatestValidated"),
        ({}, "iris Production"),
    ],
)
def test_selection_names_what_the_spec_asks_for(selecting: dict[str, Any], words: str) -> None:
    assert versions.selection(spec(**selecting)) == words


# -- signatures ---------------------------------------------------------------------------------


def incompatibility(stable: dict[str, Any] | None, candidate: dict[str, Any]) -> str | None:
    old = found(stable)[0] if stable else None
    return versions.incompatibility(old, found(candidate)[0])


FIVE_INPUTS = [{"name": "features", "datatype": "FP64", "shape": [-1, 5]}]
FP32_INPUTS = [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]


@pytest.mark.parametrize(
    ("candidate", "complaint"),
    [
        pytest.param(V("1.1.0", inputs=FIVE_INPUTS), "inputs", id="shape"),
        pytest.param(V("1.1.0", inputs=FP32_INPUTS), "FP32", id="datatype"),
        pytest.param(V("1.1.0", features=["a", "b", "c", "d"]), "expects the features", id="feature-names"),
    ],
)
def test_a_candidate_whose_inputs_differ_is_refused(candidate: dict[str, Any], complaint: str) -> None:
    refusal = incompatibility(V("1.0.0"), candidate)

    assert refusal is not None
    assert complaint in refusal
    assert "1.1.0" in refusal
    assert "1.0.0" in refusal


@pytest.mark.parametrize(
    ("stable", "candidate"),
    [
        pytest.param(V("1.0.0"), V("1.1.0"), id="same-signature"),
        pytest.param(V("1.0.0", signature=False), V("1.1.0", inputs=FIVE_INPUTS), id="stable-declares-none"),
        pytest.param(V("1.0.0"), V("1.1.0", signature=False), id="candidate-declares-none"),
        pytest.param(V("1.0.0", features=[]), V("1.1.0", features=["a", "b", "c", "d"]), id="no-names-to-compare"),
        pytest.param(None, V("1.1.0"), id="first-deployment"),
    ],
)
def test_a_compatible_or_undeclared_signature_is_accepted(stable: dict[str, Any] | None, candidate: Any) -> None:
    assert incompatibility(stable, candidate) is None
