"""The end-to-end tests share one world per module: a dev cluster, a real Prometheus and `kiln run`;
every test works in a namespace of its own."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
from rollout_world import World, rollout_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with rollout_world(tmp_path_factory.mktemp("e2e")) as started:
        yield started


@pytest.fixture
def namespace(world: World, request: pytest.FixtureRequest) -> str:
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:6]
    world.kiln.kubectl("create", "namespace", name)
    world.model_store(name)
    return name
