"""Pods as real processes: restarts and back-off, probes, exit codes, pod networking, the
environment and volumes a process sees, graceful deletion, and shutdown.

Each container here runs Python, so the dev cluster's kubelet starts it as a
local process; the tests check both the pod's status in the API and the
process itself (its pid from `containerID`, its output, its signals).
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import itertools
import json
import os
import pathlib
import signal
import time
from typing import Any

import httpx
import pytest
from conftest import (
    Kube,
    StartKube,
    container_pids,
    process_alive,
    process_exists,
    server_script,
)
from kubernetes.client.rest import ApiException
from polling import eventually

from kiln.devcluster import cluster

NS = "default"
WAIT = 20.0
IMAGE = "python:3.12-slim"
POD_NETWORK = ipaddress.ip_network("127.244.0.0/16")
CRASH_SCRIPT = """\
import os, sys, time
with open(sys.argv[1], "a") as starts:
    starts.write(f"{time.time()}\\n")
print(f"crash run pid={os.getpid()}", flush=True)
sys.exit(1)
"""
IGNORE_SIGTERM = """\
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ignoring SIGTERM", flush=True)
time.sleep(600)
"""
LAUNCHER_SCRIPT = """\
import os, signal, subprocess, sys, time
log = sys.argv[1]
def stop(signum, frame):
    with open(log, "a") as lines:
        lines.write(f"term {os.getpid()}\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", log])
with open(log, "a") as lines:
    lines.write(f"start {os.getpid()} {worker.pid} {time.time()}\\n")
worker.wait()
"""
ENV_SCRIPT = """\
import json, os, pathlib, sys
settings, scratch = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
(scratch / "note").write_text("kept in an emptyDir")
names = ["POD_NAME", "POD_NAMESPACE", "POD_IP", "GREETING", "PASSWORD", "MESSAGE", "ESCAPED", "UNKNOWN"]
print(json.dumps({
    "env": {name: os.environ.get(name) for name in names},
    "files": sorted(p.name for p in settings.iterdir()),
    "file": (settings / "file.txt").read_text(),
    "scratch": (scratch / "note").read_text(),
}))
"""
RESOLVE_SCRIPT = """\
import json, socket, sys, time, urllib.request
found, deadline = {}, time.monotonic() + 10
for name in sys.argv[1:]:
    while True:  # a client retries while the cluster's DNS catches up
        try:
            address = socket.gethostbyname(name)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    reply = urllib.request.urlopen(f"http://{name}:8080/", timeout=5).read().decode()
    found[name] = {"address": address, "reply": reply}
print(json.dumps(found))
"""


# Manifests


def pod(name: str, command: list[str], restart: str = "Always", **spec: Any) -> dict[str, Any]:
    labels = spec.pop("labels", {})
    container = {"name": "main", "image": IMAGE, "command": command, **spec.pop("container", {})}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"restartPolicy": restart, "containers": [container], **spec},
    }


def pod_name_env() -> dict[str, Any]:
    return {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}


def server_pod(name: str, script: pathlib.Path, probes: dict[str, Any], labels: dict[str, str], **env: str) -> Any:
    extra_env = [{"name": key, "value": value} for key, value in env.items()]
    container = {"env": [pod_name_env(), *extra_env], "ports": [{"name": "http", "containerPort": 8080}], **probes}
    return pod(name, ["python", str(script)], labels=labels, container=container)


def readiness(path: str = "/healthz") -> dict[str, Any]:
    probe = {"httpGet": {"path": path, "port": "http"}, "periodSeconds": 1, "failureThreshold": 1}
    return {"readinessProbe": probe}


# Reading state


def container_status(kube: Kube, name: str) -> Any:
    (status,) = kube.core.read_namespaced_pod(name, NS).status.container_statuses or [None]
    return status


def wait_phase(kube: Kube, name: str, phase: str) -> Any:
    def check() -> Any:
        found = kube.core.read_namespaced_pod(name, NS)
        return found if found.status.phase == phase else None

    return eventually(check, f"pod {name} to be {phase}", WAIT)


def wait_ready(kube: Kube, name: str, ready: bool = True) -> Any:
    def check() -> Any:
        found = kube.core.read_namespaced_pod(name, NS)
        condition = next((c for c in found.status.conditions or [] if c.type == "Ready"), None)
        is_ready = condition is not None and condition.status == "True"
        return found if found.status.phase == "Running" and is_ready == ready else None

    return eventually(check, f"pod {name} to be {'ready' if ready else 'running, not ready'}", WAIT)


def logs(kube: Kube, name: str, *flags: str) -> str:
    return kube.kubectl("logs", name, *flags).stdout


def events_of(kube: Kube, name: str) -> list[tuple[str, str]]:
    found = kube.core.list_namespaced_event(NS, field_selector=f"involvedObject.name={name}").items
    return [(event.reason, event.message) for event in found]


def endpoint_ips(kube: Kube, service: str) -> tuple[list[str], list[str]]:
    """Ready and not-ready addresses of a Service's Endpoints."""
    subsets = kube.core.read_namespaced_endpoints(service, NS).subsets or []
    ready = sorted(a.ip for s in subsets for a in s.addresses or [])
    unready = sorted(a.ip for s in subsets for a in s.not_ready_addresses or [])
    return ready, unready


