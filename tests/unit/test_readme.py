"""The README is the front door: every complete manifest in it must be one the API accepts."""

from __future__ import annotations

import pathlib
import re
import textwrap
from typing import Any

import pytest
import yaml

from kiln.api import crd, resources
from kiln.devcluster import schema

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def readme_manifests() -> list[dict[str, Any]]:
    """Kiln's manifests in the README's YAML blocks (blocks inside a list item are indented, and a
    block may hold several documents, other projects' kinds among them)."""
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S)
    documents = [doc for block in blocks for doc in yaml.safe_load_all(textwrap.dedent(block))]
    return [
        doc for doc in documents if isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith("kiln.dev/")
    ]


def test_the_readme_shows_a_manifest_of_each_kind() -> None:
    assert {doc["kind"] for doc in readme_manifests()} == {kind.kind for kind in resources.KINDS}


@pytest.mark.parametrize("manifest", readme_manifests(), ids=lambda doc: f"{doc['kind']}/{doc['metadata']['name']}")
def test_readme_manifest_is_accepted_by_pydantic_and_the_crd_schema(manifest: dict[str, Any]) -> None:
    kind = resources.kind_named(manifest["kind"])
    kind.model.model_validate(manifest)
    open_api = crd.open_api_schema(kind)
    stored = dict(manifest)
    schema.apply_defaults(open_api, stored)
    assert schema.prune(open_api, stored) == []
    assert [str(error) for error in schema.validate(open_api, stored)] == []
