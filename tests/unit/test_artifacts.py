"""The artifact stores: file:// and pvc:// roots, escapes refused, the digest checked on every read."""

from __future__ import annotations

import hashlib
import pathlib
import re

import pytest

from kiln import artifacts

DATA = b"model bytes"
DIGEST = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def pvc_root(tmp_path: pathlib.Path) -> pathlib.Path:
    claim = tmp_path / "volumes" / "ml" / "models"
    (claim / "iris").mkdir(parents=True)
    (claim / "iris" / "model.skops").write_bytes(DATA)
    (tmp_path / "volumes" / "ml" / "other").mkdir()
    (tmp_path / "volumes" / "ml" / "other" / "secret").write_bytes(DATA)
    return tmp_path / "volumes"


def settings(pvc_root: pathlib.Path, **overrides: object) -> artifacts.Settings:
    return artifacts.Settings.from_environment(
        {"KILN_PVC_ROOT": str(pvc_root), **{k: str(v) for k, v in overrides.items()}}
    )


def test_a_pvc_artifact_is_read_from_its_claim_directory_in_its_namespace(pvc_root: pathlib.Path) -> None:
    assert artifacts.read_verified("pvc://models/iris/model.skops", DIGEST, settings(pvc_root), "ml") == DATA
    artifacts.verify("pvc://models/iris/model.skops", DIGEST, settings(pvc_root), "ml")


def test_inside_a_pod_claims_are_mounted_directories(pvc_root: pathlib.Path) -> None:
    mounted = settings(pvc_root / "ml", KILN_PVC_LAYOUT="mounted")
    assert artifacts.read_verified("pvc://models/iris/model.skops", DIGEST, mounted) == DATA


def test_a_file_artifact_is_read_below_the_file_root(pvc_root: pathlib.Path) -> None:
    path = pvc_root / "ml" / "models" / "iris" / "model.skops"
    assert artifacts.read_verified(f"file://{path}", DIGEST, artifacts.Settings()) == DATA
    inside = artifacts.Settings(file_root=pvc_root / "ml" / "models")
    assert artifacts.read_verified(f"file://{path}", DIGEST, inside) == DATA
    outside = artifacts.Settings(file_root=pvc_root / "ml" / "other")
    with pytest.raises(artifacts.UnsafeURIError, match="outside its root"):
        artifacts.verify(f"file://{path}", DIGEST, outside)


def test_bytes_that_are_not_the_pinned_digest_are_refused(pvc_root: pathlib.Path) -> None:
    with pytest.raises(artifacts.DigestMismatchError) as raised:
        artifacts.read_verified("pvc://models/iris/model.skops", "0" * 64, settings(pvc_root), "ml")
    assert raised.value.actual == DIGEST
    assert (
        str(raised.value)
        == f"the sha256 of pvc://models/iris/model.skops is {DIGEST}, not the {'0' * 64} the ModelVersion pins"
    )


@pytest.mark.parametrize(
    "uri",
    ["pvc://models/../other/secret", "pvc://models/iris/../../other/secret", "file:///tmp/../etc/passwd"],
)
def test_a_dotdot_segment_is_refused_outright(pvc_root: pathlib.Path, uri: str) -> None:
    with pytest.raises(artifacts.UnsafeURIError, match=re.escape(f"{uri} has a '..' segment")):
        artifacts.verify(uri, DIGEST, settings(pvc_root), "ml")


def test_a_symlink_out_of_the_claim_is_refused(pvc_root: pathlib.Path) -> None:
    (pvc_root / "ml" / "models" / "link").symlink_to(pvc_root / "ml" / "other" / "secret")
    (pvc_root / "ml" / "models" / "dir").symlink_to(pvc_root / "ml" / "other")
    for uri in ("pvc://models/link", "pvc://models/dir/secret"):
        with pytest.raises(artifacts.UnsafeURIError, match="outside its root"):
            artifacts.verify(uri, DIGEST, settings(pvc_root), "ml")


def test_a_symlink_within_the_claim_is_followed(pvc_root: pathlib.Path) -> None:
    (pvc_root / "ml" / "models" / "latest").symlink_to(pvc_root / "ml" / "models" / "iris")
    assert artifacts.read_verified("pvc://models/latest/model.skops", DIGEST, settings(pvc_root), "ml") == DATA


@pytest.mark.parametrize(
    ("uri", "error", "message"),
    [
        ("pvc://models/iris/absent.skops", artifacts.ArtifactNotFoundError, "no file at"),
        ("pvc://datasets/x.csv", artifacts.ArtifactNotFoundError, "claim datasets has no directory"),
        ("pvc://Bad_Claim/x", artifacts.UnsafeURIError, "'Bad_Claim' is not a PersistentVolumeClaim name"),
        ("pvc://models/iris", artifacts.ArtifactNotFoundError, "models/iris is not a file"),
        ("pvc://models/", artifacts.UnsafeURIError, "names a directory, not a file"),
        (
            "s3://bucket/model.skops",
            artifacts.UnsupportedURIError,
            "no artifact store for s3:// yet; supported: file, pvc",
        ),
        ("gs://bucket/model.skops", artifacts.UnsupportedURIError, "no artifact store for gs:// yet"),
        ("file://host/model.skops", artifacts.UnsupportedURIError, "names host 'host'; file URIs are local"),
        ("models/iris", artifacts.UnsupportedURIError, "is not an artifact URI"),
    ],
)
def test_what_cannot_be_read_says_why(pvc_root: pathlib.Path, uri: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        artifacts.verify(uri, DIGEST, settings(pvc_root), "ml")


def test_pvc_artifacts_need_a_root_and_a_namespace(pvc_root: pathlib.Path) -> None:
    with pytest.raises(artifacts.UnsupportedURIError, match="KILN_PVC_ROOT is not set"):
        artifacts.verify("pvc://models/iris/model.skops", DIGEST, artifacts.Settings.from_environment({}), "ml")
    with pytest.raises(artifacts.UnsupportedURIError, match="the namespace of the claim is not known"):
        artifacts.verify("pvc://models/iris/model.skops", DIGEST, settings(pvc_root))


def test_an_unknown_pvc_layout_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="KILN_PVC_LAYOUT must be namespaced or mounted, not 'flat'"):
        artifacts.Settings.from_environment({"KILN_PVC_LAYOUT": "flat"})
