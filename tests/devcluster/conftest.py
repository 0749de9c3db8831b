"""Fixtures for driving the dev cluster with real clients."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
from collections.abc import Callable, Iterator

import pytest

from kiln.devcluster import cluster

REPO = pathlib.Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
EXAMPLES = REPO / "examples"


@pytest.fixture
def devcluster(tmp_path: pathlib.Path) -> Iterator[cluster.DevCluster]:
    """A fresh dev cluster on a free loopback port, persisting under tmp_path."""
    with cluster.ThreadedDevCluster(tmp_path / "devcluster") as running:
        yield running


Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def kubectl_binary(version: str | None = None) -> str:
    """kubectl, or a versioned `kubectl.1.NN` from PATH or beside the real kubectl binary."""
    name = f"kubectl.{version}" if version else "kubectl"
    found = shutil.which(name)
    default = shutil.which("kubectl")
    if found is None and default is not None:
        beside = pathlib.Path(os.path.realpath(default)).parent / name
        found = str(beside) if beside.exists() else None
    if found is None:
        raise RuntimeError(f"{name} is not on PATH; `make test` installs kubectl where it is missing")
    return found


def available_kubectl_versions() -> list[str]:
    """The versioned kubectl binaries this machine has, oldest first (e.g. ["1.28", "1.33"])."""
    default = shutil.which("kubectl")
    if default is None:
        return []
    folder = pathlib.Path(os.path.realpath(default)).parent
    versions = {path.name.removeprefix("kubectl.") for path in folder.glob("kubectl.1.*")}
    return sorted(versions, key=lambda v: tuple(int(n) for n in v.split(".")))


def make_kubectl(devcluster: cluster.DevCluster, binary: str) -> Kubectl:
    def run(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(devcluster.kubeconfig_path)}
        result = subprocess.run(
            [binary, *args], input=input, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    return run


@pytest.fixture
def kubectl(devcluster: cluster.DevCluster) -> Kubectl:
    """Run the machine's kubectl against the dev cluster; check=False to inspect failures."""
    return make_kubectl(devcluster, kubectl_binary())
