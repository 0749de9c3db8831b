"""The dev cluster as kubectl sees it: a platform engineer's first afternoon with Kiln.

Each test drives the machine's real kubectl against a fresh dev cluster (the
`devcluster` and `kubectl` fixtures), in the order someone trying Kiln would:

1. install the CRDs and wait until they are Established, apply every example,
   look at them with `kubectl get` (printer columns, the `kiln` category,
   `-o yaml`/`-o json` with the schema's defaults filled in), try a server-side
   dry run, and apply again;
2. send every broken manifest of the unit tests' table and get a clear refusal
   that names the field, with nothing left behind;
3. edit custom resources: merge and JSON patches, an immutable field, labels,
   annotations and selectors, a status written through the status subresource
   releasing `kubectl wait --for=condition=Ready`, delete and `--for=delete`;
4. work with built-in kinds beside them: ConfigMap, Deployment, Pod, logs;
5. put things in a namespace of their own and delete the namespace;
6. do the basics with the oldest and the newest kubectl this machine has;
7. use server-side apply.

Nothing sleeps except bounded polling (`eventually`), and every assertion is
about what the API server answered, not about what the test sent.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import importlib
import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any, TypeVar

import kubernetes
import pytest
import yaml
from conftest import Kubectl, available_kubectl_versions, kubectl_binary, make_kubectl
from polling import eventually

from kiln.devcluster import cluster

REPO = pathlib.Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
EXAMPLES = REPO / "examples"

GROUP, VERSION = "kiln.dev", "v1alpha1"
CRD_NAMES = ("trainingjobs.kiln.dev", "modelversions.kiln.dev", "modeldeployments.kiln.dev")

Object = dict[str, Any]
T = TypeVar("T")


def _example_objects() -> list[tuple[str, Object]]:
    """Every object under examples/, with the scenario folder it comes from."""
    found = []
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("apiVersion") == f"{GROUP}/{VERSION}":
                found.append((path.parent.name, doc))
    return found


EXAMPLE_OBJECTS = _example_objects()
EXAMPLE_NAMES = {(doc["kind"], doc["metadata"]["name"]) for _, doc in EXAMPLE_OBJECTS}


def _unit_manifest_tests() -> Any:
    """tests/unit/test_api_manifests.py, whose INVALID table this file replays through kubectl."""
    unit = str(REPO / "tests" / "unit")
    if unit not in sys.path:
        sys.path.insert(0, unit)  # it imports its sibling crd_schemas as a top-level module
    return importlib.import_module("test_api_manifests")


INVALID = _unit_manifest_tests().INVALID


# Helpers


def get_json(kubectl: Kubectl, *args: str) -> Object:
    result: Object = json.loads(kubectl("get", *args, "-o", "json").stdout)
    return result


def tables(output: str) -> list[list[dict[str, str]]]:
    """`kubectl get` output as one list of rows per block, each row keyed by column header.

    Cells are cut at the header's column offsets, so empty cells (an unset
    status.phase) come out as "" rather than shifting the row.
    """
    blocks = []
    for block in output.strip().split("\n\n"):
        header, *lines = block.splitlines()
        names = header.split()
        starts = [header.index(f" {name}") + 1 if i else 0 for i, name in enumerate(names)]
        ends = [*starts[1:], None]
        blocks.append(
            [
                {name: line[start:end].strip() for name, start, end in zip(names, starts, ends, strict=True)}
                for line in lines
            ]
        )
    return blocks


def headers(output: str) -> list[list[str]]:
    return [block.splitlines()[0].split() for block in output.strip().split("\n\n")]


def contains(actual: Any, expected: Any, where: str = "") -> list[str]:
    """Where actual differs from expected on the fields expected has (lists item by item)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: {actual!r} is not an object"]
        return [
            problem
            for key, value in expected.items()
            for problem in (
                contains(actual[key], value, f"{where}.{key}") if key in actual else [f"{where}.{key}: missing"]
            )
        ]
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{where}: {actual!r} != {expected!r}"]
        return [problem for i, item in enumerate(expected) for problem in contains(actual[i], item, f"{where}[{i}]")]
    return [] if actual == expected else [f"{where}: {actual!r} != {expected!r}"]


def versions_of(kubectl: Kubectl, resources: str = "tj,mv,md") -> dict[str, tuple[str, int]]:
    """resourceVersion and generation of every object of the given kinds, by kind/name."""
    return {
        f"{item['kind']}/{item['metadata']['name']}": (
            item["metadata"]["resourceVersion"],
            item["metadata"]["generation"],
        )
        for item in get_json(kubectl, resources)["items"]
    }


def audit_entries(devcluster: cluster.DevCluster) -> list[Object]:
    text = devcluster.audit_path.read_text() if devcluster.audit_path.exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@contextlib.contextmanager