def pod_not_found(kube: Kube, name: str) -> bool:
    try:
        kube.core.read_namespaced_pod(name, NS)
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False


# Restarts


def test_a_crashing_container_backs_off_and_keeps_its_previous_log(
    start_kube: StartKube, tmp_path: pathlib.Path
) -> None:
    kube = start_kube({"crashLoopBackOff": {"initialSeconds": 1, "maxSeconds": 4}})
    starts = tmp_path / "starts"
    kube.core.create_namespaced_pod(NS, pod("crasher", ["python", "-c", CRASH_SCRIPT, str(starts)]))

    def backing_off() -> tuple[Any, str] | None:
        """A container in CrashLoopBackOff after two restarts, and its previous log, read consistently."""
        before = container_status(kube, "crasher")
        if before is None or before.restart_count < 2 or not before.state.waiting:
            return None
        if before.state.waiting.reason != "CrashLoopBackOff":
            return None
        previous = logs(kube, "crasher", "--previous")
        after = container_status(kube, "crasher")
        if after.restart_count != before.restart_count or after.state.waiting is None:
            return None  # it restarted meanwhile; look again
        return before, previous

    found = eventually(backing_off, "the container to back off after two restarts", WAIT)
    assert found is not None
    status, previous = found
    assert "back-off" in status.state.waiting.message
    terminated = status.last_state.terminated
    assert (terminated.exit_code, terminated.reason) == (1, "Error")
    assert kube.core.read_namespaced_pod("crasher", NS).status.phase == "Running"
    assert "BackOff" in [reason for reason, _ in events_of(kube, "crasher")]

    def runs() -> list[float]:
        times = [float(stamp) for stamp in starts.read_text().split()]
        return times if len(times) >= 4 else []

    gaps = [later - earlier for earlier, later in itertools.pairwise(eventually(runs, "a fourth run", WAIT))]
    assert gaps[0] < 1.0, gaps  # the first restart is immediate
    assert gaps[1] >= 1.0, gaps  # then initialSeconds
    assert gaps[2] >= 2.0, gaps  # doubling

    # `--previous` is the run lastState describes: the one that just crashed (kubelet's validateContainerLogStatus)
    crashed_pid = terminated.container_id.removeprefix("kiln-process://")
    assert previous == f"crash run pid={crashed_pid}\n"


def test_a_failing_liveness_probe_restarts_the_container(kube: Kube, tmp_path: pathlib.Path) -> None:
    liveness = {"httpGet": {"path": "/fail", "port": "http"}, "initialDelaySeconds": 1, "periodSeconds": 1,
                "failureThreshold": 1}  # fmt: skip
    kube.core.create_namespaced_pod(NS, server_pod("sick", server_script(tmp_path), {"livenessProbe": liveness}, {}))
    (first_pid,) = eventually(lambda: container_pids(wait_phase(kube, "sick", "Running")), "the first process")

    def restarted() -> Any:
        status = container_status(kube, "sick")
        return status if status.restart_count >= 1 and status.last_state.terminated else None

    status = eventually(restarted, "a restart after the liveness probe failed", WAIT)
    assert status.last_state.terminated.container_id == f"kiln-process://{first_pid}"
    assert not process_exists(first_pid)
    events = events_of(kube, "sick")
    assert ("Unhealthy", "Liveness probe failed: HTTP probe failed with statuscode: 500") in events
    assert ("Killing", "Container main failed liveness probe, will be restarted") in events


