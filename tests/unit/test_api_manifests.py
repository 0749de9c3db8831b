"""The typed API and the CRDs generated from it agree on what a valid manifest is.

Every example must be accepted by pydantic (what the operator parses), by the
CRD's structural schema with kubectl's strict field validation, and by the CEL
rules the API server evaluates. Each invalid manifest below is one mutation of
an example and must be refused by pydantic and by the API server path, with an
error that names the field.
"""

from __future__ import annotations

import dataclasses
import pathlib
import subprocess
import sys
from typing import Any

import cel
import crd_schemas
import pydantic
import pytest
import yaml
from click.testing import CliRunner
from crd_schemas import DELETE

import kiln
from kiln import api, cli
from kiln.api import crd, modelversion, resources

SCENARIOS = (
    "iris-training",
    "distributed-gpu-training",
    "train-iris",
    "train-gpu",
    "train-distributed",
    "model-registry",
    "canary-rollout",
    "blue-green",
    "shadow",
    "kfp-pipeline",
)

EXAMPLE_DOCUMENTS = crd_schemas.example_documents()


# Valid examples


def test_every_scenario_has_a_readme_and_a_kiln_manifest() -> None:
    folders = sorted(path.name for path in crd_schemas.EXAMPLES.iterdir() if path.is_dir())
    assert folders == sorted(SCENARIOS)
    for scenario in SCENARIOS:
        readme = (crd_schemas.EXAMPLES / scenario / "README.md").read_text()
        assert f"kubectl apply -f examples/{scenario}/" in readme
        assert crd_schemas.example(scenario)["apiVersion"] == api.API_VERSION


def test_examples_cover_all_three_kinds() -> None:
    assert {doc["kind"] for _, doc in EXAMPLE_DOCUMENTS} == {kind.kind for kind in resources.KINDS}


@pytest.mark.parametrize(("where", "manifest"), EXAMPLE_DOCUMENTS, ids=[where for where, _ in EXAMPLE_DOCUMENTS])
def test_example_is_accepted_by_pydantic(where: str, manifest: dict[str, Any]) -> None:
    crd_schemas.model_for(manifest).model_validate(manifest)


@pytest.mark.parametrize(("where", "manifest"), EXAMPLE_DOCUMENTS, ids=[where for where, _ in EXAMPLE_DOCUMENTS])
def test_example_is_accepted_by_the_strict_crd_schema(where: str, manifest: dict[str, Any]) -> None:
    assert crd_schemas.structural_errors(manifest) == []


@pytest.mark.parametrize(("where", "manifest"), EXAMPLE_DOCUMENTS, ids=[where for where, _ in EXAMPLE_DOCUMENTS])
def test_example_is_accepted_by_the_apiserver_with_cel_rules(where: str, manifest: dict[str, Any]) -> None:
    assert [str(error) for error in crd_schemas.apiserver_errors(manifest)] == []


@pytest.mark.parametrize(("where", "manifest"), EXAMPLE_DOCUMENTS, ids=[where for where, _ in EXAMPLE_DOCUMENTS])
def test_wire_form_with_defaults_filled_in_is_accepted_by_the_crd(where: str, manifest: dict[str, Any]) -> None:
    wire = crd_schemas.model_for(manifest).model_validate(manifest).to_wire()
    assert crd_schemas.structural_errors(wire) == []
    assert [str(error) for error in crd_schemas.apiserver_errors(wire)] == []


# Invalid manifests: one mutation of an example each


@dataclasses.dataclass(frozen=True)
class Invalid:
    """One mutation of an example, and where each layer must object.

    layer "openapi": the openAPIV3Schema refuses it (types, enums, bounds, patterns, required);
    layer "unknown-field": only strict field validation refuses it (the API server would prune it);
    layer "cel": only a CEL rule refuses it, with `message`;
    layer "pydantic-only": the CRD cannot express the check, so only pydantic refuses it, with `message`.
    """

    id: str
    scenario: str
    path: str
    value: Any
    field: str
    """The field the error must name, as kube-apiserver spells it (`spec.strategy.canary.steps[0]`)."""
    layer: str = "openapi"
    message: str = ""

    def manifest(self) -> dict[str, Any]:
        return crd_schemas.edited(crd_schemas.example(self.scenario), self.path, self.value)

    @property
    def pydantic_says(self) -> str:
        """What pydantic's error must contain: the CEL message, or the field's own name."""
        return self.message or self.field.rsplit(".", 1)[-1].split("[")[0]