def background_kubectl(devcluster: cluster.DevCluster, *args: str) -> Iterator[subprocess.Popen[str]]:
    """A kubectl that blocks (`kubectl wait`), to be collected with communicate(timeout=...);
    killed on leaving the block if it is still running."""
    env = {
        **os.environ,
        "KUBECONFIG": str(devcluster.kubeconfig_path),
        "KUBECACHEDIR": str(devcluster.state_dir / "kubectl-cache"),
    }
    process = subprocess.Popen(
        [kubectl_binary(), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def watch_started(devcluster: cluster.DevCluster, resource: str, name: str) -> bool:
    """Whether kubectl has opened a watch on one object (what `kubectl wait` blocks on)."""
    return any(
        entry["verb"] == "watch"
        and entry["resource"] == resource
        and f"metadata.name={name}" in entry["query"].get("fieldSelector", "")
        for entry in audit_entries(devcluster)
    )


def custom_objects(devcluster: cluster.DevCluster) -> Any:
    kubernetes.config.load_kube_config(config_file=str(devcluster.kubeconfig_path))
    return kubernetes.client.CustomObjectsApi()


def install_crds(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", str(CRDS))
    kubectl("wait", "--for=condition=Established", *(f"crd/{name}" for name in CRD_NAMES), "--timeout=30s")


@pytest.fixture
def crds(kubectl: Kubectl) -> Kubectl:
    """The dev cluster with Kiln's CRDs installed and Established; returns kubectl."""
    install_crds(kubectl)
    return kubectl


@pytest.fixture
def examples(crds: Kubectl) -> Kubectl:
    """The dev cluster with every example applied to the default namespace; returns kubectl."""
    crds("apply", "-f", str(EXAMPLES), "-R")
    return crds


# 1. Install the CRDs, apply the examples, look at them


def test_crds_are_established_and_serve_short_names_and_the_kiln_category(kubectl: Kubectl) -> None:
    applied = kubectl("apply", "-f", str(CRDS))
    for name in CRD_NAMES:
        assert f"customresourcedefinition.apiextensions.k8s.io/{name} created" in applied.stdout

    waited = kubectl("wait", "--for=condition=Established", *(f"crd/{n}" for n in CRD_NAMES), "--timeout=30s")
    assert waited.stdout.count("condition met") == 3, waited.stdout

    resources = tables(kubectl("api-resources", "--api-group=kiln.dev", "-o", "wide").stdout)[0]
    assert {(row["NAME"], row["SHORTNAMES"], row["KIND"], row["CATEGORIES"]) for row in resources} == {
        ("trainingjobs", "tj", "TrainingJob", "kiln"),
        ("modelversions", "mv", "ModelVersion", "kiln"),
        ("modeldeployments", "md", "ModelDeployment", "kiln"),
    }
    assert {row["APIVERSION"] for row in resources} == {f"{GROUP}/{VERSION}"}
    assert {row["NAMESPACED"] for row in resources} == {"true"}


def test_every_example_applies_and_prints_its_columns(crds: Kubectl) -> None:
    kubectl = crds
    applied = kubectl("apply", "-f", str(EXAMPLES), "-R")
    created = {line for line in applied.stdout.splitlines() if line.endswith(" created") and f".{GROUP}/" in line}
    assert created == {f"{kind.lower()}.{GROUP}/{name} created" for kind, name in EXAMPLE_NAMES}

    listed = kubectl("get", "tj,mv,md").stdout
    assert headers(listed) == [
        ["NAME", "PHASE", "WORKERS", "READY", "RESTARTS", "PROGRESS", "ETA", "MODEL", "AGE"],
        ["NAME", "MODEL", "VERSION", "PHASE", "STAGE", "AGE"],
        ["NAME", "MODEL", "STABLE", "CANDIDATE", "WEIGHT", "STEP", "PHASE", "AGE"],
    ]
    jobs, versions, deployments = tables(listed)
    # WORKERS reads spec.workers: iris-rf never sets it, so 1 is the schema default showing through
    assert {row["NAME"]: row["WORKERS"] for row in jobs} == {
        "trainingjob.kiln.dev/iris-rf": "1",
        "trainingjob.kiln.dev/resnet50-imagenet": "4",
        "trainingjob.kiln.dev/train-iris": "1",
        "trainingjob.kiln.dev/train-gpu": "1",
        "trainingjob.kiln.dev/train-distributed": "4",
        # examples/canary-rollout/versions trains the versions its ModelDeployment ships
        "trainingjob.kiln.dev/iris-2-0-0": "1",
        "trainingjob.kiln.dev/iris-2-1-0": "1",
        "trainingjob.kiln.dev/iris-2-2-0": "1",
        # and so do examples/blue-green/versions and examples/shadow/versions
        "trainingjob.kiln.dev/iris-3-0-0": "1",
        "trainingjob.kiln.dev/iris-3-1-0": "1",
        "trainingjob.kiln.dev/iris-3-2-0": "1",
        "trainingjob.kiln.dev/iris-4-0-0": "1",
        "trainingjob.kiln.dev/iris-4-1-0": "1",
        "trainingjob.kiln.dev/iris-4-2-0": "1",
        # and examples/kfp-pipeline's first version
        "trainingjob.kiln.dev/iris-5-0-0": "1",
    }
    assert [(row["NAME"], row["MODEL"], row["VERSION"]) for row in versions] == [
        ("modelversion.kiln.dev/iris-1.2.0", "iris", "1.2.0")
    ]
    assert {row["NAME"]: row["MODEL"] for row in deployments} == {
        "modeldeployment.kiln.dev/iris": "iris",
        "modeldeployment.kiln.dev/iris-blue-green": "iris",
        "modeldeployment.kiln.dev/iris-shadow": "iris",
        "modeldeployment.kiln.dev/iris-kfp": "iris",
    }
    # no operator runs here, so nothing has a status yet: the status columns are empty
    assert {row["PHASE"] for block in (jobs, versions, deployments) for row in block} == {""}

    # the Digest column has priority 1: only -o wide shows it
    (wide,) = tables(kubectl("get", "mv", "-o", "wide").stdout)
    assert wide[0]["DIGEST"] == "a107aa3ad6b91e269a37474bca0f94eb308e49902a6e7fb784cfe05a342984b7"

    by_category = kubectl("get", "kiln", "-o", "name").stdout.split()
    assert sorted(by_category) == sorted(f"{kind.lower()}.{GROUP}/{name}" for kind, name in EXAMPLE_NAMES)


def test_objects_round_trip_through_yaml_and_json_with_schema_defaults(examples: Kubectl) -> None:
    kubectl = examples
    for scenario, manifest in EXAMPLE_OBJECTS:
        kind, name = manifest["kind"].lower(), manifest["metadata"]["name"]
        as_json = get_json(kubectl, kind, name)
        as_yaml = yaml.safe_load(kubectl("get", kind, name, "-o", "yaml").stdout)
        assert as_json == as_yaml, scenario
        assert contains(as_json["spec"], manifest["spec"], "spec") == [], scenario
        assert as_json["metadata"]["labels"] == manifest["metadata"]["labels"]
        assert as_json["metadata"]["generation"] == 1
        assert "status" not in as_json, "nothing has written a status yet"

        # what `get -o json` prints is a valid object to PUT back, and putting it back changes nothing
        # (--raw, because plain `kubectl replace` rewrites the last-applied-configuration annotation)
        url = f"/apis/{GROUP}/{VERSION}/namespaces/default/{kind}s/{name}"
        replaced = json.loads(kubectl("replace", "--raw", url, "-f", "-", input=json.dumps(as_json)).stdout)
        replaced["metadata"].pop("managedFields")  # a raw answer carries them; `get` hides them
        assert replaced == as_json, scenario

    # the server filled in the schema's defaults (see `default:` in crds/)
    iris_rf = get_json(kubectl, "tj", "iris-rf")["spec"]
    assert iris_rf["workers"] == 1
    assert iris_rf["suspend"] is False
    assert iris_rf["output"]["requiredApprovals"] == 0
    assert iris_rf["output"]["gates"][0]["higherIsBetter"] is True
    assert "gangScheduling" not in iris_rf, "defaults fill fields of objects that are given, never the objects"

    gpu = get_json(kubectl, "tj", "resnet50-imagenet")["spec"]
    assert gpu["gangScheduling"] == {"scheduler": "builtin", "timeoutSeconds": 1800}
    assert gpu["suspend"] is False

    registered = get_json(kubectl, "mv", "iris-1.2.0")["spec"]
    assert [gate["higherIsBetter"] for gate in registered["gates"]] == [True, False]

    canary = get_json(kubectl, "md", "iris")["spec"]
    assert canary["paused"] is False
    assert canary["server"]["allowPickle"] is False
    assert canary["strategy"]["canary"]["steps"][0] == {"setWeight": 10}
    latency = canary["analysis"]["metrics"][1]
    assert (latency["initialDelay"], latency["consecutiveErrorLimit"], latency["inconclusiveLimit"]) == ("0s", 4, 0)

    blue_green = get_json(kubectl, "md", "iris-blue-green")["spec"]
    assert blue_green["progressDeadlineSeconds"] == 600
    assert blue_green["traffic"]["provider"] == "router"
    answered = blue_green["analysis"]["metrics"][0]
    assert (answered["failureLimit"], answered["consecutiveErrorLimit"]) == (1, 4), "given, and the default"

    shadow = get_json(kubectl, "md", "iris-shadow")["spec"]["strategy"]["shadow"]
    assert shadow["comparison"]["tolerance"] == 0.0001
    assert shadow["then"]["steps"][0] == {"setWeight": 50}


def test_server_side_dry_run_leaves_nothing_behind(devcluster: cluster.DevCluster, crds: Kubectl) -> None:
    kubectl = crds
    registry = str(EXAMPLES / "model-registry")

    dry = kubectl("apply", "--dry-run=server", "-f", registry)
    assert dry.stdout.strip() == "modelversion.kiln.dev/iris-1.2.0 created (server dry run)"
    would_be = json.loads(kubectl("apply", "--dry-run=server", "-f", registry, "-o", "json").stdout)
    assert would_be["metadata"]["uid"], "a dry run answers with the object as it would be stored"
    assert would_be["spec"]["gates"][0]["higherIsBetter"] is True, "defaults apply in a dry run too"

    missing = kubectl("get", "mv", "iris-1.2.0", check=False)
    assert missing.returncode == 1
    assert 'modelversions.kiln.dev "iris-1.2.0" not found' in missing.stderr
    assert kubectl("get", "kiln", "-A", "-o", "name").stdout == ""
    creates = [e for e in audit_entries(devcluster) if e["verb"] == "create" and e["resource"] == "modelversions"]
    assert len(creates) == 2
    assert all(entry["query"].get("dryRun") == "All" for entry in creates)

    # a dry run of a change to an existing object does not change it either
    kubectl("apply", "-f", registry)
    before = get_json(kubectl, "mv", "iris-1.2.0")
    changed = yaml.safe_load((EXAMPLES / "model-registry" / "modelversion.yaml").read_text())
    changed["spec"]["stage"] = "Production"
    dry = kubectl("apply", "--dry-run=server", "-f", "-", "-o", "json", input=json.dumps(changed))
    assert json.loads(dry.stdout)["spec"]["stage"] == "Production"
    assert get_json(kubectl, "mv", "iris-1.2.0") == before


def test_applying_the_examples_again_changes_nothing_on_the_server(examples: Kubectl) -> None:
    kubectl = examples
    before = versions_of(kubectl)
    assert len(before) == len(EXAMPLE_NAMES)
    kubectl("apply", "-f", str(EXAMPLES), "-R")
    # kubectl reports these as "configured", as it would against kube-apiserver: custom resources
    # are patched with JSON merge patch, which replaces lists whole, and list items carrying a
    # schema default (gates[].higherIsBetter, metrics[].consecutiveErrorLimit) differ from the file.
    # Once defaulted, though, the object is the one already stored: no new generation, no write.
    assert versions_of(kubectl) == before


def test_applying_the_same_file_twice_says_unchanged(crds: Kubectl, tmp_path: pathlib.Path) -> None:
    kubectl = crds
    # the example as the server would store it, defaults written out, so nothing is left for apply to patch
    stored = json.loads(
        kubectl("apply", "--dry-run=server", "-f", str(EXAMPLES / "iris-training"), "-o", "json").stdout
    )
    manifest = {
        "apiVersion": stored["apiVersion"],
        "kind": stored["kind"],
        "metadata": {"name": stored["metadata"]["name"], "labels": stored["metadata"]["labels"]},
        "spec": stored["spec"],
    }
    path = tmp_path / "trainingjob.yaml"
    path.write_text(yaml.safe_dump(manifest))

    assert kubectl("apply", "-f", str(path)).stdout.strip() == "trainingjob.kiln.dev/iris-rf created"
    before = versions_of(kubectl, "tj")
    assert kubectl("apply", "-f", str(path)).stdout.strip() == "trainingjob.kiln.dev/iris-rf unchanged"
    assert versions_of(kubectl, "tj") == before


# 2. Broken manifests are refused with the field named, and leave nothing behind


@pytest.fixture(scope="module")
def shared_kubectl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kubectl]:
    """One dev cluster with the CRDs for the whole invalid table: nothing in it is ever stored."""
    with cluster.ThreadedDevCluster(tmp_path_factory.mktemp("invalid-table")) as running:
        kubectl = make_kubectl(running, kubectl_binary())
        install_crds(kubectl)
        yield kubectl


def _refused_without_trace(kubectl: Kubectl, manifest: Object) -> subprocess.CompletedProcess[str]:
    result = kubectl("apply", "-f", "-", input=json.dumps(manifest), check=False)
    assert result.returncode != 0, result.stdout
    assert result.stdout == ""
    kind, name = manifest["kind"].lower(), manifest["metadata"]["name"]
    after = kubectl("get", kind, name, check=False)
    assert f'"{name}" not found' in after.stderr, after.stdout
    assert kubectl("get", "kiln", "-A", "-o", "name").stdout == ""
    return result


@pytest.mark.parametrize(
    "case", [pytest.param(case, id=case.id) for case in INVALID if case.layer in ("openapi", "cel")]
)
def test_schema_and_cel_violations_are_refused_naming_the_field(shared_kubectl: Kubectl, case: Any) -> None:
    manifest = case.manifest()
    refused = _refused_without_trace(shared_kubectl, manifest)
    assert f'The {manifest["kind"]} "{manifest["metadata"]["name"]}" is invalid' in refused.stderr
    assert f"{case.field}: " in refused.stderr
    assert case.message in refused.stderr  # "" for the openapi layer; the rule's message for CEL


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id) for case in INVALID if case.layer == "unknown-field"])
def test_unknown_fields_are_refused_by_strict_field_validation(shared_kubectl: Kubectl, case: Any) -> None:
    refused = _refused_without_trace(shared_kubectl, case.manifest())
    assert "Error from server (BadRequest)" in refused.stderr
    assert f'unknown field "{case.field}"' in refused.stderr