def test_readiness_decides_ready_and_which_pods_the_service_sends_to(kube: Kube, tmp_path: pathlib.Path) -> None:
    script = server_script(tmp_path)
    probes = readiness("/ready")
    for name in ("blue", "green"):
        created = server_pod(name, script, probes, {"app": "pool"}, READY_FILE=f"{tmp_path}/ready-$(POD_NAME)")
        kube.core.create_namespaced_pod(NS, created)
    kube.core.create_namespaced_service(
        NS,
        {
            "metadata": {"name": "pool"},
            "spec": {"selector": {"app": "pool"}, "ports": [{"port": 80, "targetPort": "http"}]},
        },
    )
    blue, green = (wait_ready(kube, name, ready=False).status.pod_ip for name in ("blue", "green"))
    address = kube.core.read_namespaced_service("pool", NS).spec.cluster_ip
    eventually(lambda: endpoint_ips(kube, "pool") == ([], sorted([blue, green])), "two not-ready endpoints", WAIT)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{address}/", timeout=5)

    (tmp_path / "ready-blue").touch()
    wait_ready(kube, "blue")
    eventually(lambda: endpoint_ips(kube, "pool") == ([blue], [green]), "blue alone ready in the Endpoints", WAIT)
    assert {httpx.get(f"http://{address}/", timeout=5).text for _ in range(4)} == {"blue "}

    (tmp_path / "ready-green").touch()
    (tmp_path / "ready-blue").unlink()
    wait_ready(kube, "blue", ready=False)
    eventually(lambda: endpoint_ips(kube, "pool") == ([green], [blue]), "green alone ready in the Endpoints", WAIT)
    assert {httpx.get(f"http://{address}/", timeout=5).text for _ in range(4)} == {"green "}
    assert [container_status(kube, name).restart_count for name in ("blue", "green")] == [0, 0]


def test_exit_codes_and_the_restart_policy_decide_the_phase(kube: Kube, tmp_path: pathlib.Path) -> None:
    retry = "import os, sys; done = os.path.exists(sys.argv[1]); open(sys.argv[1], 'a'); sys.exit(0 if done else 1)"
    kube.core.create_namespaced_pod(NS, pod("ok", ["python", "-c", "print('fine')"], "Never"))
    kube.core.create_namespaced_pod(NS, pod("bad", ["python", "-c", "raise SystemExit(3)"], "Never"))
    kube.core.create_namespaced_pod(NS, pod("retry", ["python", "-c", retry, str(tmp_path / "tried")], "OnFailure"))

    for name, phase, code, reason, restarts in (
        ("ok", "Succeeded", 0, "Completed", 0),
        ("bad", "Failed", 3, "Error", 0),
        ("retry", "Succeeded", 0, "Completed", 1),
    ):
        found = wait_phase(kube, name, phase)
        (status,) = found.status.container_statuses
        assert (status.state.terminated.exit_code, status.state.terminated.reason) == (code, reason), name
        assert status.restart_count == restarts, name
        ready = next(c for c in found.status.conditions if c.type == "Ready")
        assert (ready.status, ready.reason) == ("False", "PodCompleted" if phase == "Succeeded" else "PodFailed")
    assert container_status(kube, "retry").last_state.terminated.exit_code == 1
    assert logs(kube, "ok") == "fine\n"


# Networking


def test_two_pods_listening_on_8080_each_answer_on_their_own_ip(kube: Kube, tmp_path: pathlib.Path) -> None:
    script = server_script(tmp_path)
    for name in ("left", "right"):
        kube.core.create_namespaced_pod(NS, server_pod(name, script, readiness(), {}))
    addresses = {name: wait_ready(kube, name).status.pod_ip for name in ("left", "right")}

    assert addresses["left"] != addresses["right"]
    for name, address in addresses.items():
        assert ipaddress.ip_address(address) in POD_NETWORK
        assert httpx.get(f"http://{address}:8080/", timeout=5).text == f"{name} "
        assert logs(kube, name) == f"serving on {address}:8080\n"


def test_a_headless_service_gives_a_pod_a_name_other_pods_resolve(kube: Kube, tmp_path: pathlib.Path) -> None:
    kube.core.create_namespaced_service(NS, {
        "metadata": {"name": "workers"},
        "spec": {"clusterIP": "None", "selector": {"app": "worker"}, "ports": [{"port": 8080}]},
    })  # fmt: skip
    worker = server_pod("worker-0", server_script(tmp_path), readiness(), {"app": "worker"})
    worker["spec"].update(hostname="worker-0", subdomain="workers")
    kube.core.create_namespaced_pod(NS, worker)
    address = wait_ready(kube, "worker-0").status.pod_ip
    assert kube.core.read_namespaced_service("workers", NS).spec.cluster_ip == "None"

    names = ["worker-0.workers", "worker-0.workers.default.svc.cluster.local", "workers"]
    kube.core.create_namespaced_pod(NS, pod("client", ["python", "-c", RESOLVE_SCRIPT, *names], "Never"))
    wait_phase(kube, "client", "Succeeded")

    found = json.loads(logs(kube, "client"))
    assert found == {name: {"address": address, "reply": "worker-0 "} for name in names}


