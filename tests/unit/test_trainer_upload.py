"""kiln-trainer with an object store output: output.store.uri decides where the artifact goes, the
claim's variables are not needed, and an upload that cannot start names the setting."""

from __future__ import annotations

import json

import pytest

from kiln.api import modelversion
from kiln.runtime.trainer import artifact, errors, settings

SKLEARN = {"estimator": "sklearn.linear_model.LogisticRegression", "dataset": {"builtin": "iris"}}
JOB = {"KILN_TRAINING_JOB": "train-iris", "KILN_TRAINING_JOB_UID": "uid-1", "KILN_NAMESPACE": "ml"}


def environ(store: dict[str, str], **extra: str) -> dict[str, str]:
    output = {"modelName": "iris", "version": "1.2.0", "store": store}
    return {"KILN_SKLEARN": json.dumps(SKLEARN), "KILN_OUTPUT": json.dumps(output), **JOB, **extra}


def test_an_object_store_prefix_names_the_artifact_and_needs_no_claim_path() -> None:
    config = settings.Settings.from_environment(
        environ({"uri": "s3://models/kiln/"}, KILN_ARTIFACT_URI="pvc://kiln-models/iris/1.2.0/model.skops")
    )
    assert config.artifact_uri == "s3://models/kiln/iris/1.2.0/model.skops"
    assert config.artifact_path is None


def test_without_a_prefix_the_claim_is_written_as_before() -> None:
    with pytest.raises(errors.TrainerError, match="KILN_ARTIFACT_URI, KILN_ARTIFACT_PATH must be set too"):
        settings.Settings.from_environment(environ({}))


def test_an_upload_without_credentials_names_the_settings() -> None:
    config = settings.Settings.from_environment(environ({"uri": "s3://models/kiln"}))
    assert config.artifact_uri is not None
    recorded = modelversion.Artifact(uri=config.artifact_uri, sha256="0" * 64)
    with pytest.raises(errors.TrainerError) as failed:
        artifact.save(recorded, b"model", config.artifact_path, config.artifact_settings)
    assert str(failed.value).startswith(
        "uploading the artifact failed: s3://models/kiln/iris/1.2.0/model.skops cannot be read or written here: "
        "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (from a Secret)"
    )


def test_an_output_store_uri_must_be_an_s3_prefix() -> None:
    with pytest.raises(errors.TrainerError, match=r"output\.store\.uri: String should match pattern"):
        settings.Settings.from_environment(environ({"uri": "gs://models"}))