def test_the_invalid_table_reaches_every_kind_and_layer() -> None:
    replayed = [case for case in INVALID if case.layer in ("openapi", "cel", "unknown-field")]
    assert len(replayed) >= 50
    assert {case.manifest()["kind"] for case in replayed} == {"TrainingJob", "ModelVersion", "ModelDeployment"}


# 3. Editing custom resources


def test_merge_and_json_patches_of_a_model_deployment(examples: Kubectl) -> None:
    kubectl = examples
    generation = get_json(kubectl, "md", "iris")["metadata"]["generation"]

    merged = kubectl("patch", "md", "iris", "--type", "merge", "-p", '{"spec":{"replicas":5}}')
    assert merged.stdout.strip() == "modeldeployment.kiln.dev/iris patched"
    spec_and_meta = get_json(kubectl, "md", "iris")
    assert spec_and_meta["spec"]["replicas"] == 5
    assert spec_and_meta["metadata"]["generation"] == generation + 1

    operations = [
        {"op": "replace", "path": "/spec/replicas", "value": 6},
        {"op": "replace", "path": "/spec/paused", "value": True},
        {"op": "remove", "path": "/spec/monitoring"},
    ]
    kubectl("patch", "md", "iris", "--type", "json", "-p", json.dumps(operations))
    patched = get_json(kubectl, "md", "iris")
    assert (patched["spec"]["replicas"], patched["spec"]["paused"]) == (6, True)
    assert "monitoring" not in patched["spec"]
    assert patched["metadata"]["generation"] == generation + 2

    # a failed `test` operation refuses the whole patch
    guarded = [
        {"op": "test", "path": "/spec/replicas", "value": 99},
        {"op": "replace", "path": "/spec/replicas", "value": 1},
    ]
    refused = kubectl("patch", "md", "iris", "--type", "json", "-p", json.dumps(guarded), check=False)
    assert refused.returncode == 1
    # a patch is validated like a create: the schema refuses a word for a number
    wrong_type = kubectl("patch", "md", "iris", "--type", "merge", "-p", '{"spec":{"replicas":"five"}}', check=False)
    assert wrong_type.returncode == 1
    assert 'The ModelDeployment "iris" is invalid' in wrong_type.stderr
    assert "spec.replicas: Invalid value" in wrong_type.stderr
    # custom resources have no strategic merge patch, kubectl patch's default
    strategic = kubectl("patch", "md", "iris", "-p", '{"spec":{"replicas":2}}', check=False)
    assert strategic.returncode == 1
    assert "application/strategic-merge-patch+json is not supported" in strategic.stderr
    assert get_json(kubectl, "md", "iris") == patched


