"""A whole training run with the in-memory API: metrics recomputed independently, the baseline,
the artifact, the result file, checkpoints, and the ModelVersion registered."""

from __future__ import annotations

import hashlib
import json
import math
import pathlib
from typing import Any

import numpy as np
import pytest
from sklearn import datasets as sk_datasets
from sklearn import metrics as sk_metrics
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import Ridge
from sklearn.model_selection import train_test_split
from skops import io as skops_io

import kiln.runtime.trainer
from kiln.api import modelversion, trainingjob
from kiln.monitoring import statistics
from kiln.runtime.trainer import artifact, baseline, errors, registration, run, settings

SEED = 7
JOB, UID, NS = "train-iris", "0b8e9c3a-5f7e-4c1b-9d1e-2a6f3e4b5c6d", "ml"


def sklearn_spec(estimator: str, builtin: str, test_size: float = 0.25, **params: Any) -> dict[str, Any]:
    return {
        "estimator": estimator,
        "params": params,
        "dataset": {"builtin": builtin},
        "testSize": test_size,
        "randomSeed": SEED,
    }


def config(tmp_path: pathlib.Path, sklearn: dict[str, Any], output: bool = True, **extra: str) -> settings.Settings:
    """Settings as the operator's environment gives them."""
    environ = {
        "KILN_SKLEARN": json.dumps(sklearn),
        "KILN_RESULT_FILE": str(tmp_path / "output" / "result.json"),
        "KILN_TRAINING_JOB": JOB,
        "KILN_TRAINING_JOB_UID": UID,
        "KILN_NAMESPACE": NS,
        **extra,
    }
    if output:
        gates = [{"metric": "accuracy", "min": 0.9}]
        environ["KILN_OUTPUT"] = json.dumps(
            {"modelName": "iris", "version": "1.0.0", "gates": gates, "requiredApprovals": 1}
        )
        environ["KILN_ARTIFACT_URI"] = "pvc://kiln-models/iris/1.0.0/model.skops"
        environ["KILN_ARTIFACT_PATH"] = str(tmp_path / "models" / "iris" / "1.0.0" / "model.skops")
    return settings.Settings.from_environment(environ)


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)


def train(
    tmp_path: pathlib.Path, sklearn: dict[str, Any], api: registration.InMemoryModelVersions | None = None, **kw: Any
) -> tuple[trainingjob.TrainingResult, Log]:
    log = Log()
    store = api if api is not None else registration.InMemoryModelVersions()
    return run.train(config(tmp_path, sklearn, **kw), lambda: store, log), log


def test_iris_metrics_are_those_of_the_seeded_split_and_fit_recomputed_independently(tmp_path: pathlib.Path) -> None:
    spec = sklearn_spec("sklearn.ensemble.RandomForestClassifier", "iris", n_estimators=25)

    result, _ = train(tmp_path, spec)

    features, target = sk_datasets.load_iris(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        features, target, test_size=0.25, random_state=SEED, stratify=target
    )
    predicted = RandomForestClassifier(n_estimators=25, random_state=SEED).fit(x_train, y_train).predict(x_test)
    assert result.metrics == {
        "accuracy": sk_metrics.accuracy_score(y_test, predicted),
        "f1_macro": sk_metrics.f1_score(y_test, predicted, average="macro"),
        "precision_macro": sk_metrics.precision_score(y_test, predicted, average="macro"),
        "recall_macro": sk_metrics.recall_score(y_test, predicted, average="macro"),
    }


def test_a_binary_classifier_also_has_roc_auc(tmp_path: pathlib.Path) -> None:
    spec = sklearn_spec("sklearn.ensemble.RandomForestClassifier", "breast_cancer", n_estimators=10)

    result, _ = train(tmp_path, spec, output=False)

    features, target = sk_datasets.load_breast_cancer(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        features, target, test_size=0.25, random_state=SEED, stratify=target
    )
    model = RandomForestClassifier(n_estimators=10, random_state=SEED).fit(x_train, y_train)
    assert result.metrics["roc_auc"] == sk_metrics.roc_auc_score(y_test, model.predict_proba(x_test)[:, 1])
    assert result.metrics["accuracy"] == sk_metrics.accuracy_score(y_test, model.predict(x_test))


