"""Merge patches computed from the state there is and the state wanted, and REST paths."""

from __future__ import annotations

from typing import Any

import pytest

from kiln.api import resources
from kiln.kube import client, patches


@pytest.mark.parametrize(
    ("old", "new", "patch"),
    [
        ({}, {"phase": "Validated"}, {"phase": "Validated"}),
        ({"phase": "Validated"}, {"phase": "Validated"}, {}),
        (
            {"phase": "Validating", "message": "reading"},
            {"phase": "Validated"},
            {"phase": "Validated", "message": None},
        ),
        ({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}}, {"a": {"c": 3}}),
        ({"a": {"b": 1}}, {"a": {}}, {"a": {"b": None}}),
        ({"list": [1, 2]}, {"list": [1, 2, 3]}, {"list": [1, 2, 3]}),
        ({"a": "text"}, {"a": {"b": 1}}, {"a": {"b": 1}}),
    ],
)
def test_merge_patch_turns_old_into_new(old: dict[str, Any], new: dict[str, Any], patch: dict[str, Any]) -> None:
    assert patches.merge_patch(old, new) == patch


def test_resource_paths_follow_the_rest_api() -> None:
    model_versions = client.kiln_resource(resources.MODEL_VERSION)
    assert (
        model_versions.path("ml", "iris-1", "status")
        == "/apis/kiln.dev/v1alpha1/namespaces/ml/modelversions/iris-1/status"
    )
    assert model_versions.path(None) == "/apis/kiln.dev/v1alpha1/modelversions"
    assert client.EVENTS.path("ml") == "/api/v1/namespaces/ml/events"
    assert client.SELF_SUBJECT_REVIEWS.path("ml") == "/apis/authentication.k8s.io/v1/selfsubjectreviews"