def test_a_model_versions_identity_cannot_be_patched(examples: Kubectl) -> None:
    kubectl = examples
    refused = kubectl("patch", "mv", "iris-1.2.0", "--type", "merge", "-p", '{"spec":{"version":"1.2.1"}}', check=False)
    assert refused.returncode == 1
    assert 'The ModelVersion "iris-1.2.0" is invalid' in refused.stderr
    assert "spec.version" in refused.stderr
    assert "immutable" in refused.stderr
    assert get_json(kubectl, "mv", "iris-1.2.0")["spec"]["version"] == "1.2.0"

    # the stage is not part of the identity
    kubectl("patch", "mv", "iris-1.2.0", "--type", "merge", "-p", '{"spec":{"stage":"Production"}}')
    assert get_json(kubectl, "mv", "iris-1.2.0")["spec"]["stage"] == "Production"


def test_labels_annotations_and_label_selectors(examples: Kubectl) -> None:
    kubectl = examples
    assert kubectl("label", "md", "iris", "tier=gold").stdout.strip() == "modeldeployment.kiln.dev/iris labeled"
    kubectl("label", "md", "iris-shadow", "tier=silver")
    kubectl("label", "md", "iris-blue-green", "team=risk")
    kubectl("annotate", "md", "iris", "kiln.dev/owner=ml-platform@example.com")
    metadata = get_json(kubectl, "md", "iris")["metadata"]
    assert metadata["labels"] == {"app.kubernetes.io/part-of": "iris", "tier": "gold"}
    assert metadata["annotations"]["kiln.dev/owner"] == "ml-platform@example.com"

    def selected(selector: str) -> set[str]:
        return set(kubectl("get", "md", "-l", selector, "-o", "name").stdout.split())

    iris, shadow, blue_green, kfp = (
        f"modeldeployment.kiln.dev/{name}" for name in ("iris", "iris-shadow", "iris-blue-green", "iris-kfp")
    )
    assert selected("tier=gold") == {iris}
    assert selected("tier==gold") == {iris}
    assert selected("tier!=gold") == {shadow, blue_green, kfp}, "!= also matches objects without the label"
    assert selected("tier in (gold,silver)") == {iris, shadow}
    assert selected("tier notin (gold)") == {shadow, blue_green, kfp}
    assert selected("tier") == {iris, shadow}
    assert selected("!tier") == {blue_green, kfp}
    assert selected("app.kubernetes.io/part-of=iris,tier=gold") == {iris}
    assert selected("tier=bronze") == set()
    # the category honours selectors too: the TrainingJobs labelled part-of=iris come along
    assert set(kubectl("get", "kiln", "-l", "app.kubernetes.io/part-of=iris", "-o", "name").stdout.split()) == {
        iris,
        "trainingjob.kiln.dev/iris-rf",
        "trainingjob.kiln.dev/train-iris",
    }

    clash = kubectl("label", "md", "iris", "tier=platinum", check=False)
    assert clash.returncode == 1
    assert "--overwrite is false" in clash.stderr
    kubectl("label", "md", "iris", "tier=platinum", "--overwrite")
    assert selected("tier=platinum") == {iris}
    kubectl("label", "md", "iris", "tier-")
    kubectl("annotate", "md", "iris", "kiln.dev/owner-")
    metadata = get_json(kubectl, "md", "iris")["metadata"]
    assert metadata["labels"] == {"app.kubernetes.io/part-of": "iris"}
    assert "kiln.dev/owner" not in (metadata.get("annotations") or {})