def openapi(id: str, scenario: str, path: str, value: Any, field: str | None = None) -> Invalid:
    return Invalid(id, scenario, path, value, field or path)


def unknown_field(id: str, scenario: str, path: str, value: Any, field: str | None = None) -> Invalid:
    return Invalid(id, scenario, path, value, field or path, layer="unknown-field")


def cel_rule(id: str, scenario: str, path: str, value: Any, *, field: str, message: str) -> Invalid:
    return Invalid(id, scenario, path, value, field, layer="cel", message=message)


def pydantic_only(id: str, scenario: str, path: str, value: Any, message: str) -> Invalid:
    return Invalid(id, scenario, path, value, path, layer="pydantic-only", message=message)


TJ, GPU, MV = "iris-training", "distributed-gpu-training", "model-registry"
CANARY, BLUE_GREEN, SHADOW = "canary-rollout", "blue-green", "shadow"
STEPS = "spec.strategy.canary.steps"
METRICS = "spec.analysis.metrics"

INVALID = [
    # types
    openapi("replicas-is-a-word", CANARY, "spec.replicas", "two"),
    openapi("workers-is-a-word", GPU, "spec.workers", "four"),
    openapi("gate-min-is-a-word", MV, "spec.gates[0].min", "high"),
    openapi("memory-is-not-a-quantity", TJ, "spec.resources.memory", "lots"),
    # bounds
    openapi("negative-replicas", CANARY, "spec.replicas", -1),
    openapi("canary-weight-over-100", CANARY, f"{STEPS}[0].setWeight", 150),
    openapi("mirror-percent-over-100", SHADOW, "spec.strategy.shadow.mirrorPercent", 150),
    openapi("gpus-count-zero", GPU, "spec.resources.gpus.count", 0),
    openapi("test-size-not-a-fraction", TJ, "spec.sklearn.testSize", 1.5),
    openapi("negative-backoff-limit", GPU, "spec.backoffLimit", -1),
    # patterns
    openapi("model-version-two-parts", MV, "spec.version", "1.2"),
    openapi("deployment-version-v-prefix", CANARY, "spec.version", "v1.2.0"),
    openapi("output-version-latest", TJ, "spec.output.version", "latest"),
    openapi("model-name-not-dns-label", MV, "spec.modelName", "Iris_Model"),
    openapi("sha256-too-short", MV, "spec.artifact.sha256", "deadbeef"),
    openapi("sha256-upper-case", MV, "spec.artifact.sha256", "A" * 64),
    openapi("artifact-uri-http-scheme", MV, "spec.artifact.uri", "https://models.example.com/iris.skops"),
    openapi("duration-in-words", SHADOW, "spec.strategy.shadow.duration", "10 minutes"),
    openapi("pause-duration-in-days", CANARY, f"{STEPS}[1].pause.duration", "1d"),
    # enums
    openapi("unknown-traffic-provider", CANARY, "spec.traffic.provider", "istio"),
    openapi("unknown-metric-provider", CANARY, f"{METRICS}[0].provider", "datadog"),
    openapi("unknown-gang-scheduler", GPU, "spec.gangScheduling.scheduler", "yunikorn"),
    openapi("stage-live", MV, "spec.stage", "Live"),
    openapi("unknown-artifact-format", MV, "spec.artifact.format", "h5"),
    # required
    openapi("gpus-without-count", GPU, "spec.resources.gpus.count", DELETE),
    openapi("artifact-without-digest", MV, "spec.artifact.sha256", DELETE),
    # unknown fields
    unknown_field("unknown-strategy", CANARY, "spec.strategy", {"rolling": {}}, "spec.strategy.rolling"),
    unknown_field("unknown-spec-field", CANARY, "spec.replica", 3),
    unknown_field("snake-case-spec-field", GPU, "spec.backoff_limit", 3),
    # cross-field rules (CEL)
    cel_rule(
        "container-and-sklearn",
        TJ,
        "spec.container",
        {"image": "ghcr.io/example/train:1.0"},
        field="spec",
        message="exactly one of container or sklearn must be set",
    ),
    cel_rule(
        "neither-container-nor-sklearn",
        TJ,
        "spec.sklearn",
        DELETE,
        field="spec",
        message="exactly one of container or sklearn",
    ),
    cel_rule(
        "elastic-min-over-max",
        GPU,
        "spec.elastic.minWorkers",
        5,
        field="spec.elastic.minWorkers",
        message="minWorkers must not be greater than maxWorkers",
    ),
    cel_rule(
        "workers-outside-elastic-bounds",
        GPU,
        "spec.workers",
        8,
        field="spec.workers",
        message="workers must be between elastic.minWorkers and elastic.maxWorkers",
    ),
    cel_rule(
        "sklearn-on-two-workers",
        TJ,
        "spec.workers",
        2,
        field="spec.workers",
        message="the sklearn trainer runs on one worker",
    ),
    cel_rule(
        "dataset-uri-and-builtin",
        TJ,
        "spec.sklearn.dataset.uri",
        "pvc://datasets/iris.csv",
        field="spec.sklearn.dataset",
        message="exactly one of uri or builtin must be set",
    ),
    cel_rule(
        "dataset-uri-without-target-column",
        TJ,
        "spec.sklearn.dataset",
        {"uri": "file:///data/iris.csv"},
        field="spec.sklearn.targetColumn",
        message="targetColumn is required for a dataset given by uri",
    ),
    cel_rule(
        "checkpoint-claim-and-size",
        GPU,
        "spec.checkpoint.claimName",
        "checkpoints",
        field="spec.checkpoint",
        message="exactly one of claimName (an existing claim), size (a new claim) or uri (an object store prefix) must"
        " be set",
    ),
    cel_rule(
        "toleration-exists-with-value",
        GPU,
        "spec.tolerations[0].value",
        "present",
        field="spec.tolerations[0].value",
        message="value must be empty when operator is Exists",
    ),
    cel_rule(
        "env-value-and-value-from",
        GPU,
        "spec.container.env[1].value",
        "hunter2",
        field="spec.container.env[1]",
        message="value and valueFrom are mutually exclusive",
    ),
    cel_rule(
        "gate-without-bounds",
        TJ,
        "spec.output.gates[0]",
        {"metric": "accuracy"},
        field="spec.output.gates[0]",
        message="a gate needs at least one of min, max or noWorseThanProductionBy",
    ),
    cel_rule(
        "gate-min-over-max",
        MV,
        "spec.gates[1].min",
        20,
        field="spec.gates[1].min",
        message="min must not be greater than max",
    ),
    cel_rule(
        "baseline-counts-as-many-as-bins",
        MV,
        "spec.baseline.features[0].counts",
        [10, 32, 41, 35, 2],
        field="spec.baseline.features[0].counts",
        message="counts must have one entry fewer than bins",
    ),
    cel_rule(
        "canary-step-weight-and-pause",
        CANARY,
        f"{STEPS}[0]",
        {"setWeight": 10, "pause": {"duration": "1m"}},
        field=f"{STEPS}[0]",
        message="a step must set exactly one of setWeight, pause or analysis",
    ),
    cel_rule(
        "canary-step-empty",
        CANARY,
        f"{STEPS}[3]",
        {},
        field=f"{STEPS}[3]",
        message="a step must set exactly one of setWeight, pause or analysis",
    ),
    cel_rule(
        "step-analysis-names-undefined-metric",
        CANARY,
        f"{STEPS}[2].analysis.metrics",
        ["success-rate"],
        field=STEPS,
        message="every metric a canary step names must be defined in spec.analysis.metrics",
    ),
    cel_rule(
        "two-strategies",
        BLUE_GREEN,
        "spec.strategy.canary",
        {"steps": [{"setWeight": 100}]},
        field="spec.strategy",
        message="set at most one of canary, blueGreen or shadow",
    ),
    cel_rule(
        "pin-without-version",
        BLUE_GREEN,
        "spec.version",
        DELETE,
        field="spec.version",
        message="version must be set with versionPolicy Pin and only then",
    ),
    cel_rule(
        "version-with-latest-validated",
        BLUE_GREEN,
        "spec.versionPolicy",
        "LatestValidated",
        field="spec.version",
        message="version must be set with versionPolicy Pin and only then",
    ),
    cel_rule(
        "shadow-with-replicas-provider",
        SHADOW,
        "spec.traffic.provider",
        "replicas",
        field="spec.traffic.provider",
        message="the shadow strategy mirrors traffic, which traffic provider replicas cannot do",
    ),
    cel_rule(
        "blue-green-with-replicas-provider",
        BLUE_GREEN,
        "spec.traffic.provider",
        "replicas",
        field="spec.traffic.provider",
        message="the blueGreen strategy keeps the preview out of live traffic, which traffic provider replicas",
    ),
    cel_rule(
        "shadow-with-gateway-api-provider",
        SHADOW,
        "spec.traffic",
        {"provider": "gatewayAPI", "gatewayAPI": {"httpRoute": "iris"}},
        field="spec.traffic.provider",
        message="traffic provider gatewayAPI mirrors but cannot compare the mirrored answers",
    ),
    cel_rule(
        "gateway-api-provider-without-settings",
        BLUE_GREEN,
        "spec.traffic.provider",
        "gatewayAPI",
        field="spec.traffic.gatewayAPI",
        message="gatewayAPI settings are required with provider gatewayAPI",
    ),
    cel_rule(
        "gateway-api-without-route-or-parents",
        BLUE_GREEN,
        "spec.traffic",
        {"provider": "gatewayAPI", "gatewayAPI": {"parentRefs": []}},
        field="spec.traffic.gatewayAPI",
        message="name an existing httpRoute, or give parentRefs",
    ),
    cel_rule(
        "autoscaling-min-over-max",
        CANARY,
        "spec.autoscaling",
        {"minReplicas": 5, "maxReplicas": 2, "targetCPUUtilizationPercentage": 70},
        field="spec.autoscaling.minReplicas",
        message="minReplicas must not be greater than maxReplicas",
    ),
    cel_rule(
        "prometheus-metric-without-query",
        CANARY,
        f"{METRICS}[0].query",
        DELETE,
        field=f"{METRICS}[0].query",
        message="query is required with provider prometheus",
    ),
    cel_rule(
        "web-metric-without-web",
        SHADOW,
        f"{METRICS}[0]",
        {"name": "business-kpi", "provider": "web", "successCondition": "result >= 0.12"},
        field=f"{METRICS}[0].web",
        message="web is required with provider web",
    ),
    cel_rule(
        "metric-without-any-condition",
        CANARY,
        f"{METRICS}[1].successCondition",
        DELETE,
        field=f"{METRICS}[1]",
        message="set successCondition, failureCondition or both",
    ),
    cel_rule(
        "duplicate-metric-names",
        CANARY,
        f"{METRICS}[1].name",
        "error-rate",
        field=METRICS,
        message="metric names must be unique",
    ),
    cel_rule(
        "schedule-trigger-without-schedule",
        CANARY,
        "spec.monitoring.retraining.triggers[1].schedule",
        DELETE,
        field="spec.monitoring.retraining.triggers[1].schedule",
        message="schedule is required for a Schedule trigger",
    ),
    cel_rule(
        "retraining-template-sklearn-on-three-workers",
        CANARY,
        "spec.monitoring.retraining.template.workers",
        3,
        field="spec.monitoring.retraining.template.workers",
        message="the sklearn trainer runs on one worker",
    ),
    # only pydantic can tell
    pydantic_only(
        "success-condition-not-cel",
        CANARY,
        f"{METRICS}[0].successCondition",
        "result <= ",
        "is not a valid CEL expression",
    ),
    # rules added after review: K8s-strict scalars, the estimator allowlist, cron, tolerations, metric references
    openapi("workers-is-a-numeric-string", GPU, "spec.workers", "4"),
    openapi("suspend-is-a-word", TJ, "spec.suspend", "yes"),
    openapi("replicas-is-a-float", CANARY, "spec.replicas", 2.5),
    openapi("negative-memory-quantity", TJ, "spec.resources.memory", "-1Gi"),
    openapi("negative-cpu-integer", TJ, "spec.resources.cpu", -1),
    openapi("estimator-outside-the-allowlist", TJ, "spec.sklearn.estimator", "os.system"),
    openapi("schedule-is-not-cron", CANARY, "spec.monitoring.retraining.triggers[1].schedule", "every sunday"),
    cel_rule(
        "toleration-equal-without-key",
        GPU,
        "spec.tolerations[1]",
        {"operator": "Equal", "value": "training"},
        field="spec.tolerations[1].key",
        message="key is required unless operator is Exists",
    ),
    cel_rule(
        "pre-promotion-names-undefined-metric",
        BLUE_GREEN,
        "spec.strategy.blueGreen.prePromotionAnalysis.metrics",
        ["no-such-metric"],
        field="spec.strategy.blueGreen.prePromotionAnalysis",
        message="every metric prePromotionAnalysis names must be defined in spec.analysis.metrics",
    ),
    pydantic_only(
        "failure-condition-not-cel",
        CANARY,
        f"{METRICS}[0].failureCondition",
        "result >>> 0.05",
        "is not a valid CEL expression",
    ),
]


