"""manifests/install.yaml, as a platform team applies it: its Namespace, ServiceAccount and RBAC applied to
a dev cluster (which enforces RBAC) with kubectl, and the operator run from the checkout in place of the
image, with that ServiceAccount's token, trains examples/train-iris to Succeeded."""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import yaml
from kiln_cluster import REPO, OperatorProcess, cluster_with_crds
from test_operator_rbac import EXAMPLE, NAMESPACE, _service_account_kubeconfig
from test_training import wait_for_phase

INSTALL = REPO / "manifests" / "install.yaml"
KINDS = {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"}


def _install_rbac() -> list[dict[str, Any]]:
    """The operator's Namespace, ServiceAccount, ClusterRole and ClusterRoleBinding from install.yaml."""
    objects = [obj for obj in yaml.safe_load_all(INSTALL.read_text()) if obj and obj["kind"] in KINDS]
    assert sorted(obj["kind"] for obj in objects) == sorted(KINDS)
    return objects


def test_install_manifests_rbac_lets_the_operator_train_iris(tmp_path: pathlib.Path) -> None:
    rbac = _install_rbac()
    (account,) = (obj for obj in rbac if obj["kind"] == "ServiceAccount")
    manifest = tmp_path / "install-rbac.yaml"
    manifest.write_text(yaml.safe_dump_all(rbac))

    with cluster_with_crds(tmp_path) as setup:
        setup.kubectl("apply", "--server-side", "-f", str(manifest))
        kubeconfig = _service_account_kubeconfig(setup, account, tmp_path / "operator.kubeconfig")
        operator = OperatorProcess(dataclasses.replace(setup, env={**setup.env, "KUBECONFIG": str(kubeconfig)}))
        operator.start()
        try:
            setup.kubectl("create", "namespace", NAMESPACE)
            setup.kubectl("apply", "-n", NAMESPACE, "-f", str(EXAMPLE))
            assert wait_for_phase(setup, NAMESPACE, "train-iris", "Succeeded", 120)["modelVersion"] == "iris-1.0.0"
        finally:
            operator.stop()
        setup.assert_no_traceback()
        log = setup.operator_log.read_text()
        assert "Forbidden" not in log, log[-6000:]  # a missing rule is a real 403
        audit = (setup.devcluster.state_dir / "audit.jsonl").read_text().splitlines()
    username = f"system:serviceaccount:{account['metadata']['namespace']}:{account['metadata']['name']}"
    assert any(json.loads(line)["user"] == username for line in audit), "the operator ran as install.yaml's account"