def test_kubectl_wait_is_released_by_a_status_written_through_the_subresource(
    devcluster: cluster.DevCluster, examples: Kubectl
) -> None:
    kubectl = examples
    with background_kubectl(devcluster, "wait", "--for=condition=Ready", "mv/iris-1.2.0", "--timeout=30s") as waiting:
        eventually(lambda: watch_started(devcluster, "modelversions", "iris-1.2.0"), what="kubectl wait's watch")
        assert waiting.poll() is None, "the condition cannot be met before the status is written"

        generation = get_json(kubectl, "mv", "iris-1.2.0")["metadata"]["generation"]
        ready = {
            "type": "Ready",
            "status": "True",
            "reason": "GatesPassed",
            "message": "every gate passed",
            "lastTransitionTime": "2025-01-01T00:00:00Z",
            "observedGeneration": generation,  # kubectl wait ignores a condition about an older generation
        }
        status = {"phase": "Validated", "stage": "Staging", "observedGeneration": generation, "conditions": [ready]}
        api = custom_objects(devcluster)
        written = api.patch_namespaced_custom_object_status(
            GROUP, VERSION, "default", "modelversions", "iris-1.2.0", {"status": status, "spec": {"stage": "None"}}
        )
        assert written["status"]["phase"] == "Validated"
        assert written["spec"]["stage"] == "Staging", "the status subresource ignores changes to spec"

        out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 0, err
    assert out.strip() == "modelversion.kiln.dev/iris-1.2.0 condition met"

    (row,) = tables(kubectl("get", "mv").stdout)[0]
    assert (row["PHASE"], row["STAGE"]) == ("Validated", "Staging")
    assert get_json(kubectl, "mv", "iris-1.2.0")["metadata"]["generation"] == generation

    # the main resource, in turn, ignores changes to status
    ignored = kubectl("patch", "mv", "iris-1.2.0", "--type", "merge", "-p", '{"status":{"phase":"Rejected"}}')
    assert ignored.stdout.strip() == "modelversion.kiln.dev/iris-1.2.0 patched (no change)"
    assert get_json(kubectl, "mv", "iris-1.2.0")["status"]["phase"] == "Validated"


def test_delete_then_get_is_not_found(examples: Kubectl) -> None:
    kubectl = examples
    deleted = kubectl("delete", "mv", "iris-1.2.0")
    assert deleted.stdout.strip() == 'modelversion.kiln.dev "iris-1.2.0" deleted'
    gone = kubectl("get", "mv", "iris-1.2.0", check=False)
    assert gone.returncode == 1
    assert gone.stderr.strip() == 'Error from server (NotFound): modelversions.kiln.dev "iris-1.2.0" not found'
    again = kubectl("delete", "mv", "iris-1.2.0", check=False)
    assert again.returncode == 1
    assert "(NotFound)" in again.stderr
    assert kubectl("delete", "mv", "iris-1.2.0", "--ignore-not-found").returncode == 0