def test_an_env_value_naming_a_peer_is_its_address_even_when_the_peer_starts_later(
    kube: Kube, tmp_path: pathlib.Path
) -> None:
    # torch's rendezvous store resolves MASTER_ADDR in C, past the Python resolver: the kubelet hands
    # the process the address, and holds the start until the peer has one
    kube.core.create_namespaced_service(NS, {
        "metadata": {"name": "ranks"},
        "spec": {"clusterIP": "None", "selector": {"app": "rank"}, "ports": [{"port": 8080}]},
    })  # fmt: skip
    env = [{"name": "MASTER_ADDR", "value": "rank-0.ranks"}, {"name": "PLAIN", "value": "model.skops"}]
    show = "import os; print(os.environ['MASTER_ADDR'], os.environ['PLAIN'])"
    kube.core.create_namespaced_pod(NS, pod("rank-1", ["python", "-c", show], "Never", container={"env": env}))
    master = server_pod("rank-0", server_script(tmp_path), {}, {"app": "rank"})
    master["spec"].update(hostname="rank-0", subdomain="ranks")
    kube.core.create_namespaced_pod(NS, master)

    address = wait_ready(kube, "rank-0").status.pod_ip
    wait_phase(kube, "rank-1", "Succeeded")
    assert logs(kube, "rank-1").split() == [address, "model.skops"]


# What a process sees


def test_the_environment_and_volumes_a_process_sees(kube: Kube) -> None:
    kube.core.create_namespaced_config_map(
        NS, {"metadata": {"name": "settings"}, "data": {"greeting": "hello", "file.txt": "from a file"}}
    )
    secret = base64.b64encode(b"s3cret").decode()
    kube.core.create_namespaced_secret(NS, {"metadata": {"name": "creds"}, "data": {"password": secret}})
    env = [
        pod_name_env(),
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}}},
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
        {"name": "MESSAGE", "value": "$(GREETING) from $(POD_NAME)"},
        {"name": "ESCAPED", "value": "$$(GREETING)"},
        {"name": "UNKNOWN", "value": "$(NOT_DEFINED)"},
    ]
    mounts = [{"name": "settings", "mountPath": "/etc/settings"}, {"name": "scratch", "mountPath": "/scratch"}]
    volumes = [{"name": "settings", "configMap": {"name": "settings"}}, {"name": "scratch", "emptyDir": {}}]
    command = ["python", "-c", ENV_SCRIPT, "/etc/settings", "/scratch"]
    manifest = pod("env", command, "Never", container={"env": env, "volumeMounts": mounts}, volumes=volumes)
    kube.core.create_namespaced_pod(NS, manifest)

    found = wait_phase(kube, "env", "Succeeded")
    seen = json.loads(logs(kube, "env"))
    assert seen["env"] == {
        "POD_NAME": "env",
        "POD_NAMESPACE": "default",
        "POD_IP": found.status.pod_ip,
        "GREETING": "hello",
        "PASSWORD": "s3cret",
        "MESSAGE": "hello from env",
        "ESCAPED": "$(GREETING)",
        "UNKNOWN": "$(NOT_DEFINED)",
    }
    assert seen["files"] == ["file.txt", "greeting"]
    assert seen["file"] == "from a file"
    assert seen["scratch"] == "kept in an emptyDir"


def test_a_persistent_volume_claim_is_shared_by_the_pods_that_mount_it(kube: Kube) -> None:
    claim = {"metadata": {"name": "shared"},
             "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}}  # fmt: skip
    kube.core.create_namespaced_persistent_volume_claim(NS, claim)
    volume = {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "shared"}}],
              "container": {"volumeMounts": [{"name": "data", "mountPath": "/data"}]}}  # fmt: skip
    write = "import sys; open(sys.argv[1], 'w').write('hello from the writer')"
    kube.core.create_namespaced_pod(NS, pod("writer", ["python", "-c", write, "/data/message"], "Never", **volume))
    wait_phase(kube, "writer", "Succeeded")

    read = "import sys; print(open(sys.argv[1]).read())"
    kube.core.create_namespaced_pod(NS, pod("reader", ["python", "-c", read, "/data/message"], "Never", **volume))
    wait_phase(kube, "reader", "Succeeded")

    assert logs(kube, "reader") == "hello from the writer\n"
    assert (kube.cluster.volumes_dir / NS / "shared" / "message").read_text() == "hello from the writer"
    bound = kube.core.read_namespaced_persistent_volume_claim("shared", NS)
    assert bound.status.phase == "Bound"
    assert kube.core.read_persistent_volume(bound.spec.volume_name).status.phase == "Bound"


