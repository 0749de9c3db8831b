"""The artifact stores: file:// and pvc:// roots, escapes refused, the digest checked on every read,
downloads that land only when their digest matches, and the cache that keeps them."""

from __future__ import annotations

import hashlib
import pathlib
import re
import tempfile

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


def read_verified(uri: str, digest: str, settings: artifacts.Settings, namespace: str | None = None) -> bytes:
    """The artifact's bytes, downloaded beside the test's other files once their digest matched."""
    with tempfile.TemporaryDirectory() as directory:
        destination = pathlib.Path(directory) / "artifact"
        artifacts.download_verified(uri, digest, destination, settings, namespace)
        return destination.read_bytes()


def settings(pvc_root: pathlib.Path, **overrides: object) -> artifacts.Settings:
    return artifacts.Settings.from_environment(
        {"KILN_PVC_ROOT": str(pvc_root), **{k: str(v) for k, v in overrides.items()}}
    )


def test_a_pvc_artifact_is_read_from_its_claim_directory_in_its_namespace(pvc_root: pathlib.Path) -> None:
    assert read_verified("pvc://models/iris/model.skops", DIGEST, settings(pvc_root), "ml") == DATA
    assert artifacts.verify("pvc://models/iris/model.skops", DIGEST, settings(pvc_root), "ml") == len(DATA)


def test_inside_a_pod_claims_are_mounted_directories(pvc_root: pathlib.Path) -> None:
    mounted = settings(pvc_root / "ml", KILN_PVC_LAYOUT="mounted")
    assert read_verified("pvc://models/iris/model.skops", DIGEST, mounted) == DATA


def test_a_file_artifact_is_read_below_the_file_root(pvc_root: pathlib.Path) -> None:
    path = pvc_root / "ml" / "models" / "iris" / "model.skops"
    assert read_verified(f"file://{path}", DIGEST, artifacts.Settings()) == DATA
    inside = artifacts.Settings(file_root=pvc_root / "ml" / "models")
    assert read_verified(f"file://{path}", DIGEST, inside) == DATA
    outside = artifacts.Settings(file_root=pvc_root / "ml" / "other")
    with pytest.raises(artifacts.UnsafeURIError, match="outside its root"):
        artifacts.verify(f"file://{path}", DIGEST, outside)


def test_bytes_that_are_not_the_pinned_digest_are_refused(pvc_root: pathlib.Path) -> None:
    with pytest.raises(artifacts.DigestMismatchError) as raised:
        read_verified("pvc://models/iris/model.skops", "0" * 64, settings(pvc_root), "ml")
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
    assert read_verified("pvc://models/latest/model.skops", DIGEST, settings(pvc_root), "ml") == DATA


@pytest.mark.parametrize(
    ("uri", "error", "message"),
    [
        ("pvc://models/iris/absent.skops", artifacts.ArtifactNotFoundError, "no file at"),
        ("pvc://datasets/x.csv", artifacts.ArtifactNotFoundError, "claim datasets has no directory"),
        ("pvc://Bad_Claim/x", artifacts.UnsafeURIError, "'Bad_Claim' is not a PersistentVolumeClaim name"),
        ("pvc://models/iris", artifacts.ArtifactNotFoundError, "models/iris is not a file"),
        ("pvc://models/", artifacts.UnsafeURIError, "names a directory, not a file"),
        (
            "gs://bucket/model.skops",
            artifacts.UnsupportedURIError,
            "no artifact store for gs:// yet; supported: file, pvc, s3",
        ),
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


def test_a_download_with_another_digest_leaves_nothing_behind(tmp_path: pathlib.Path, pvc_root: pathlib.Path) -> None:
    destination = tmp_path / "cache" / "model.skops"
    with pytest.raises(artifacts.DigestMismatchError):
        artifacts.download_verified("pvc://models/iris/model.skops", "0" * 64, destination, settings(pvc_root), "ml")
    assert list(destination.parent.iterdir()) == []


def test_a_download_replaces_its_destination_only_once_verified(tmp_path: pathlib.Path, pvc_root: pathlib.Path) -> None:
    destination = tmp_path / "model.skops"
    destination.write_bytes(b"the previous model")
    with pytest.raises(artifacts.DigestMismatchError):
        artifacts.download_verified("pvc://models/iris/model.skops", "0" * 64, destination, settings(pvc_root), "ml")
    assert destination.read_bytes() == b"the previous model"
    artifacts.download_verified("pvc://models/iris/model.skops", DIGEST, destination, settings(pvc_root), "ml")
    assert destination.read_bytes() == DATA
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.skops", "volumes"]


def test_the_cache_keeps_a_verified_artifact_by_its_digest(tmp_path: pathlib.Path, pvc_root: pathlib.Path) -> None:
    uri, cache = "pvc://models/iris/model.skops", tmp_path / "cache"
    path = artifacts.cached(uri, DIGEST, cache, settings(pvc_root), "ml")
    assert path == cache / DIGEST
    assert path.read_bytes() == DATA
    # The store's copy is gone: the cached one, still matching, is used without reading the store.
    (pvc_root / "ml" / "models" / "iris" / "model.skops").unlink()
    assert artifacts.cached(uri, DIGEST, cache, settings(pvc_root), "ml").read_bytes() == DATA


def test_a_cached_file_that_no_longer_matches_is_fetched_again(tmp_path: pathlib.Path, pvc_root: pathlib.Path) -> None:
    uri, cache = "pvc://models/iris/model.skops", tmp_path / "cache"
    cache.mkdir()
    (cache / DIGEST).write_bytes(b"damaged on disk")
    assert artifacts.cached(uri, DIGEST, cache, settings(pvc_root), "ml").read_bytes() == DATA


def test_a_large_artifact_streams_in_chunks(tmp_path: pathlib.Path) -> None:
    data = bytes(range(256)) * (3 * artifacts.CHUNK_SIZE // 256 + 7)
    path = tmp_path / "large.bin"
    path.write_bytes(data)
    chunks = list(artifacts.store_for(f"file://{path}", artifacts.Settings()).chunks(f"file://{path}"))
    assert max(len(chunk) for chunk in chunks) <= artifacts.CHUNK_SIZE
    assert len(chunks) == 4
    assert b"".join(chunks) == data


def test_local_stores_are_not_uploaded_to(pvc_root: pathlib.Path) -> None:
    with pytest.raises(artifacts.UnsupportedURIError, match="written through a mounted volume, not uploaded"):
        artifacts.write("pvc://models/iris/model.skops", DATA, settings(pvc_root))
