"""The dev cluster's downward API volumes: written when the pod starts, and rewritten when its
labels or annotations change under it, as the kubelet's sync loop does."""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import pytest

from kiln.devcluster import podenv, volumes

Object = dict[str, Any]
PREEMPTED = {"path": "preempted", "fieldRef": {"fieldPath": "metadata.annotations['kiln.dev/preempted']"}}
LABELS = {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}


def pod(annotations: dict[str, str] | None = None) -> Object:
    return {
        "metadata": {"name": "bert-worker-0", "namespace": "ml", "labels": {"rank": "0"}, "annotations": annotations},
        "spec": {
            "containers": [{"name": "trainer"}],
            "volumes": [
                {"name": "podinfo", "downwardAPI": {"items": [PREEMPTED]}},
                {"name": "projected", "projected": {"sources": [{"downwardAPI": {"items": [LABELS]}}]}},
                {"name": "scratch", "emptyDir": {}},
            ],
        },
    }


def started(tmp_path: pathlib.Path, body: Object) -> dict[str, pathlib.Path]:
    return volumes.prepare(body, tmp_path / "pod", tmp_path / "claims", lambda kind, name: None, "token")


def test_an_annotation_set_on_a_running_pod_reaches_its_downward_api_file(tmp_path: pathlib.Path) -> None:
    directories = started(tmp_path, pod())
    assert (directories["podinfo"] / "preempted").read_text() == ""

    volumes.refresh(pod({"kiln.dev/preempted": "ml/urgent"}), directories)

    assert (directories["podinfo"] / "preempted").read_text() == "ml/urgent"


def test_projected_downward_api_files_are_refreshed_too(tmp_path: pathlib.Path) -> None:
    directories = started(tmp_path, pod())
    changed = pod()
    changed["metadata"]["labels"]["attempt"] = "2"

    volumes.refresh(changed, directories)

    assert (directories["projected"] / "labels").read_text() == 'attempt="2"\nrank="0"'


def test_a_file_whose_value_did_not_change_is_left_alone(tmp_path: pathlib.Path) -> None:
    body = pod({"kiln.dev/preempted": "ml/urgent"})
    directories = started(tmp_path, body)
    before = (directories["podinfo"] / "preempted").stat().st_ino

    volumes.refresh(copy.deepcopy(body), directories)

    assert (directories["podinfo"] / "preempted").stat().st_ino == before
    assert sorted(path.name for path in directories["podinfo"].iterdir()) == ["preempted"]


def test_a_pod_whose_volumes_are_not_set_up_yet_is_skipped(tmp_path: pathlib.Path) -> None:
    volumes.refresh(pod({"kiln.dev/preempted": "ml/urgent"}), {})

    assert not (tmp_path / "pod").exists()


def config_map_pod(*paths: str) -> Object:
    items = [{"key": "settings", "path": path} for path in paths]
    body = pod()
    body["spec"]["volumes"] = [{"name": "config", "configMap": {"name": "app", "items": items}}]
    return body


def written(tmp_path: pathlib.Path, body: Object) -> dict[str, pathlib.Path]:
    config_map = {"metadata": {"name": "app"}, "data": {"settings": "x=1"}}
    return volumes.prepare(body, tmp_path / "pod", tmp_path / "claims", lambda kind, name: config_map, "token")


def test_a_config_map_item_lands_at_its_path_nested_or_not(tmp_path: pathlib.Path) -> None:
    directories = written(tmp_path, config_map_pod("app.conf", "deep/er/app.conf"))

    assert (directories["config"] / "app.conf").read_text() == "x=1"
    assert (directories["config"] / "deep" / "er" / "app.conf").read_text() == "x=1"


@pytest.mark.parametrize("path", ["../outside", "a/../../outside", "/etc/outside"])
def test_an_item_path_that_leaves_its_volume_is_refused_and_nothing_is_written_outside(
    tmp_path: pathlib.Path, path: str
) -> None:
    with pytest.raises(podenv.ConfigError, match="escapes its volume"):
        written(tmp_path, config_map_pod(path))

    assert not (tmp_path / "pod" / "volumes" / "outside").exists()
    assert not (tmp_path / "outside").exists()


def test_volumes_not_written_are_still_looked_up_and_nothing_is_made(tmp_path: pathlib.Path) -> None:
    body = config_map_pod("app.conf")

    with pytest.raises(podenv.ConfigError, match='configmap "app" not found'):
        volumes.prepare(body, tmp_path / "pod", tmp_path / "claims", lambda kind, name: None, "token", write=False)
    found = {"metadata": {"name": "app"}, "data": {"settings": "x=1"}}
    directories = volumes.prepare(
        body, tmp_path / "pod", tmp_path / "claims", lambda kind, name: found, "t", write=False
    )

    assert directories == {}
    assert not (tmp_path / "pod").exists()
