"""Kiln's operator (`kiln run`, a real subprocess) against a dev cluster with Kiln's CRDs.

One cluster and one operator serve a whole test module; every test works in a namespace of its
own, so tests never see each other's ModelVersions. The operator is always stopped, and a
traceback in its log fails the module.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
from kiln_cluster import Kiln, operated_cluster


@pytest.fixture(scope="module")
def kiln(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kiln]:
    """A dev cluster with the CRDs applied and `kiln run` watching every namespace."""
    with operated_cluster(tmp_path_factory.mktemp("kiln")) as setup:
        yield setup


@pytest.fixture
def namespace(kiln: Kiln, request: pytest.FixtureRequest) -> str:
    """A namespace of the test's own."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:6]
    kiln.kubectl("create", "namespace", name)
    return name
