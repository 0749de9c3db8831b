"""examples/train-iris end to end: `kiln run` starts `kiln-trainer` in a pod on the dev cluster, it
trains, registers ModelVersion iris-1.0.0 as the kiln-trainer service account, and the job
Succeeds. The test recomputes the artifact's digest and the held-out metrics itself."""

from __future__ import annotations

import hashlib
import pathlib

import pytest
import skops.io
import yaml
from kiln_cluster import Kiln
from sklearn import datasets, ensemble, metrics, model_selection
from test_training import pods_of, wait_for_phase

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "train-iris" / "trainingjob.yaml"


def test_train_iris_registers_a_model_version_with_the_right_digest_and_metrics(kiln: Kiln) -> None:
    manifest = yaml.safe_load(EXAMPLE.read_text())
    spec = manifest["spec"]["sklearn"]
    kiln.kubectl("create", "namespace", "iris")
    kiln.kubectl("apply", "-n", "iris", "-f", str(EXAMPLE))
    status = wait_for_phase(kiln, "iris", "train-iris", "Succeeded", 120)
    assert status["modelVersion"] == "iris-1.0.0"

    version = kiln.wait_for_phase("iris", "iris-1.0.0", "Validated")
    registered = kiln.model_version("iris", "iris-1.0.0")
    artifact = registered["spec"]["artifact"]
    assert artifact["uri"] == "pvc://kiln-models/iris/1.0.0/model.skops"
    data = (kiln.pvc_root / "iris" / "kiln-models" / "iris" / "1.0.0" / "model.skops").read_bytes()
    assert artifact["sha256"] == hashlib.sha256(data).hexdigest()
    assert [owner["name"] for owner in registered["metadata"]["ownerReferences"]] == ["train-iris"]
    assert registered["spec"]["lineage"]["trainingJob"] == "train-iris"
    assert registered["spec"]["lineage"]["parameters"]["estimator"] == spec["estimator"]
    assert len(registered["spec"]["baseline"]["features"]) == 4
    assert version["gateResults"][0]["passed"] is True

    features, target = datasets.load_iris(return_X_y=True)
    _, test_features, _, test_target = model_selection.train_test_split(
        features, target, test_size=spec["testSize"], random_state=spec["randomSeed"], stratify=target
    )
    model = skops.io.loads(data, trusted=skops.io.get_untrusted_types(data=data))
    predicted = model.predict(test_features)
    recorded = registered["spec"]["metrics"]
    assert recorded["accuracy"] == pytest.approx(metrics.accuracy_score(test_target, predicted))
    assert recorded["f1_macro"] == pytest.approx(metrics.f1_score(test_target, predicted, average="macro"))
    assert status["metrics"]["accuracy"] == recorded["accuracy"]

    # The same estimator fitted here on the same split measures the same.
    refit = ensemble.RandomForestClassifier(**spec["params"], random_state=spec["randomSeed"])
    train_features, _, train_target, _ = model_selection.train_test_split(
        features, target, test_size=spec["testSize"], random_state=spec["randomSeed"], stratify=target
    )
    refit.fit(train_features, train_target)
    assert recorded["accuracy"] == pytest.approx(metrics.accuracy_score(test_target, refit.predict(test_features)))

    [pod] = pods_of(kiln, "iris", "train-iris")
    assert pod.spec.service_account_name == "kiln-trainer"
    assert pod.spec.containers[0].command == ["kiln-trainer"]