def test_kubectl_wait_for_delete_waits_for_finalizers(devcluster: cluster.DevCluster, examples: Kubectl) -> None:
    kubectl = examples
    kubectl(
        "patch", "tj", "resnet50-imagenet", "--type", "merge", "-p", '{"metadata":{"finalizers":["kiln.dev/cleanup"]}}'
    )
    kubectl("delete", "tj", "resnet50-imagenet", "--wait=false")
    terminating = get_json(kubectl, "tj", "resnet50-imagenet")["metadata"]
    assert terminating["deletionTimestamp"]
    assert terminating["finalizers"] == ["kiln.dev/cleanup"]

    with background_kubectl(devcluster, "wait", "--for=delete", "tj/resnet50-imagenet", "--timeout=30s") as waiting:
        eventually(lambda: watch_started(devcluster, "trainingjobs", "resnet50-imagenet"), what="the watch")
        assert waiting.poll() is None, "a finalizer holds the object"
        kubectl("patch", "tj", "resnet50-imagenet", "--type", "merge", "-p", '{"metadata":{"finalizers":null}}')
        out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 0, err
    assert out.strip() == "trainingjob.kiln.dev/resnet50-imagenet condition met"
    assert "not found" in kubectl("get", "tj", "resnet50-imagenet", check=False).stderr
    assert "trainingjob.kiln.dev/resnet50-imagenet" not in kubectl("get", "tj", "-o", "name").stdout.split()
    assert "trainingjob.kiln.dev/iris-rf" in kubectl("get", "tj", "-o", "name").stdout.split()


# 4. Built-in kinds beside Kiln's

BUILTINS = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: iris-settings
data:
  threshold: "0.9"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: iris-server
  labels: {app: iris}
spec:
  replicas: 2
  selector:
    matchLabels: {app: iris}
  template:
    metadata:
      labels: {app: iris}
    spec:
      containers:
        - name: server
          image: ghcr.io/example/iris-server:1.0
          ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata:
  name: iris-debug
spec:
  containers:
    - name: shell
      image: busybox:1.36
      command: [sleep, "3600"]
"""


def test_configmap_deployment_and_pod(kubectl: Kubectl) -> None:
    assert kubectl("apply", "-f", "-", input=BUILTINS).stdout.splitlines() == [
        "configmap/iris-settings created",
        "deployment.apps/iris-server created",
        "pod/iris-debug created",
    ]
    assert kubectl("apply", "-f", "-", input=BUILTINS).stdout.splitlines() == [
        "configmap/iris-settings unchanged",
        "deployment.apps/iris-server unchanged",
        "pod/iris-debug unchanged",
    ]
    assert get_json(kubectl, "configmap", "iris-settings")["data"] == {"threshold": "0.9"}
    deployment = get_json(kubectl, "deployment", "iris-server")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate", "built-in defaults apply"

    # busybox is not a local image: its containers are simulated, Running and Ready at once
    kubectl("wait", "--for=condition=Available", "deployment/iris-server", "--timeout=30s")
    kubectl("wait", "--for=condition=Ready", "pod/iris-debug", "--timeout=30s")
    pods = kubectl("get", "pods").stdout
    assert headers(pods) == [["NAME", "READY", "STATUS", "RESTARTS", "AGE"]]
    rows = {row["NAME"]: row for row in tables(pods)[0]}
    assert len(rows) == 3
    assert (rows["iris-debug"]["READY"], rows["iris-debug"]["STATUS"], rows["iris-debug"]["RESTARTS"]) == (
        "1/1",
        "Running",
        "0",
    )
    (row,) = tables(kubectl("get", "deployments").stdout)[0]
    assert (row["NAME"], row["READY"], row["UP-TO-DATE"], row["AVAILABLE"]) == ("iris-server", "2/2", "2", "2")


def test_a_malformed_deployment_is_refused_with_422(kubectl: Kubectl) -> None:
    malformed = BUILTINS.split("---\n")[1].replace("replicas: 2", 'replicas: "two"')
    refused = kubectl("apply", "-f", "-", "-v=6", input=malformed, check=False)
    assert refused.returncode == 1
    assert "422 Unprocessable Entity" in refused.stderr
    assert 'The Deployment "iris-server" is invalid' in refused.stderr
    assert "spec.replicas" in refused.stderr
    assert kubectl("get", "deployments", "-o", "name").stdout == ""


def test_kubectl_logs_of_a_pod(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "-", input=BUILTINS)
    # a simulated container writes nothing, but the log subresource answers
    assert kubectl("logs", "iris-debug").stdout == ""
    assert kubectl("logs", "pod/iris-debug", "-c", "shell", "--tail=10").returncode == 0
    missing = kubectl("logs", "no-such-pod", check=False)
    assert missing.returncode == 1
    assert 'pods "no-such-pod" not found' in missing.stderr


# 5. A namespace of one's own

NAMESPACE = """\
apiVersion: v1
kind: Namespace
metadata:
  name: ml-team
