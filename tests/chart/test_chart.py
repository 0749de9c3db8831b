"""The chart, through the real Helm engine: lint, rendering with many value sets, the Kubernetes schemas,
the restricted Pod Security profile, values.schema.json, least-privilege RBAC and the generated files."""

from __future__ import annotations

import pathlib
import re
import subprocess
from collections.abc import Mapping
from typing import Any

import chartgen
import helm_python as helm
import kubernetes_validate
import pytest
import yaml

import kiln
from kiln.api import base, crd, resources
from kiln.kube import client

KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
# Kinds whose schemas are CRDs kubernetes-validate does not ship: checked by their own CRDs or not at all.
NOT_IN_KUBERNETES = {"ClusterKopfPeering", "KopfPeering", "ServiceMonitor", "PrometheusRule"}
# Kinds newer than the oldest version checked: admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy is GA
# in 1.30 (admissionPolicy.enabled=false leaves it out on older clusters).
SINCE = {"ValidatingAdmissionPolicy": (1, 30), "ValidatingAdmissionPolicyBinding": (1, 30)}


def _versions(kind: str, versions: tuple[str, ...] = KUBERNETES_VERSIONS) -> list[str]:
    since = SINCE.get(kind, (0, 0))
    return [v for v in versions if tuple(int(part) for part in v.split(".")[:2]) >= since]


VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "namespaced": {"watchNamespaces": ["a", "b"]},
    "own-namespace": {"namespaceScoped": True},
    "monitoring": {"monitoring": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}},
    "dashboard": {"monitoring": {"dashboard": {"enabled": True, "namespace": "grafana", "labels": {"team": "ml"}}}},
    "one-replica": {"replicas": 1},
    "custom-image": {"image": {"repository": "registry.example/kiln", "tag": "1.2.3", "pullPolicy": "Always"}},
    "prometheus": {"prometheusUrl": "http://prometheus.monitoring:9090"},
    "debug": {"logLevel": "debug", "servingImage": "example/serve:1", "trainerImage": "example/train:1"},
    "existing-account": {"serviceAccount": {"create": False, "name": "platform-kiln"}, "rbac": {"create": False}},
    "scheduling": {
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
        "priorityClassName": "system-cluster-critical",
        "podLabels": {"team": "ml"},
        "podAnnotations": {"example.com/owner": "ml"},
        "extraEnv": [{"name": "KILN_TRAINING_BACKOFF_SECONDS", "value": "30"}],
        "imagePullSecrets": [{"name": "registry"}],
    },
    "no-admission-policy": {"admissionPolicy": {"enabled": False}},
    "object-store": {"objectStore": {"endpointUrl": "https://minio.storage:9000", "credentialsSecret": "kiln-s3"}},
}