# Stopping


def test_a_pod_that_ignores_sigterm_is_killed_after_its_grace_period(kube: Kube) -> None:
    kube.core.create_namespaced_pod(
        NS, pod("stubborn", ["python", "-c", IGNORE_SIGTERM], terminationGracePeriodSeconds=2)
    )
    eventually(lambda: logs(kube, "stubborn") == "ignoring SIGTERM\n", "the process to ignore SIGTERM", WAIT)
    (pid,) = container_pids(kube.core.read_namespaced_pod("stubborn", NS))

    started = time.monotonic()
    deleting = kube.core.delete_namespaced_pod("stubborn", NS)
    assert deleting.metadata.deletion_timestamp is not None
    assert deleting.metadata.deletion_grace_period_seconds == 2
    samples: list[tuple[float, bool, bool]] = []

    def gone() -> bool:
        missing = pod_not_found(kube, "stubborn")
        samples.append((time.monotonic() - started, missing, process_alive(pid)))
        return missing

    eventually(gone, "the pod to go", WAIT)
    terminating = [(at, alive) for at, missing, alive in samples if not missing]
    assert any(at >= 1.5 for at, _ in terminating), samples  # still Terminating late in the grace period
    assert all(alive for at, alive in terminating if at < 1.5), samples  # SIGTERM did not stop it
    gone_at = samples[-1][0]
    assert 2.0 <= gone_at < 5.0, samples
    assert not process_exists(pid)


def processes_mentioning(marker: str) -> list[int]:
    """Live processes whose command line contains `marker` (zombies are dead and left out)."""
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and marker in (entry / "cmdline").read_text() and process_alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def test_stopping_the_dev_cluster_kills_every_process_it_started(tmp_path: pathlib.Path) -> None:
    """Given pods whose processes have children, and one that ignores SIGTERM (so stopping takes its
    grace period while the controllers still run), when the dev cluster stops, then every process gets
    SIGTERM, none is started any more, and none is left. Every process here names tmp_path in its
    command line, so none can hide."""
    launcher = tmp_path / "launcher.py"
    launcher.write_text(LAUNCHER_SCRIPT)
    launches = tmp_path / "launches"
    command = ["sh", "-c", f"python {launcher} {launches}; echo launcher exited"]
    template = {"metadata": {"labels": {"app": "launcher"}},
                "spec": {"containers": [{"name": "main", "image": IMAGE, "command": command}]}}  # fmt: skip

    def lines(kind: str) -> list[list[str]]:
        return [line.split()[1:] for line in launches.read_text().splitlines() if line.startswith(kind)]

    try:
        with cluster.ThreadedDevCluster(tmp_path / "devcluster") as dev:
            kube = Kube(dev)
            try:
                kube.apps.create_namespaced_deployment(NS, {
                    "metadata": {"name": "launcher"},
                    "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "launcher"}}, "template": template},
                })  # fmt: skip
                kube.core.create_namespaced_pod(NS, pod("stubborn", ["python", "-c", IGNORE_SIGTERM, str(tmp_path)]))
                eventually(lambda: logs(kube, "stubborn") == "ignoring SIGTERM\n", "the stubborn process", WAIT)
                eventually(lambda: launches.exists() and len(lines("start")) == 2, "two launches", WAIT)
                containers = [pid for found in kube.core.list_namespaced_pod(NS).items for pid in container_pids(found)]
                children = [int(pid) for start in lines("start") for pid in start[:2]]
                assert sorted(processes_mentioning(str(tmp_path))) == sorted(containers + children)
            finally:
                kube.close()
            stopping = time.time()
        late = [start for start in lines("start") if float(start[2]) >= stopping]
        assert not late, f"pod processes started while the dev cluster stopped: {late}"
        assert not any(map(process_exists, containers)), "the dev cluster did not reap its container processes"
        eventually(lambda: not processes_mentioning(str(tmp_path)), "every pod process to end", 5.0)
        assert sorted(pid for pid, *_ in lines("start")) == sorted(pid for (pid,) in lines("term"))
    finally:
        for pid in processes_mentioning(str(tmp_path)):  # what a faulty stop left behind, so no test leaks it
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