def _layer(layer: str) -> list[Any]:
    return [pytest.param(case, id=case.id) for case in INVALID if case.layer == layer]


def _refused_by_pydantic(case: Invalid) -> None:
    manifest = case.manifest()
    with pytest.raises(pydantic.ValidationError) as raised:
        crd_schemas.model_for(manifest).model_validate(manifest)
    assert case.pydantic_says in str(raised.value)


def _naming(errors: list[str], field: str, message: str = "") -> list[str]:
    return [error for error in errors if field in error and message in error]


def test_invalid_table_is_large_and_ids_are_unique() -> None:
    ids = [case.id for case in INVALID]
    assert len(ids) >= 35
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", _layer("openapi"))
def test_openapi_violation_is_refused_by_pydantic_and_the_crd_schema(case: Invalid) -> None:
    _refused_by_pydantic(case)
    manifest = case.manifest()
    structural = crd_schemas.structural_errors(manifest)
    assert _naming(structural, case.field), structural
    apiserver = [str(error) for error in crd_schemas.apiserver_errors(manifest)]
    assert _naming(apiserver, case.field), apiserver


@pytest.mark.parametrize("case", _layer("unknown-field"))
def test_unknown_field_is_refused_by_pydantic_and_strict_field_validation(case: Invalid) -> None:
    _refused_by_pydantic(case)
    manifest = case.manifest()
    structural = crd_schemas.structural_errors(manifest)
    assert _naming(structural, case.field, "field not declared in schema"), structural
    apiserver = [str(error) for error in crd_schemas.apiserver_errors(manifest)]
    assert not apiserver or _naming(apiserver, case.field), apiserver


