"""The dev cluster keeps its state across restarts over the same data directory.

Objects come back intact with the resourceVersions they had, the counter goes
on from where it stopped, watches resume from versions written before the
restart, and the relations the control plane tracks (owners, finalizers,
terminating namespaces, CRD types) still work. `kiln cluster start|kubeconfig|stop`
run the same thing as a background process.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
from collections.abc import Iterator
from typing import Any, TypeVar

import httpx
import yaml
from conftest import process_exists
from polling import eventually

from kiln.devcluster import cluster

REPO = pathlib.Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
EXAMPLES = REPO / "examples"
KILN = REPO / ".venv" / "bin" / "kiln"
MV = "/apis/kiln.dev/v1alpha1/namespaces/keep/modelversions"
CM = "/api/v1/namespaces/keep/configmaps"
MERGE = {"Content-Type": "application/merge-patch+json"}
WAIT_SECONDS = 10.0

# Every collection whose objects must come back unchanged.
COLLECTIONS = (
    "/api/v1/namespaces",
    "/api/v1/configmaps",
    "/api/v1/serviceaccounts",
    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
    "/apis/kiln.dev/v1alpha1/modelversions",
    "/apis/kiln.dev/v1alpha1/trainingjobs",
)

T = TypeVar("T")


@contextlib.contextmanager
def running(data_dir: pathlib.Path) -> Iterator[httpx.Client]:
    """A dev cluster over data_dir and an HTTP client for it; stopped on exit."""
    with cluster.ThreadedDevCluster(data_dir) as dev, httpx.Client(base_url=dev.url, timeout=WAIT_SECONDS) as http:
        yield http


def ok(response: httpx.Response, code: int = 200) -> dict[str, Any]:
    assert response.status_code == code, response.text
    body: dict[str, Any] = response.json()
    return body


def rv(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["resourceVersion"])


def model_version(name: str, **metadata: Any) -> dict[str, Any]:
    manifest = yaml.safe_load((EXAMPLES / "model-registry" / "modelversion.yaml").read_text())
    manifest["metadata"] = {"name": name, **metadata}
    return manifest


def configmap(name: str, **metadata: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, **metadata}, "data": {"k": name}}


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    metadata = owner["metadata"]
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": metadata["name"], "uid": metadata["uid"]}


def snapshot(http: httpx.Client) -> dict[str, list[dict[str, Any]]]:
    return {path: ok(http.get(path))["items"] for path in COLLECTIONS}


def watch_events(http: httpx.Client, path: str, since: int) -> list[tuple[str, str, int]]:
    params = {"watch": "true", "resourceVersion": str(since), "timeoutSeconds": "1"}
    with http.stream("GET", path, params=params) as response:
        assert response.status_code == 200, response.read()
        lines = [json.loads(line) for line in response.iter_lines() if line.strip()]
    return [(e["type"], e["object"]["metadata"]["name"], rv(e["object"])) for e in lines]


def test_objects_come_back_with_their_resource_versions_and_relations_after_a_restart(
    tmp_path: pathlib.Path,
) -> None:
    data_dir = tmp_path / "state"
    with running(data_dir) as http:
        for path in sorted(CRDS.glob("*.yaml")):
            ok(
                http.post(
                    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=yaml.safe_load(path.read_text())
                ),
                201,
            )
        ok(
            http.post(
                "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "keep"}}
            ),
            201,
        )
        owner = ok(http.post(MV, json=model_version("owner")), 201)
        ok(http.patch(f"{MV}/owner/status", json={"status": {"phase": "Validating"}}, headers=MERGE))
        ok(http.post(MV, json=model_version("held", finalizers=["kiln.dev/test-hold"])), 201)
        ok(http.delete(f"{MV}/held"))
        ok(http.post(CM, json=configmap("plain", labels={"app": "kiln"})), 201)
        ok(http.post(CM, json=configmap("child", ownerReferences=[owner_reference(owner)])), 201)
        ok(http.patch(f"{CM}/plain", json={"data": {"k": "changed"}}, headers=MERGE))
        before = snapshot(http)
        version_before = int(ok(http.get("/api/v1/namespaces"))["metadata"]["resourceVersion"])
        newest_before = max(rv(obj) for items in before.values() for obj in items)
        assert newest_before <= version_before

    with running(data_dir) as http:
        after = snapshot(http)
        for path in COLLECTIONS:
            assert after[path] == before[path], path
        names = {obj["metadata"]["name"] for obj in after["/api/v1/namespaces"]}
        assert {"keep", "default", "kube-system"} <= names
        mvs = {obj["metadata"]["name"]: obj for obj in after["/apis/kiln.dev/v1alpha1/modelversions"]}
        assert mvs["owner"]["status"]["phase"] == "Validating"
        assert mvs["held"]["metadata"]["deletionTimestamp"]
        assert int(ok(http.get("/api/v1/namespaces"))["metadata"]["resourceVersion"]) >= version_before

        # the counter goes on from where it stopped
        fresh = ok(http.post(CM, json=configmap("fresh")), 201)
        assert rv(fresh) > version_before
        patched = ok(http.patch(f"{CM}/plain", json={"data": {"k": "after restart"}}, headers=MERGE))
        assert rv(patched) > rv(fresh)

        # the CRDs' types are served again, with their schemas
        bad = model_version("bad")
        bad["spec"]["requiredApprovals"] = "two"
        assert http.post(MV, json=bad).status_code == 422

        # a finalizer still holds, and releasing it still deletes
        ok(http.patch(f"{MV}/held", json={"metadata": {"finalizers": None}}, headers=MERGE))
        eventually(lambda: http.get(f"{MV}/held").status_code == 404, "the released object to go")

        # ownership is still known: deleting the owner collects its dependent
        ok(http.delete(f"{MV}/owner"))
        eventually(lambda: http.get(f"{CM}/child").status_code == 404, "the dependent to be collected")
        assert http.get(f"{CM}/plain").status_code == 200

        # the namespace can still be deleted with its contents
        ok(http.delete("/api/v1/namespaces/keep"))
        eventually(lambda: http.get("/api/v1/namespaces/keep").status_code == 404, "the namespace to go")
        assert ok(http.get(CM))["items"] == []


def test_deletions_in_progress_finish_after_a_restart(tmp_path: pathlib.Path) -> None:
    data_dir = tmp_path / "state"
    default = "/api/v1/namespaces/default/configmaps"
    closing = "/api/v1/namespaces/closing/configmaps"
    with running(data_dir) as http:
        owner = ok(http.post(default, json=configmap("owner")), 201)
        reference = owner_reference(owner)
        ok(
            http.post(default, json=configmap("dependent", ownerReferences=[reference], finalizers=["kiln.dev/hold"])),
            201,
        )
        ok(http.delete(f"{default}/owner", params={"propagationPolicy": "Foreground"}))
        assert ok(http.get(f"{default}/owner"))["metadata"]["finalizers"] == ["foregroundDeletion"]

        ok(
            http.post(
                "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "closing"}}
            ),
            201,
        )
        ok(http.post(closing, json=configmap("held", finalizers=["kiln.dev/hold"])), 201)
        ok(http.delete("/api/v1/namespaces/closing"))
        assert ok(http.get("/api/v1/namespaces/closing"))["status"]["phase"] == "Terminating"

    with running(data_dir) as http:
        assert ok(http.get(f"{default}/owner"))["metadata"]["deletionTimestamp"]
        assert ok(http.get("/api/v1/namespaces/closing"))["status"]["phase"] == "Terminating"

        ok(http.patch(f"{default}/dependent", json={"metadata": {"finalizers": None}}, headers=MERGE))
        eventually(lambda: http.get(f"{default}/dependent").status_code == 404, "the dependent to go")
        eventually(lambda: http.get(f"{default}/owner").status_code == 404, "the foreground owner to go")

        ok(http.patch(f"{closing}/held", json={"metadata": {"finalizers": None}}, headers=MERGE))
        eventually(lambda: http.get("/api/v1/namespaces/closing").status_code == 404, "the namespace to go")


def test_a_watch_resumes_across_a_restart_from_a_version_written_before_it(tmp_path: pathlib.Path) -> None:
    data_dir = tmp_path / "state"
    path = "/api/v1/namespaces/default/configmaps"
    with running(data_dir) as http:
        mark = ok(http.post(path, json=configmap("first")), 201)
        modified = ok(http.patch(f"{path}/first", json={"data": {"k": "v2"}}, headers=MERGE))
        second = ok(http.post(path, json=configmap("second")), 201)
        deleted = ok(http.delete(f"{path}/first"))

    with running(data_dir) as http:
        third = ok(http.post(path, json=configmap("third")), 201)
        events = watch_events(http, path, rv(mark))
        assert events[:3] == [
            ("MODIFIED", "first", rv(modified)),
            ("ADDED", "second", rv(second)),
            ("DELETED", "first", events[2][2]),
        ]
        assert events[3:] == [("ADDED", "third", rv(third))]
        assert rv(second) < events[2][2] < rv(third)
        assert deleted["metadata"]["name"] == "first"
        # and from the last version written before the restart: only what came after
        assert watch_events(http, path, events[2][2]) == [("ADDED", "third", rv(third))]


async def test_the_async_dev_cluster_keeps_its_state_across_a_restart(tmp_path: pathlib.Path) -> None:
    data_dir = tmp_path / "state"
    path = "/api/v1/namespaces/default/configmaps"
    async with cluster.DevCluster(data_dir) as dev, httpx.AsyncClient(base_url=dev.url) as http:
        created = (await http.post(path, json=configmap("kept", labels={"a": "b"}))).json()
        assert created["metadata"]["resourceVersion"]
    async with cluster.DevCluster(data_dir) as dev, httpx.AsyncClient(base_url=dev.url) as http:
        again = await http.get(f"{path}/kept")
        assert again.status_code == 200
        assert again.json() == created
        newer = (await http.post(path, json=configmap("newer"))).json()
        assert rv(newer) > rv(created)


# `kiln cluster start|kubeconfig|stop`


def kiln(*args: str | pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KILN), "cluster", *map(str, args)], capture_output=True, text=True, timeout=90, check=False
    )


def kubectl(kubeconfig: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": kubeconfig}
    binary = shutil.which("kubectl")
    assert binary is not None, "kubectl is not on PATH; `make test` installs it"
    return subprocess.run(
        [binary, "--request-timeout=10s", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_writes_survive_a_killed_dev_cluster_process(tmp_path: pathlib.Path) -> None:
    data_dir = tmp_path / "killed"
    try:
        assert kiln("start", "--data-dir", data_dir).returncode == 0
        url = (data_dir / "url").read_text()
        with httpx.Client(base_url=url, timeout=WAIT_SECONDS) as http:
            written = [ok(http.post(CM.replace("keep", "default"), json=configmap(f"cm-{i}")), 201) for i in range(20)]
        pid = int((data_dir / "devcluster.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        eventually(lambda: not process_exists(pid), "the killed process to be reaped")

        restarted = kiln("start", "--data-dir", data_dir)
        assert restarted.returncode == 0, restarted.stderr
        url = (data_dir / "url").read_text()
        with httpx.Client(base_url=url, timeout=WAIT_SECONDS) as http:
            items = ok(http.get(CM.replace("keep", "default")))["items"]
            assert {obj["metadata"]["name"]: rv(obj) for obj in items} == {
                obj["metadata"]["name"]: rv(obj) for obj in written
            }
            newer = ok(http.post(CM.replace("keep", "default"), json=configmap("after-kill")), 201)
            assert rv(newer) > max(rv(obj) for obj in written)
    finally:
        kiln("stop", "--data-dir", data_dir)


def test_kiln_cluster_start_kubeconfig_stop(tmp_path: pathlib.Path) -> None:
    data_dir = tmp_path / "cli"
    try:
        started = kiln("start", "--data-dir", data_dir)
        assert started.returncode == 0, started.stderr
        assert "dev cluster serving at http://127.0.0.1:" in started.stdout
        pid = int((data_dir / "devcluster.pid").read_text())
        assert process_exists(pid)

        shown = kiln("kubeconfig", "--data-dir", data_dir)
        assert shown.returncode == 0, shown.stderr
        kubeconfig = shown.stdout.strip()
        assert pathlib.Path(kubeconfig) == data_dir / "kubeconfig"
        assert f"KUBECONFIG={kubeconfig}" in started.stdout

        namespaces = kubectl(kubeconfig, "get", "ns", "-o", "name")
        assert namespaces.returncode == 0, namespaces.stderr
        assert {"namespace/default", "namespace/kube-system"} <= set(namespaces.stdout.split())
        manifest = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: made-by-cli\n"
        applied = kubectl(kubeconfig, "apply", "-f", "-", stdin=manifest)
        assert applied.returncode == 0, applied.stderr

        twice = kiln("start", "--data-dir", data_dir)
        assert twice.returncode != 0
        assert "already running" in twice.stderr

        stopped = kiln("stop", "--data-dir", data_dir)
        assert stopped.returncode == 0, stopped.stderr
        assert "dev cluster stopped" in stopped.stdout
        assert not process_exists(pid)
        assert kubectl(kubeconfig, "get", "ns").returncode != 0

        restarted = kiln("start", "--data-dir", data_dir)
        assert restarted.returncode == 0, restarted.stderr
        kubeconfig = kiln("kubeconfig", "--data-dir", data_dir).stdout.strip()
        namespaces = kubectl(kubeconfig, "get", "ns", "made-by-cli", "-o", "jsonpath={.status.phase}")
        assert namespaces.returncode == 0, namespaces.stderr
        assert namespaces.stdout == "Active"

        assert kiln("stop", "--data-dir", data_dir).returncode == 0
        again = kiln("stop", "--data-dir", data_dir)
        assert again.returncode != 0
        assert "no dev cluster is running" in again.stderr
    finally:
        kiln("stop", "--data-dir", data_dir)