def test_a_regressor_has_r2_mae_and_rmse_and_a_float_output(tmp_path: pathlib.Path) -> None:
    result, _ = train(tmp_path, sklearn_spec("sklearn.linear_model.Ridge", "diabetes", alpha=0.5), output=False)

    features, target = sk_datasets.load_diabetes(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(features, target, test_size=0.25, random_state=SEED)
    predicted = Ridge(alpha=0.5).fit(x_train, y_train).predict(x_test)
    assert result.metrics == pytest.approx(
        {
            "r2": sk_metrics.r2_score(y_test, predicted),
            "mae": sk_metrics.mean_absolute_error(y_test, predicted),
            "rmse": math.sqrt(sk_metrics.mean_squared_error(y_test, predicted)),
        }
    )
    assert result.signature is not None
    assert [(o.name, o.datatype) for o in result.signature.outputs] == [("predict", "FP64")]


def test_without_an_output_nothing_is_saved_or_registered(tmp_path: pathlib.Path) -> None:
    api = registration.InMemoryModelVersions()

    result, log = train(tmp_path, sklearn_spec("sklearn.tree.DecisionTreeClassifier", "wine"), api, output=False)

    assert (result.artifact, result.model_version) == (None, None)
    assert api.objects == {}
    assert not (tmp_path / "models").exists()
    assert trainingjob.TrainingResult.model_validate_json((tmp_path / "output" / "result.json").read_text()) == result
    assert not any("registered" in line for line in log.lines)


def test_the_version_is_registered_owned_by_its_job_with_the_artifact_it_wrote(tmp_path: pathlib.Path) -> None:
    api = registration.InMemoryModelVersions()
    spec = sklearn_spec("sklearn.ensemble.RandomForestClassifier", "iris", n_estimators=5)

    result, _ = train(tmp_path, spec, api, KILN_CODE_REPOSITORY="https://git.example/ml", KILN_CODE_COMMIT="abc1234")

    stored = api.get(NS, "iris-1.0.0")
    version = modelversion.ModelVersion.model_validate(stored)
    written = (tmp_path / "models" / "iris" / "1.0.0" / "model.skops").read_bytes()
    assert version.spec.artifact.sha256 == hashlib.sha256(written).hexdigest()
    assert version.spec.artifact.uri == "pvc://kiln-models/iris/1.0.0/model.skops"
    assert stored["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "kiln.dev/v1alpha1",
            "kind": "TrainingJob",
            "name": JOB,
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert stored["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "kiln",
        "kiln.dev/model": "iris",
        "kiln.dev/trainingjob": JOB,
    }
    assert version.spec.metrics == result.metrics
    assert (version.spec.framework, version.spec.required_approvals) == ("sklearn", 1)
    assert [gate.metric for gate in version.spec.gates] == ["accuracy"]
    assert version.spec.lineage.training_job == JOB
    assert version.spec.lineage.code == modelversion.CodeRef(repository="https://git.example/ml", commit="abc1234")
    assert version.spec.lineage.dataset is not None
    assert version.spec.lineage.dataset.uri == "sklearn://iris"
    assert version.spec.lineage.parameters == {
        "estimator": "sklearn.ensemble.RandomForestClassifier",
        "testSize": "0.25",
        "randomSeed": "7",
        "params.n_estimators": "5",
        "params.random_state": "7",
    }
    assert version.spec.signature is not None
    assert version.spec.signature.inputs[0].model_dump() == {"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}
    assert [(o.name, o.datatype) for o in version.spec.signature.outputs] == [("predict", "INT64")]
    assert (result.model_version, result.artifact) == ("iris-1.0.0", version.spec.artifact)
    loaded = skops_io.loads(written, trusted=skops_io.get_untrusted_types(data=written))
    assert loaded.predict(sk_datasets.load_iris().data[:3]).tolist() == [0, 0, 0]


def test_the_baseline_has_a_histogram_per_feature_whose_counts_sum_to_the_training_rows(tmp_path: pathlib.Path) -> None:
    api = registration.InMemoryModelVersions()
    train(tmp_path, sklearn_spec("sklearn.tree.DecisionTreeClassifier", "iris"), api)

    found = modelversion.ModelVersion.model_validate(api.get(NS, "iris-1.0.0")).spec.baseline

    assert found is not None
    assert found.sample_size == 112  # 150 rows less the 25% held out
    iris = sk_datasets.load_iris()
    assert [feature.name for feature in found.features] == list(iris.feature_names)
    for feature in found.features:
        assert (len(feature.bins), sum(feature.counts)) == (baseline.BINS + 1, 112)
        assert feature.bins == sorted(feature.bins)


def test_a_value_on_a_bin_edge_counts_in_the_bin_it_closes_as_kiln_servers_le_buckets_count_it() -> None:
    values = np.array([[0.0], [1.0], [1.0], [2.0], [3.0], [4.0]])  # edges 0, 1, 2, 3, 4 with bins=4

    [feature] = baseline.compute(values, ["x"], bins=4).features

    assert feature.bins == [0.0, 1.0, 2.0, 3.0, 4.0]
    # (0..1] holds 0 (the minimum) and both 1s; (1..2] the 2; (2..3] the 3; (3..4] the 4
    assert feature.counts == [3, 1, 1, 1]
    # kiln-server exports cumulative `le` buckets, which drift monitoring turns back into bins
    cumulative = [float((values[:, 0] <= edge).sum()) for edge in feature.bins] + [float(len(values))]
    assert statistics.live_counts(cumulative, 4) == [float(count) for count in feature.counts]


def test_the_baseline_skips_values_that_are_not_finite_and_caps_the_features() -> None:
    rng = np.random.default_rng(SEED)
    features = rng.normal(size=(40, 1030))
    features[:5, 0] = np.nan
    features[:, 1] = np.nan

    found = baseline.compute(features, [f"f{i}" for i in range(1030)], bins=300)

    assert len(found.features) == baseline.MAX_FEATURES - 1  # the first 1024 columns, less the all-NaN one
    assert found.features[0].name == "f0"
    assert sum(found.features[0].counts) == 35
    assert found.features[1].name == "f2"
    assert len(found.features[1].counts) == baseline.MAX_BINS


def test_the_result_file_fits_4096_bytes_by_shedding_feature_names_first(tmp_path: pathlib.Path) -> None:
    rng = np.random.default_rng(SEED)
    columns = [f"a-rather-long-feature-name-number-{i:04d}" for i in range(150)]
    rows = ["{},{}".format(",".join(f"{v:.3f}" for v in rng.normal(size=150)), i % 2) for i in range(60)]
    path = tmp_path / "wide.csv"
    path.write_text(",".join([*columns, "label"]) + "\n" + "\n".join(rows) + "\n")
    spec = {
        "estimator": "sklearn.tree.DecisionTreeClassifier",
        "dataset": {"uri": f"file://{path}"},
        "targetColumn": "label",
    }

    result, log = train(tmp_path, spec)

    written = (tmp_path / "output" / "result.json").read_bytes()
    assert len(written) <= trainingjob.RESULT_MESSAGE_LIMIT
    assert trainingjob.TrainingResult.model_validate_json(written) == result
    assert result.signature is not None
    assert result.signature.feature_names == []
    assert result.lineage is not None
    assert result.lineage.parameters  # shedding the feature names was enough
    assert set(result.metrics) == {"accuracy", "f1_macro", "precision_macro", "recall_macro", "roc_auc"}
    assert any("leaves out signature.featureNames" in line for line in log.lines)


def test_a_restart_with_a_checkpoint_resumes_without_fitting_and_writes_the_same_artifact(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = sklearn_spec("sklearn.ensemble.RandomForestClassifier", "iris", n_estimators=5)
    checkpoints = str(tmp_path / "checkpoints")
    api = registration.InMemoryModelVersions()
    first, first_log = train(tmp_path, spec, api, KILN_CHECKPOINT_DIR=checkpoints)

    def refit(*args: object) -> None:
        raise AssertionError("fitted again")

    monkeypatch.setattr(RandomForestClassifier, "fit", refit)
    second, second_log = train(tmp_path, spec, api, KILN_CHECKPOINT_DIR=checkpoints)

    assert any(line.startswith("checkpointed") for line in first_log.lines)
    assert any(line.startswith("resumed from the checkpoint") for line in second_log.lines)
    assert second == first
    assert any("was already registered with this artifact" in line for line in second_log.lines)


def test_a_checkpoint_of_another_spec_is_not_used(tmp_path: pathlib.Path) -> None:
    checkpoints = str(tmp_path / "checkpoints")
    train(
        tmp_path,
        sklearn_spec("sklearn.tree.DecisionTreeClassifier", "iris"),
        output=False,
        KILN_CHECKPOINT_DIR=checkpoints,
    )

    _, log = train(
        tmp_path,
        sklearn_spec("sklearn.tree.DecisionTreeClassifier", "iris", max_depth=2),
        output=False,
        KILN_CHECKPOINT_DIR=checkpoints,
    )

    assert "fitting from the start: the checkpoint is of another spec or dataset" in log.lines


def test_the_same_seeded_spec_writes_the_same_artifact_bytes(tmp_path: pathlib.Path) -> None:
    spec = sklearn_spec("sklearn.ensemble.RandomForestClassifier", "iris", n_estimators=5)
    first, _ = train(tmp_path / "a", spec)
    second, _ = train(tmp_path / "b", spec)

    assert first.artifact is not None
    assert second.artifact is not None
    assert first.artifact.sha256 == second.artifact.sha256


def test_registering_over_a_version_with_another_artifact_fails_naming_both_digests(tmp_path: pathlib.Path) -> None:
    api = registration.InMemoryModelVersions()
    first, _ = train(tmp_path, sklearn_spec("sklearn.tree.DecisionTreeClassifier", "iris"), api)

    with pytest.raises(errors.TrainerError, match="already exists with artifact sha256") as refused:
        train(tmp_path, sklearn_spec("sklearn.tree.DecisionTreeClassifier", "iris", max_depth=1), api)

    assert first.artifact is not None
    assert first.artifact.sha256 in str(refused.value)
    assert "new output.version" in str(refused.value)


def test_a_version_with_build_metadata_gets_a_valid_object_name() -> None:
    output = trainingjob.Output(model_name="iris", version="2.0.0-RC.1+build.7")

    assert output.model_version_name() == "iris-2.0.0-rc.1-build.7"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "KILN_SKLEARN is not set"),
        ({"KILN_SKLEARN": "{"}, "KILN_SKLEARN is not JSON"),
        ({"KILN_SKLEARN": '{"estimator": "sklearn.tree.DecisionTreeClassifier"}'}, "KILN_SKLEARN: sklearn.dataset:"),
        (
            {"KILN_SKLEARN": json.dumps(sklearn_spec("sklearn.tree.DecisionTreeClassifier", "iris", test_size=2.0))},
            "KILN_SKLEARN: sklearn.testSize:",
        ),
        (
            {
                "KILN_SKLEARN": json.dumps(sklearn_spec("sklearn.tree.DecisionTreeClassifier", "iris")),
                "KILN_OUTPUT": '{"modelName": "iris", "version": "1.0.0"}',
            },
            "KILN_OUTPUT is set, so KILN_ARTIFACT_URI, KILN_ARTIFACT_PATH, KILN_NAMESPACE",
        ),
        (
            {
                "KILN_SKLEARN": json.dumps(sklearn_spec("sklearn.tree.DecisionTreeClassifier", "iris")),
                "KILN_CODE_COMMIT": "abc1234",
            },
            "KILN_CODE_REPOSITORY and KILN_CODE_COMMIT go together",
        ),
    ],
)
def test_a_bad_environment_is_refused_naming_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(errors.TrainerError, match=message):
        settings.Settings.from_environment(environ)


def test_main_exits_non_zero_with_the_reason_as_the_last_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    result_file = tmp_path / "result.json"
    result_file.write_text('{"metrics": {"accuracy": 1.0}}')  # what a previous run left
    monkeypatch.setenv("KILN_SKLEARN", json.dumps(sklearn_spec("sklearn.utils.Bunch", "iris")))
    monkeypatch.setenv("KILN_RESULT_FILE", str(result_file))
    monkeypatch.delenv("KILN_OUTPUT", raising=False)

    code = kiln.runtime.trainer.main([])

    out, err = capsys.readouterr()
    assert code == 1
    assert out.splitlines()[0] == "kiln-trainer: loading dataset sklearn://iris"
    assert err.splitlines()[-1] == (
        "kiln-trainer: failed: sklearn.estimator: sklearn.utils.Bunch is not a scikit-learn estimator class"
    )
    assert result_file.read_bytes() == b""


def test_canonical_skops_bytes_load_back_to_the_same_model() -> None:
    features, target = sk_datasets.load_iris(return_X_y=True)
    model = RandomForestClassifier(n_estimators=5, random_state=SEED).fit(features, target)

    data = artifact.dumps(model)

    loaded = artifact.loads_trusted(data)
    assert loaded.predict(features).tolist() == model.predict(features).tolist()
    assert data == artifact.dumps(RandomForestClassifier(n_estimators=5, random_state=SEED).fit(features, target))


class TerminatedError(Exception):
    """SIGTERM, arriving right after the fit."""


def test_a_sigterm_after_the_fit_checkpoints_it_so_the_next_pod_resumes_without_fitting(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = sklearn_spec("sklearn.ensemble.RandomForestClassifier", "iris", n_estimators=5)
    checkpoints = str(tmp_path / "checkpoints")
    unsaved = run.Unsaved()

    def stopped_after_fitting(line: str) -> None:
        if line.startswith("fitted "):
            raise TerminatedError

    with pytest.raises(TerminatedError):
        run.train(
            config(tmp_path, spec, KILN_CHECKPOINT_DIR=checkpoints),
            registration.InMemoryModelVersions,
            stopped_after_fitting,
            unsaved=unsaved,
        )
    said = Log()
    unsaved.save(said)  # what the SIGTERM handler does
    assert said.lines == [f"checkpointed the fitted estimator in {checkpoints}"]

    def refit(*args: object) -> None:
        raise AssertionError("fitted again")

    monkeypatch.setattr(RandomForestClassifier, "fit", refit)
    _, log = train(tmp_path, spec, KILN_CHECKPOINT_DIR=checkpoints)
    assert any(line.startswith("resumed from the checkpoint") for line in log.lines)


@pytest.mark.parametrize(
    ("checkpointed", "said"),
    [
        pytest.param(True, "nothing to checkpoint: no fit finished since the last checkpoint", id="checkpointed"),
        pytest.param(False, "the fit is lost: the job has no spec.checkpoint", id="no-checkpoint-directory"),
    ],
)
def test_a_sigterm_after_a_whole_run_has_nothing_to_save(tmp_path: pathlib.Path, checkpointed: bool, said: str) -> None:
    unsaved = run.Unsaved()
    extra = {"KILN_CHECKPOINT_DIR": str(tmp_path / "checkpoints")} if checkpointed else {}
    run.train(
        config(tmp_path, sklearn_spec("sklearn.tree.DecisionTreeClassifier", "iris"), output=False, **extra),
        registration.InMemoryModelVersions,
        Log(),
        unsaved=unsaved,
    )
    log = Log()
    unsaved.save(log)

    assert log.lines == [said]


def test_a_sigterm_before_any_fit_has_nothing_to_save() -> None:
    log = Log()
    run.Unsaved().save(log)

    assert log.lines == ["nothing to checkpoint: no fit finished since the last checkpoint"]