@pytest.mark.parametrize("case", _layer("cel"))
def test_cel_rule_violation_is_refused_by_pydantic_and_the_apiserver(case: Invalid) -> None:
    _refused_by_pydantic(case)
    manifest = case.manifest()
    assert crd_schemas.structural_errors(manifest) == [], "the mutation should break only a CEL rule"
    apiserver = [str(error) for error in crd_schemas.apiserver_errors(manifest)]
    assert _naming(apiserver, f"{case.field}: ", case.message), apiserver


@pytest.mark.parametrize("case", _layer("pydantic-only"))
def test_pydantic_only_violation_is_refused_by_pydantic_but_passes_the_crd(case: Invalid) -> None:
    _refused_by_pydantic(case)
    manifest = case.manifest()
    assert crd_schemas.structural_errors(manifest) == []
    assert [str(error) for error in crd_schemas.apiserver_errors(manifest)] == []


def test_cel_errors_are_worded_like_kube_apiserver() -> None:
    manifest = crd_schemas.edited(crd_schemas.example(GPU), "spec.workers", 5)
    errors = [str(error) for error in crd_schemas.apiserver_errors(manifest)]
    assert [
        error
        for error in errors
        if error.startswith("spec.workers: Invalid value: ")
        and error.endswith(": workers must be between elastic.minWorkers and elastic.maxWorkers")
    ], errors