def _render(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    return chartgen.render(values)


def _of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def _deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = _of_kind(objects, "Deployment")
    return deployment


def _args(objects: list[dict[str, Any]]) -> list[str]:
    return list(_deployment(objects)["spec"]["template"]["spec"]["containers"][0]["args"])


def _env(objects: list[dict[str, Any]]) -> dict[str, str]:
    container = _deployment(objects)["spec"]["template"]["spec"]["containers"][0]
    return {var["name"]: var.get("value", "") for var in container["env"]}


# -- lint and the Kubernetes schemas ------------------------------------------------------------


def test_lint_is_clean() -> None:
    report = helm.lint(chartgen.CHART, strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert (report["errors"], problems) == ([], [])


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_renders_valid_kubernetes_objects(name: str) -> None:
    objects = _render(VALUE_SETS[name])
    assert _of_kind(objects, "Deployment")
    for obj in objects:
        if obj["kind"] in NOT_IN_KUBERNETES:
            continue
        for version in _versions(obj["kind"]):
            kubernetes_validate.validate(obj, version, strict=True)


def test_crds_in_the_chart_are_valid_and_generated() -> None:
    chart_crds = chartgen.crds()
    for obj in chart_crds:
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)
    for name, text in crd.rendered_files().items():
        assert (chartgen.CHART / "crds" / name).read_text() == text, f"charts/kiln/crds/{name}: run `make crds`"


# -- Pod Security "restricted" ------------------------------------------------------------------


def _assert_restricted(pod: Mapping[str, Any]) -> None:
    """The restricted profile's rules, field by field (as the API server's PodSecurity admission checks)."""
    pod_context = pod.get("securityContext", {})
    assert not any(pod.get(key) for key in ("hostNetwork", "hostPID", "hostIPC"))
    for volume in pod.get("volumes", []):
        assert set(volume) - {"name"} <= {"emptyDir", "configMap", "secret", "projected", "persistentVolumeClaim"}
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        context = container.get("securityContext", {})
        assert context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is True
        assert context.get("runAsUser", pod_context.get("runAsUser", 1)) != 0
        assert context.get("allowPrivilegeEscalation") is False
        assert context.get("privileged", False) is False
        assert context.get("readOnlyRootFilesystem") is True
        assert context["capabilities"]["drop"] == ["ALL"]
        assert not context["capabilities"].get("add")
        seccomp = context.get("seccompProfile", pod_context.get("seccompProfile", {}))
        assert seccomp.get("type") in {"RuntimeDefault", "Localhost"}
        assert not any(port.get("hostPort") for port in container.get("ports", []))


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_the_operator_pod_is_restricted(name: str) -> None:
    deployment = _deployment(_render(VALUE_SETS[name]))
    _assert_restricted(deployment["spec"]["template"]["spec"])
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"]


# -- what the values do -------------------------------------------------------------------------


def test_defaults_run_two_peering_replicas_cluster_wide() -> None:
    objects = _render({})
    assert _deployment(objects)["spec"]["replicas"] == 2
    assert _args(objects) == ["run", "--liveness", "http://0.0.0.0:8080/healthz", "--metrics-port", "9090", "--peering"]
    assert [o["metadata"]["name"] for o in _of_kind(objects, "ClusterKopfPeering")] == ["default"]
    (budget,) = _of_kind(objects, "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1
    assert _of_kind(objects, "ClusterRoleBinding")
    assert not _of_kind(objects, "Role")
    assert not _of_kind(objects, "ServiceMonitor")
    assert not _of_kind(objects, "PrometheusRule")
    assert not _of_kind(objects, "ConfigMap")
    image = f"ghcr.io/kiln-dev/kiln:{kiln.__version__}"
    assert _env(objects)["KILN_SERVING_IMAGE"] == _env(objects)["KILN_TRAINER_IMAGE"] == image


def test_the_admission_policy_is_on_by_default_and_exempts_the_releases_account() -> None:
    policies = {
        p["metadata"]["name"]: p
        for p in _of_kind(_render({"serviceAccount": {"name": "ops"}}), "ValidatingAdmissionPolicy")
    }
    bindings = [binding["spec"] for binding in _of_kind(_render({}), "ValidatingAdmissionPolicyBinding")]
    assert sorted(policies) == ["kiln-identities", "kiln-version-names"]
    assert bindings == [
        {"policyName": "kiln-identities", "validationActions": ["Deny"]},
        {"policyName": "kiln-version-names", "validationActions": ["Deny"]},
    ]
    assert (
        "'system:serviceaccount:kiln-system:ops'" in policies["kiln-identities"]["spec"]["validations"][1]["expression"]
    )
    off = _render({"admissionPolicy": {"enabled": False}})
    assert not _of_kind(off, "ValidatingAdmissionPolicy")
    assert not _of_kind(off, "ValidatingAdmissionPolicyBinding")


def test_the_object_store_settings_reach_the_operator_for_its_s3_artifact_checks() -> None:
    values = {"objectStore": {"endpointUrl": "http://minio.storage:9000", "region": "eu-west-1",
                              "credentialsSecret": "kiln-s3"}}  # fmt: skip
    container = _deployment(_render(values))["spec"]["template"]["spec"]["containers"][0]
    env = _env(_render(values))

    assert (env["AWS_ENDPOINT_URL"], env["AWS_REGION"]) == ("http://minio.storage:9000", "eu-west-1")
    assert container["envFrom"] == [{"secretRef": {"name": "kiln-s3"}}]
    default = _deployment(_render({}))["spec"]["template"]["spec"]["containers"][0]
    assert "envFrom" not in default
    assert not {"AWS_ENDPOINT_URL", "AWS_REGION"} & set(_env(_render({})))


def test_the_metrics_port_reaches_the_operator_and_its_container_port() -> None:
    objects = _render({"metrics": {"port": 9100}})
    args = _args(objects)
    assert args[args.index("--metrics-port") + 1] == "9100"
    ports = _deployment(objects)["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert {"name": "metrics", "containerPort": 9100, "protocol": "TCP"} in ports


def test_one_replica_runs_standalone_without_a_budget() -> None:
    objects = _render({"replicas": 1})
    assert "--peering" not in _args(objects)
    assert not _of_kind(objects, "PodDisruptionBudget")
    assert not _of_kind(objects, "ClusterKopfPeering")


def test_watched_namespaces_get_roles_peerings_and_flags() -> None:
    objects = _render({"watchNamespaces": ["a", "b"]})
    assert _args(objects)[-4:] == ["--namespace", "a", "--namespace", "b"]
    for kind in ("Role", "RoleBinding", "KopfPeering"):
        assert sorted(o["metadata"]["namespace"] for o in _of_kind(objects, kind)) == ["a", "b"], kind
    (cluster_role,) = _of_kind(objects, "ClusterRole")
    cluster_rules = {(g, r) for rule in cluster_role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert ("apps", "deployments") not in cluster_rules  # nothing it writes is cluster-wide
    for rule in cluster_role["rules"]:
        assert set(rule["verbs"]) <= {"list", "watch", "create"}


def test_namespace_scoped_watches_the_release_namespace() -> None:
    objects = _render({"namespaceScoped": True})
    assert _args(objects)[-2:] == ["--namespace", chartgen.NAMESPACE]
    assert [o["metadata"]["namespace"] for o in _of_kind(objects, "Role")] == [chartgen.NAMESPACE]


def test_values_reach_the_operator() -> None:
    objects = _render({**VALUE_SETS["custom-image"], **VALUE_SETS["prometheus"], **VALUE_SETS["debug"]})
    container = _deployment(objects)["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/kiln:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    args = _args(objects)
    assert args[args.index("--prometheus-url") + 1] == "http://prometheus.monitoring:9090"
    assert "--verbose" in args
    assert _env(objects)["KILN_SERVING_IMAGE"] == "example/serve:1"
    assert _env(objects)["KILN_TRAINER_IMAGE"] == "example/train:1"


def test_monitoring_renders_a_service_monitor_and_rules() -> None:
    objects = _render(VALUE_SETS["monitoring"])
    (monitor,) = _of_kind(objects, "ServiceMonitor")
    (service,) = _of_kind(objects, "Service")
    assert monitor["spec"]["endpoints"][0]["port"] in {port["name"] for port in service["spec"]["ports"]}
    (rule,) = _of_kind(objects, "PrometheusRule")
    alerts = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    assert set(alerts) == {
        "KilnOperatorDown",
        "KilnOperatorReplicasUnavailable",
        "KilnRolloutRolledBack",
        "KilnDriftDetected",
        "KilnModelErrorRateHigh",
        "KilnModelLatencyHigh",
        "KilnLiveAccuracyLow",
    }
    assert (
        alerts["KilnDriftDetected"]["annotations"]["summary"]
        == "Drift on {{ $labels.namespace }}/{{ $labels.deployment }}"
    )
    strict = _render({"monitoring": {"prometheusRule": {"enabled": True, "errorRate": 0.01, "liveAccuracy": 0.9}}})
    (tuned,) = _of_kind(strict, "PrometheusRule")
    exprs = {r["alert"]: r["expr"] for group in tuned["spec"]["groups"] for r in group["rules"]}
    assert exprs["KilnModelErrorRateHigh"].rstrip().endswith("> 0.01")
    assert "< 0.9)" in exprs["KilnLiveAccuracyLow"]


def test_prometheus_itself_accepts_the_alert_rules(tmp_path: pathlib.Path) -> None:
    """promtool (Debian's prometheus package, which `make tools` installs) parses every expression."""
    (rule,) = _of_kind(_render(VALUE_SETS["monitoring"]), "PrometheusRule")
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))

    checked = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True, check=False)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 7 rules found" in checked.stdout


def test_notes_say_what_to_do_next() -> None:
    notes = chartgen.render_files({})["kiln/templates/NOTES.txt"]
    assert "kubectl get kiln" in notes
    assert "kubectl apply" in notes
    assert "logs deploy/kiln" in notes


def test_chart_version_is_kilns() -> None:
    chart = yaml.safe_load((chartgen.CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == kiln.__version__


# -- values.schema.json -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"replicas": -1}, "replicas"),
        ({"logLevel": "loud"}, "logLevel"),
        ({"bogus": True}, "bogus"),
        ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "watchNamespaces"),
        ({"monitoring": {"serviceMonitor": {"enabled": "yes"}}}, "enabled"),
        ({"objectStore": {"endpointUrl": "minio:9000"}}, "endpointUrl"),
    ],
)
def test_bad_values_are_refused_naming_the_value(values: dict[str, Any], named: str) -> None:
    with helm.Chart.load(chartgen.CHART) as chart, pytest.raises(helm.HelmValuesError, match=re.escape(named)):
        chart.validate_schema(values)
    with pytest.raises(helm.HelmError, match=re.escape(named)):
        chartgen.render(values)


def test_every_value_has_a_comment() -> None:
    text = (chartgen.CHART / "values.yaml").read_text()
    silent = [key for key, comment, leaf in chartgen.documented_values(text) if leaf and not comment]
    assert silent == []


def test_every_value_is_in_the_schema() -> None:
    with helm.Chart.load(chartgen.CHART) as chart:
        schema = chart.schema
        chart.validate_schema(chart.values)
    assert schema is not None
    assert set(yaml.safe_load((chartgen.CHART / "values.yaml").read_text())) <= set(schema["properties"])


# -- RBAC covers what the operator calls --------------------------------------------------------


def _granted(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def test_rbac_covers_every_resource_the_client_knows_and_the_kiln_kinds() -> None:
    (cluster_role,) = _of_kind(_render({}), "ClusterRole")
    granted = _granted(cluster_role["rules"])
    for resource in client.KNOWN:
        assert granted.get((resource.group, resource.plural)), f"no rule for {resource.plural}"
    for kind in (resources.TRAINING_JOB, resources.MODEL_VERSION, resources.MODEL_DEPLOYMENT):
        assert {"get", "list", "watch"} <= granted[(base.GROUP, kind.plural)], kind.plural
        assert "patch" in granted[(base.GROUP, f"{kind.plural}/status")]
    # kopf patches its annotations on the kinds it has change handlers for; TrainingJobs it only watches.
    for kind in (resources.MODEL_VERSION, resources.MODEL_DEPLOYMENT):
        assert "patch" in granted[(base.GROUP, kind.plural)], kind.plural
    assert "get" in granted[("", "pods/log")]
    assert "create" in granted[("", "events")]
    assert "list" in granted[("", "nodes")]
    assert {"list", "watch"} <= granted[("apiextensions.k8s.io", "customresourcedefinitions")]
    assert {"get", "patch"} <= granted[("kopf.dev", "clusterkopfpeerings")]


def test_rbac_holds_what_the_operator_grants() -> None:
    """Kubernetes lets the operator create a Role only with rules it holds itself (it has no `escalate`)."""
    from kiln.api import modeldeployment
    from kiln.delivery import serving
    from kiln.training import workers

    granted = _granted(_of_kind(_render({}), "ClusterRole")[0]["rules"])
    assert not any({"escalate", "bind", "*"} & verbs for verbs in granted.values())
    roles = [obj for obj in workers.trainer_account("ns") if obj["kind"] == "Role"]
    example = chartgen.ROOT / "examples" / "canary-rollout" / "modeldeployment.yaml"
    (deployment,) = (d for d in yaml.safe_load_all(example.read_text()) if d["kind"] == "ModelDeployment")
    spec = modeldeployment.ModelDeploymentSpec.model_validate(deployment["spec"])
    router = serving.router_objects(serving.Owner("model", "ns", "uid"), spec, serving.Settings())
    roles += [obj for obj in router if obj["kind"] == "Role"]
    for role in roles:
        for (group, resource), verbs in _granted(role["rules"]).items():
            assert verbs <= granted.get((group, resource), set()), f"{role['metadata']['name']}: {resource}"


# -- the generated files ------------------------------------------------------------------------


def test_install_yaml_is_a_fresh_render() -> None:
    assert chartgen.INSTALL.read_text() == chartgen.install_yaml(), "manifests/install.yaml: run `make manifests`"


def test_install_yaml_is_valid() -> None:
    for obj in yaml.safe_load_all(chartgen.INSTALL.read_text()):
        if obj["kind"] not in NOT_IN_KUBERNETES:
            for version in _versions(obj["kind"], (KUBERNETES_VERSIONS[0], "1.30.0"))[:1]:
                kubernetes_validate.validate(obj, version, strict=True)


def test_chart_readme_is_up_to_date() -> None:
    assert chartgen.README.read_text() == chartgen.readme(), "charts/kiln/README.md: run `make chart-docs`"
