"""How the registry's commands name a ModelVersion, the way kubectl names objects."""

from __future__ import annotations

import click
import pytest

from kiln import registry_cli


@pytest.mark.parametrize(
    "reference",
    [
        "mv/iris-1",
        "modelversion/iris-1",
        "modelversions/iris-1",
        "ModelVersion/iris-1",
        "modelversions.kiln.dev/iris-1",
        "iris-1",
    ],
)
def test_a_model_version_is_named_as_kubectl_names_it(reference: str) -> None:
    assert registry_cli.model_version_name(reference) == "iris-1"


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("tj/iris-1", "'tj/iris-1' is not a ModelVersion"),
        ("mv/", "'mv/' names no ModelVersion"),
        ("", "'' names no ModelVersion"),
    ],
)
def test_anything_else_is_refused_with_the_form_to_use(reference: str, message: str) -> None:
    with pytest.raises(click.BadParameter, match=message):
        registry_cli.model_version_name(reference)