"""


def test_deleting_a_namespace_deletes_what_is_in_it(devcluster: cluster.DevCluster, crds: Kubectl) -> None:
    kubectl = crds
    # a Namespace manifest through apply (the typed `kubectl create namespace` is tested on its own)
    assert kubectl("apply", "-f", "-", input=NAMESPACE).stdout.strip() == "namespace/ml-team created"
    (row,) = [row for row in tables(kubectl("get", "namespaces").stdout)[0] if row["NAME"] == "ml-team"]
    assert row["STATUS"] == "Active"

    kubectl("apply", "-n", "ml-team", "-f", str(EXAMPLES), "-R")
    kubectl("apply", "-n", "ml-team", "-f", "-", input=BUILTINS)
    kubectl("apply", "-f", str(EXAMPLES / "model-registry"))  # the same name in default must survive
    in_team = set(kubectl("get", "kiln,configmaps,deployments,pods", "-n", "ml-team", "-o", "name").stdout.split())
    assert {f"{kind.lower()}.{GROUP}/{name}" for kind, name in EXAMPLE_NAMES} <= in_team
    assert {"configmap/iris-settings", "deployment.apps/iris-server", "pod/iris-debug"} <= in_team

    assert kubectl("delete", "-f", "-", input=NAMESPACE).stdout.strip() == 'namespace "ml-team" deleted'
    kubectl("wait", "--for=delete", "namespace/ml-team", "--timeout=30s")
    assert 'namespaces "ml-team" not found' in kubectl("get", "namespace", "ml-team", check=False).stderr
    for resource in ("kiln", "configmaps", "deployments", "pods", "serviceaccounts"):
        assert kubectl("get", resource, "-n", "ml-team", "-o", "name").stdout == "", resource
    assert kubectl("get", "mv", "-n", "default", "-o", "name").stdout.split() == ["modelversion.kiln.dev/iris-1.2.0"]


def test_a_terminating_namespace_waits_for_finalizers_and_refuses_new_content(crds: Kubectl) -> None:
    kubectl = crds
    kubectl("apply", "-f", "-", input=NAMESPACE)
    kubectl("apply", "-n", "ml-team", "-f", str(EXAMPLES / "iris-training"))
    finalizer = '{"metadata":{"finalizers":["kiln.dev/cleanup"]}}'
    kubectl("patch", "-n", "ml-team", "tj", "iris-rf", "--type", "merge", "-p", finalizer)

    kubectl("delete", "namespace", "ml-team", "--wait=false")
    assert get_json(kubectl, "namespace", "ml-team")["status"]["phase"] == "Terminating"
    refused = kubectl("apply", "-n", "ml-team", "-f", str(EXAMPLES / "model-registry"), check=False)
    assert refused.returncode == 1
    assert "(Forbidden)" in refused.stderr
    assert "because it is being terminated" in refused.stderr

    kubectl("patch", "-n", "ml-team", "tj", "iris-rf", "--type", "merge", "-p", '{"metadata":{"finalizers":null}}')
    kubectl("wait", "--for=delete", "namespace/ml-team", "--timeout=30s")
    assert "not found" in kubectl("get", "namespace", "ml-team", check=False).stderr


# 6. The oldest and the newest kubectl


def _oldest_and_newest() -> list[str]:
    versions = available_kubectl_versions()
    # with no versioned kubectl at all, kubectl_binary fails the test with how to install one
    return sorted({versions[0], versions[-1]}, key=versions.index) if versions else ["1.missing"]


@pytest.mark.parametrize("version", _oldest_and_newest())
def test_smoke_with_kubectl_version(devcluster: cluster.DevCluster, version: str) -> None:
    kubectl = make_kubectl(devcluster, kubectl_binary(version))
    assert f"v{version}." in kubectl("version", "--client", "-o", "json").stdout

    install_crds(kubectl)
    assert kubectl("apply", "-f", str(EXAMPLES / "model-registry")).stdout.strip() == (
        "modelversion.kiln.dev/iris-1.2.0 created"
    )
    (row,) = tables(kubectl("get", "mv").stdout)[0]
    assert (row["NAME"], row["MODEL"], row["VERSION"]) == ("iris-1.2.0", "iris", "1.2.0")
    assert kubectl("get", "kiln", "-o", "name").stdout.split() == ["modelversion.kiln.dev/iris-1.2.0"]
    assert kubectl("delete", "mv", "iris-1.2.0").stdout.strip() == 'modelversion.kiln.dev "iris-1.2.0" deleted'
    assert "not found" in kubectl("get", "mv", "iris-1.2.0", check=False).stderr


# 7. Server-side apply


def test_server_side_apply_of_an_example(crds: Kubectl) -> None:
    kubectl = crds
    canary = str(EXAMPLES / "canary-rollout")
    applied = kubectl("apply", "--server-side", "-f", canary)
    assert applied.stdout.strip() == "modeldeployment.kiln.dev/iris serverside-applied"
    (manifest,) = [doc for scenario, doc in EXAMPLE_OBJECTS if scenario == "canary-rollout"]
    stored = get_json(kubectl, "md", "iris")
    assert contains(stored["spec"], manifest["spec"], "spec") == []
    assert stored["spec"]["paused"] is False, "defaults apply to server-side apply too"

    before = versions_of(kubectl, "md")
    assert kubectl("apply", "--server-side", "-f", canary).stdout.strip() == (
        "modeldeployment.kiln.dev/iris serverside-applied"
    )
    assert versions_of(kubectl, "md") == before, "applying the same configuration again is a no-op"


def test_server_side_apply_records_field_managers_and_refuses_conflicts(crds: Kubectl) -> None:
    kubectl = crds
    canary = EXAMPLES / "canary-rollout" / "modeldeployment.yaml"
    kubectl("apply", "--server-side", "-f", str(canary))
    stored = get_json(kubectl, "md", "iris", "--show-managed-fields")
    managers = {(entry["manager"], entry["operation"]) for entry in stored["metadata"].get("managedFields", [])}
    assert ("kubectl", "Apply") in managers, stored["metadata"]

    # another manager applying a different replicas conflicts with kubectl, which owns the field
    autoscaler = copy.deepcopy(yaml.safe_load(canary.read_text()))
    autoscaler["spec"] = {"replicas": 7}
    conflict = kubectl(
        "apply", "--server-side", "--field-manager=autoscaler", "-f", "-", input=json.dumps(autoscaler), check=False
    )
    assert conflict.returncode == 1
    assert 'conflict with "kubectl"' in conflict.stderr
    assert ".spec.replicas" in conflict.stderr
    assert get_json(kubectl, "md", "iris")["spec"]["replicas"] == 3

    forced = "--force-conflicts"
    kubectl("apply", "--server-side", "--field-manager=autoscaler", forced, "-f", "-", input=json.dumps(autoscaler))
    assert get_json(kubectl, "md", "iris")["spec"]["replicas"] == 7


def test_typed_create_generators_send_protobuf_which_the_dev_cluster_decodes(kubectl: Kubectl) -> None:
    kubectl("create", "namespace", "team-a")
    kubectl("create", "configmap", "settings", "-n", "team-a", "--from-literal=a=1", "--from-literal=b=two")
    kubectl("create", "secret", "generic", "token", "-n", "team-a", "--from-literal=password=hunter2")
    kubectl("create", "serviceaccount", "bot", "-n", "team-a")

    assert json.loads(kubectl("get", "configmap", "settings", "-n", "team-a", "-o", "json").stdout)["data"] == {
        "a": "1",
        "b": "two",
    }
    secret = json.loads(kubectl("get", "secret", "token", "-n", "team-a", "-o", "json").stdout)
    assert base64.b64decode(secret["data"]["password"]) == b"hunter2"
    assert secret["type"] == "Opaque"
    assert kubectl("get", "serviceaccount", "bot", "-n", "team-a", "-o", "name").stdout.strip() == "serviceaccount/bot"


def test_every_typed_generator_users_type_creates_what_it_says(kubectl: Kubectl) -> None:
    kubectl("create", "namespace", "gen")
    ns = ("-n", "gen")
    kubectl("create", "deployment", "web", "--image=nginx", "--replicas=2", "--port=8080", *ns)
    kubectl("create", "job", "once", "--image=busybox", *ns, "--", "echo", "hi")
    kubectl("create", "cronjob", "nightly", "--image=busybox", "--schedule=0 3 * * *", *ns, "--", "date")
    kubectl("create", "service", "clusterip", "web", "--tcp=80:8080", *ns)
    kubectl("create", "priorityclass", "urgent", "--value=100000", "--description=on call")
    kubectl("create", "quota", "gpus", "--hard=requests.nvidia.com/gpu=4,pods=10", *ns)
    kubectl("create", "role", "reader", "--verb=get,list", "--resource=pods,pods/log", *ns)
    kubectl("create", "rolebinding", "reader", "--role=reader", "--serviceaccount=gen:default", *ns)
    kubectl("create", "clusterrole", "watcher", "--verb=watch", "--resource=deployments.apps")
    kubectl("create", "clusterrolebinding", "watcher", "--clusterrole=watcher", "--user=alice")

    deployment = get_json(kubectl, "deployment", "web", *ns)
    assert deployment["spec"]["replicas"] == 2
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert (container["image"], container["ports"][0]["containerPort"]) == ("nginx", 8080)
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": "25%"}
    job = get_json(kubectl, "job", "once", *ns)
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["echo", "hi"]
    cronjob = get_json(kubectl, "cronjob", "nightly", *ns)
    assert cronjob["spec"]["schedule"] == "0 3 * * *"
    assert cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"] == ["date"]
    service = get_json(kubectl, "service", "web", *ns)
    assert service["spec"]["ports"][0] | {"port": 80, "targetPort": 8080} == service["spec"]["ports"][0]
    priority = get_json(kubectl, "priorityclass", "urgent")
    assert (priority["value"], priority["description"]) == (100000, "on call")
    quota = get_json(kubectl, "quota", "gpus", *ns)
    assert quota["spec"]["hard"] == {"requests.nvidia.com/gpu": "4", "pods": "10"}
    role = get_json(kubectl, "role", "reader", *ns)
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]}]
    answer = kubectl("auth", "can-i", "get", "pods", "-n", "gen", "--as=system:serviceaccount:gen:default")
    assert answer.stdout.strip() == "yes"
    binding = get_json(kubectl, "clusterrolebinding", "watcher")
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]


def test_a_secrets_string_data_is_folded_into_data_and_never_stored(kubectl: Kubectl) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s3-credentials"},
        "data": {"AWS_REGION": base64.b64encode(b"eu-west-1").decode(), "AWS_ACCESS_KEY_ID": "b2xk"},
        "stringData": {"AWS_ACCESS_KEY_ID": "AKIA-new", "AWS_SECRET_ACCESS_KEY": "s3cr3t"},
    }
    kubectl("apply", "-f", "-", input=json.dumps(secret))

    stored = get_json(kubectl, "secret", "s3-credentials")

    assert "stringData" not in stored
    decoded = {key: base64.b64decode(value).decode() for key, value in stored["data"].items()}
    assert decoded == {"AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "AKIA-new", "AWS_SECRET_ACCESS_KEY": "s3cr3t"}


def test_whoami_reports_the_admin_and_the_impersonated_user(kubectl: Kubectl) -> None:
    admin = json.loads(kubectl("auth", "whoami", "-o", "json").stdout)["status"]["userInfo"]
    assert admin["username"] == "kiln-admin"
    assert "system:masters" in admin["groups"]
    alice = json.loads(kubectl("auth", "whoami", "-o", "json", "--as", "alice", "--as-group", "reviewers").stdout)
    assert alice["status"]["userInfo"] == {"username": "alice", "groups": ["reviewers", "system:authenticated"]}