# Transition rules: a ModelVersion's identity never changes


REGISTERED = crd_schemas.example(MV)


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        pytest.param("spec.artifact.sha256", "0" * 64, "spec.artifact", id="artifact-digest"),
        pytest.param("spec.artifact.uri", "pvc://models/iris/1.2.0/model-v2.skops", "spec.artifact", id="artifact-uri"),
        pytest.param("spec.version", "1.2.1", "spec.version", id="version"),
        pytest.param("spec.modelName", "iris-v2", "spec.modelName", id="model-name"),
    ],
)
def test_changing_a_model_versions_identity_is_refused(path: str, value: Any, field: str) -> None:
    updated = crd_schemas.edited(REGISTERED, path, value)
    assert crd_schemas.apiserver_errors(updated) == [], "the new object is valid on its own"
    errors = [str(error) for error in crd_schemas.apiserver_errors(updated, old=REGISTERED)]
    assert _naming(errors, field, "immutable"), errors


def test_changing_only_the_stage_of_a_model_version_is_allowed() -> None:
    updated = crd_schemas.edited(REGISTERED, "spec.stage", "Production")
    assert crd_schemas.apiserver_errors(updated, old=REGISTERED) == []


def test_the_status_the_registry_writes_is_accepted_by_the_crd_schema() -> None:
    history = [
        {"action": "Approved", "user": f"user-{n}", "time": "2024-06-11T10:00:00Z"}
        for n in range(modelversion.HISTORY_LIMIT)
    ]
    status = modelversion.ModelVersionStatus.model_validate(
        {
            "phase": "Rejected",
            "duplicateOf": "iris-1.2.0-first",
            "validatedInputs": "89fc2d935a3c0a92",
            "stage": "Staging",
            "stageSince": "2024-06-11T10:00:00.123456Z",
            "gateResults": [{"metric": "accuracy", "expected": ">= 0.9", "actual": 0.8, "passed": False}],
            "history": history,
        }
    )
    with_status = {**REGISTERED, "status": status.to_wire()}
    assert crd_schemas.structural_errors(with_status) == []
    too_long = {**REGISTERED, "status": {**status.to_wire(), "history": [*history, history[0]]}}
    assert _naming(crd_schemas.structural_errors(too_long), "status.history")


