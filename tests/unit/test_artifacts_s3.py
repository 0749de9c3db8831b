"""The s3:// store's settings, read from the standard AWS_* environment: what is missing or wrong is
named, secrets are never shown, and multipart parts fit S3's limits. (The store itself is tested
against a real S3 protocol server in tests/integration/test_s3_store.py.)"""

from __future__ import annotations

import re

import pytest

from kiln import artifacts
from kiln.artifacts import s3

KEYS = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "very-secret-value"}


def test_the_standard_variables_configure_the_store() -> None:
    settings = s3.S3Settings.from_environment(
        {**KEYS, "AWS_ENDPOINT_URL": "http://minio.storage:9000", "AWS_DEFAULT_REGION": "eu-central-1"}
    )
    assert settings.problem is None
    assert settings.config() == {
        "region": "eu-central-1",
        "virtual_hosted_style_request": False,
        "endpoint": "http://minio.storage:9000",
        "access_key_id": "AKIAEXAMPLE",
        "secret_access_key": "very-secret-value",
    }
    assert settings.client_options()["allow_http"] is True


def test_the_service_specific_endpoint_and_region_win() -> None:
    settings = s3.S3Settings.from_environment(
        {
            **KEYS,
            "AWS_ENDPOINT_URL": "https://general.example",
            "AWS_ENDPOINT_URL_S3": "https://s3.example",
            "AWS_REGION": "ap-south-1",
            "AWS_DEFAULT_REGION": "eu-central-1",
            "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "true",
        }
    )
    assert (settings.endpoint, settings.endpoint_setting, settings.region) == (
        "https://s3.example",
        "AWS_ENDPOINT_URL_S3",
        "ap-south-1",
    )
    assert settings.virtual_hosted_style
    assert settings.client_options()["allow_http"] is False


def test_aws_itself_in_us_east_1_needs_nothing_but_credentials() -> None:
    settings = s3.S3Settings.from_environment(KEYS)
    assert (settings.endpoint, settings.region, settings.problem) == (None, "us-east-1", None)


def test_irsa_is_a_credential_source() -> None:
    settings = s3.S3Settings.from_environment(
        {
            "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token",
            "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/kiln-trainer",
        }
    )
    assert settings.problem is None
    assert settings.credential_source == "AWS_WEB_IDENTITY_TOKEN_FILE"
    assert settings.config()["role_arn"] == "arn:aws:iam::123456789012:role/kiln-trainer"


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({}, "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (from a Secret)"),
        ({"AWS_ACCESS_KEY_ID": "AKIA"}, "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"),
        ({"AWS_SECRET_ACCESS_KEY": "x"}, "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not"),
        ({"AWS_ROLE_ARN": "arn:aws:iam::1:role/r"}, "AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN go together"),
        ({**KEYS, "AWS_ENDPOINT_URL": "minio:9000"}, "AWS_ENDPOINT_URL must be an http:// or https:// URL"),
        ({**KEYS, "AWS_ENDPOINT_URL_S3": "minio:9000"}, "AWS_ENDPOINT_URL_S3 must be an http:// or https:// URL"),
    ],
)
def test_a_missing_or_wrong_setting_is_named(environ: dict[str, str], problem: str) -> None:
    settings = artifacts.Settings.from_environment(environ)
    assert settings.s3.problem is not None
    assert settings.s3.problem.startswith(problem)
    with pytest.raises(artifacts.StoreUnavailableError, match=re.escape("s3://models/m.skops cannot be read")):
        artifacts.verify("s3://models/m.skops", "0" * 64, settings)


def test_no_credential_is_in_the_settings_repr() -> None:
    shown = repr(
        artifacts.Settings.from_environment({**KEYS, "AWS_SESSION_TOKEN": "session-secret", "AWS_REGION": "eu-west-1"})
    )
    assert "eu-west-1" in shown
    assert "AKIAEXAMPLE" not in shown
    assert "very-secret-value" not in shown
    assert "session-secret" not in shown


@pytest.mark.parametrize("uri", ["s3://models", "s3://models/", "s3:///key", "s3://models/prefix/"])
def test_an_s3_uri_names_a_bucket_and_a_key(uri: str) -> None:
    with pytest.raises(artifacts.UnsupportedURIError, match="an S3 artifact URI is s3://bucket/key"):
        artifacts.verify(uri, "0" * 64, artifacts.Settings.from_environment(KEYS))


@pytest.mark.parametrize(
    ("size", "part"),
    [(0, 8 << 20), (80 << 30, 9 << 20), (200 << 30, 21 << 20), (5 << 40, 525 << 20)],
)
def test_parts_are_at_least_8_mib_and_fit_10000_parts(size: int, part: int) -> None:
    assert s3.part_size(size) == part
    assert size <= part * s3.MAX_PARTS
