"""manifests/install.yaml, as a platform team applies it: the whole file applied with kubectl to a dev
cluster (which enforces RBAC and admission policies), and the chart's own operator Deployment brings up
its two replicas and trains examples/train-iris to Succeeded.

No image is pulled here: the dev cluster's kubelet runs a container whose command is a Kiln entry point
(`kiln run ...`) as a local process from this checkout, with the pod's ServiceAccount token, so the
Deployment, its probes, its RBAC and its admission policies are the ones a real cluster gets.
"""

from __future__ import annotations

import json
import pathlib

import yaml
from kiln_cluster import REPO, Kiln, bare_cluster
from polling import eventually
from test_operator_rbac import EXAMPLE, NAMESPACE
from test_training import wait_for_phase

INSTALL = REPO / "manifests" / "install.yaml"
TIMEOUT = 120.0


def install(kiln: Kiln) -> dict[str, str]:
    """Apply install.yaml as the README says (twice on a new cluster: the first apply's CRDs must be
    established before kubectl can map the peering object); the operator's namespace and name."""
    first = kiln.kubectl("apply", "--server-side", "-f", str(INSTALL), check=False)
    assert first.returncode == 0 or "ensure CRDs are installed first" in first.stderr, first.stderr
    kiln.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=30s")
    kiln.kubectl("apply", "--server-side", "-f", str(INSTALL))
    [deployment] = [obj for obj in yaml.safe_load_all(INSTALL.read_text()) if obj and obj["kind"] == "Deployment"]
    return {"namespace": deployment["metadata"]["namespace"], "name": deployment["metadata"]["name"]}


def operator_logs(kiln: Kiln, namespace: str) -> str:
    pods = kiln.core().list_namespaced_pod(namespace).items
    return "\n".join(kiln.core().read_namespaced_pod_log(pod.metadata.name, namespace) for pod in pods)


def test_install_yaml_runs_the_operator_deployment_which_trains_iris(tmp_path: pathlib.Path) -> None:
    with bare_cluster(tmp_path) as kiln:
        operator = install(kiln)

        def both_ready() -> bool:
            deployment = kiln.apps().read_namespaced_deployment(operator["name"], operator["namespace"])
            return deployment.status.ready_replicas == 2

        eventually(both_ready, "the operator's two replicas to pass their readiness probes", TIMEOUT)
        kiln.kubectl("create", "namespace", NAMESPACE)
        kiln.kubectl("apply", "-n", NAMESPACE, "-f", str(EXAMPLE))
        status = wait_for_phase(kiln, NAMESPACE, "train-iris", "Succeeded", TIMEOUT)

        assert status["modelVersion"] == "iris-1.0.0"  # named as the chart's version-names policy admits
        assert kiln.wait_for_phase(NAMESPACE, "iris-1.0.0", "Validated")["phase"] == "Validated"
        logs = operator_logs(kiln, operator["namespace"])
        assert "Traceback" not in logs, logs[-6000:]
        assert "Forbidden" not in logs, logs[-6000:]  # a rule the chart lacks is a real 403 here
        audit = (kiln.devcluster.state_dir / "audit.jsonl").read_text().splitlines()
    account = f"system:serviceaccount:{operator['namespace']}:{operator['name']}"
    records = [json.loads(line) for line in audit]
    status_writers = {r["user"] for r in records if (r["resource"], r["subresource"]) == ("trainingjobs", "status")}
    assert status_writers == {account}, "the chart's Deployment, as its ServiceAccount, ran the job"