def test_a_stage_request_names_the_field_it_gets_wrong() -> None:
    with pytest.raises(pydantic.ValidationError, match="stage"):
        modelversion.StageRequest.model_validate({"stage": "Live", "user": "alice", "time": "2024-06-11T10:00:00Z"})
    with pytest.raises(pydantic.ValidationError, match="user"):
        modelversion.StageRequest.model_validate({"stage": "Staging", "user": "", "time": "2024-06-11T10:00:00Z"})


def test_transition_rules_are_not_run_on_create() -> None:
    renamed = crd_schemas.edited(REGISTERED, "spec.version", "9.9.9")
    assert crd_schemas.apiserver_errors(renamed) == []


# The CRDs on disk


CRD_FILES = sorted(crd_schemas.CRDS.glob("*.yaml"))


def test_crds_on_disk_are_exactly_what_the_models_generate() -> None:
    generated = crd.rendered_files()
    on_disk = {path.name: path.read_text() for path in CRD_FILES}
    assert sorted(on_disk) == sorted(generated)
    for name, text in generated.items():
        assert on_disk[name] == text, f"crds/{name} differs from kiln.api; run `make crds`"


@pytest.mark.parametrize(
    ("kind", "short_name", "columns"),
    [
        pytest.param(
            "TrainingJob", "tj", ["Phase", "Workers", "Ready", "Restarts", "Progress", "ETA", "Model", "Age"], id="tj"
        ),
        pytest.param("ModelVersion", "mv", ["Model", "Version", "Phase", "Stage", "Digest", "Age"], id="mv"),
        pytest.param(
            "ModelDeployment",
            "md",
            ["Model", "Stable", "Candidate", "Weight", "Step", "Phase", "Age"],
            id="md",
        ),
    ],
)
def test_crd_serves_kubectl_conveniences(kind: str, short_name: str, columns: list[str]) -> None:
    definition = crd_schemas.crd(kind)
    names = definition["spec"]["names"]
    assert names["kind"] == kind
    assert names["shortNames"] == [short_name]
    assert names["categories"] == ["kiln"]
    assert definition["spec"]["scope"] == "Namespaced"
    (version,) = definition["spec"]["versions"]
    assert version["name"] == api.VERSION
    assert version["served"]
    assert version["storage"]
    assert version["subresources"] == {"status": {}}
    assert [column["name"] for column in version["additionalPrinterColumns"]] == columns
    by_name = {column["name"]: column for column in version["additionalPrinterColumns"]}
    assert by_name["Phase"]["jsonPath"] == ".status.phase"
    assert by_name["Age"] == {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


@pytest.mark.parametrize("kind", [kind.kind for kind in resources.KINDS])
def test_crd_schema_is_a_valid_draft4_schema_that_requires_a_spec(kind: str) -> None:
    errors = crd_schemas.structural_errors({"apiVersion": api.API_VERSION, "kind": kind})
    assert errors == ["spec: Required value"]


@pytest.mark.parametrize("kind", [kind.kind for kind in resources.KINDS])
def test_every_cel_rule_in_the_crd_compiles(kind: str) -> None:
    rules = _rules(crd_schemas.open_api_schema(kind))
    assert rules, f"{kind} carries no x-kubernetes-validations"
    for rule in rules:
        cel.compile(rule["rule"])
        assert rule["message"]


def _rules(node: Any) -> list[dict[str, Any]]:
    """Every x-kubernetes-validations entry anywhere in a schema."""
    if isinstance(node, list):
        return [rule for item in node for rule in _rules(item)]
    if not isinstance(node, dict):
        return []
    own = list(node.get("x-kubernetes-validations", []))
    return own + [rule for key, value in node.items() if key != "x-kubernetes-validations" for rule in _rules(value)]


# The kiln command


def test_version_prints_the_package_and_api_versions() -> None:
    result = CliRunner().invoke(cli.main, ["version"])
    assert result.exit_code == 0, result.output
    assert result.output == f"kiln {kiln.__version__} (API {api.API_VERSION})\n"


def test_crds_check_passes_against_the_committed_crds() -> None:
    result = CliRunner().invoke(cli.main, ["crds", "--check", "--output-dir", str(crd_schemas.CRDS)])
    assert result.exit_code == 0, result.output
    assert "3 CRDs match kiln.api" in result.output


def test_crds_check_fails_on_a_tampered_copy(tmp_path: pathlib.Path) -> None:
    for path in CRD_FILES:
        (tmp_path / path.name).write_text(path.read_text())
    tampered = tmp_path / "kiln.dev_modelversions.yaml"
    tampered.write_text(tampered.read_text().replace("- mv\n", "- modelv\n"))
    result = CliRunner().invoke(cli.main, ["crds", "--check", "--output-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "kiln.dev_modelversions.yaml" in result.stderr
    assert "kiln.dev_trainingjobs.yaml" not in result.stderr
    assert tampered.read_text() != crd.rendered_files()[tampered.name], "--check must write nothing"


def test_crds_check_fails_when_a_file_is_missing(tmp_path: pathlib.Path) -> None:
    result = CliRunner().invoke(cli.main, ["crds", "--check", "--output-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert list(tmp_path.iterdir()) == []


def test_crds_writes_one_file_per_kind(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "generated"
    result = CliRunner().invoke(cli.main, ["crds", "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in out.iterdir()) == [
        "kiln.dev_modeldeployments.yaml",
        "kiln.dev_modelversions.yaml",
        "kiln.dev_trainingjobs.yaml",
    ]
    for path in out.iterdir():
        assert path.read_text() == (crd_schemas.CRDS / path.name).read_text()


def test_crds_stdout_is_one_yaml_stream_of_three_crds() -> None:
    result = CliRunner().invoke(cli.main, ["crds", "--stdout"])
    assert result.exit_code == 0, result.output
    documents = list(yaml.safe_load_all(result.output))
    assert [doc["metadata"]["name"] for doc in documents] == [
        "trainingjobs.kiln.dev",
        "modelversions.kiln.dev",
        "modeldeployments.kiln.dev",
    ]


def test_python_dash_m_kiln_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kiln", "version"], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"kiln {kiln.__version__} ")
