"""HA: two `kiln run --peering` replicas against one dev cluster, as the chart's Deployment runs them.
The active one is SIGKILLed mid-training, and mid-rollout of a ModelDeployment while live traffic
flows through its router; each time the other takes over within kopf's peering lifetime and
finishes, and nothing is duplicated: no worker or serving pod is created twice, and the rollout's
traffic never moves backwards while no operator acts.

One dev cluster serves the module; every test starts its own pair of replicas in a namespace of its
own."""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import pathlib
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kiln_cluster import REPO, Kiln, OperatorProcess, cluster_with_crds
from polling import eventually

sys.path.insert(0, str(REPO / "tests" / "e2e"))
rollout_world = importlib.import_module("rollout_world")  # the end-to-end tests' serving helpers, no fixtures

GROUP, VERSION = "kiln.dev", "v1alpha1"
PEERING_CRDS = REPO / "charts" / "kiln" / "crds" / "kopf.dev_peerings.yaml"
PEERING_LIFETIME = 15
"""The peering lifetime `kiln run` gives its replicas (kiln.handlers.PEERING_LIFETIME_SECONDS; not
imported, as importing the handlers registers them with kopf in this process): a SIGKILLed peer is
taken for dead this long after its last touch."""
MARGIN = 30
"""What the standby may take beyond the peering lifetime (and any wait it must honour) to finish,
on a loaded machine."""
JOB = "long"
TRAINING_SECONDS = 12
PAUSE_SECONDS = 45
"""The canary's pause: long enough to see it begin, kill the active replica, and have the standby
take over (at most PEERING_LIFETIME later) while it still holds."""
SCALE_DOWN_DELAY_SECONDS = 600
"""The old stable version keeps its pod past the end of the test, so every pod seen at the kill is
still there at the end, unless something recreated it."""


@pytest.fixture(scope="module")
def kiln(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kiln]:
    """A dev cluster with Kiln's CRDs and kopf's peering resource, as the chart installs them."""
    with cluster_with_crds(tmp_path_factory.mktemp("ha")) as setup:
        setup.kubectl("apply", "-f", str(PEERING_CRDS))
        setup.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=30s")
        default = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "default"}}
        setup.kubectl("apply", "-f", "-", input=yaml.safe_dump(default))
        yield setup


@pytest.fixture
def replicas(kiln: Kiln, tmp_path: pathlib.Path) -> Iterator[list[OperatorProcess]]:
    """Two peering replicas, each with a log of its own; stopped (those not killed) when the test ends,
    and a traceback in either log fails it."""
    pair = [
        OperatorProcess(kiln, peering=True, peer_id=f"kiln-{name}", log=tmp_path / f"operator-{name}.log")
        for name in ("a", "b")
    ]
    try:
        for replica in pair:
            replica.start()
        yield pair
    finally:
        for replica in pair:
            replica.stop()
    for replica in pair:
        text = replica.log.read_text(errors="replace")
        assert "Traceback" not in text, f"{replica.peer_id} logged a traceback:\n{text[-6000:]}"


def _acted(log: pathlib.Path, namespace: str) -> bool:
    """Whether this replica has handled anything in the namespace (kopf logs each handler and timer it
    runs, prefixed with the object)."""
    pattern = rf"\[{re.escape(namespace)}/[^\]]+\] (Handler|Timer) '"
    return re.search(pattern, log.read_text(errors="replace")) is not None


def _the_active_one(replicas: list[OperatorProcess], namespace: str) -> tuple[OperatorProcess, OperatorProcess]:
    """The replica that has acted in the namespace and the one that has not; fails unless exactly one has."""
    acting = [replica for replica in replicas if _acted(replica.log, namespace)]
    assert len(acting) == 1, f"exactly one replica acts, not {len(acting)}"
    [standby] = [replica for replica in replicas if replica is not acting[0]]
    return acting[0], standby


def _job() -> dict[str, object]:
    code = f"import time; print('training', flush=True); time.sleep({TRAINING_SECONDS}); print('done', flush=True)"
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingJob",
        "metadata": {"name": JOB},
        "spec": {"container": {"image": "python:3.11", "command": ["python", "-c", code]}},
    }


def _job_phase(kiln: Kiln, namespace: str) -> str | None:
    body = kiln.api().get_namespaced_custom_object(GROUP, VERSION, namespace, "trainingjobs", JOB)
    phase: str | None = (body.get("status") or {}).get("phase")
    return phase


def _worker_pods(kiln: Kiln, namespace: str) -> dict[str, str]:
    pods = kiln.core().list_namespaced_pod(namespace, label_selector=f"kiln.dev/trainingjob={JOB}").items
    return {pod.metadata.uid: pod.metadata.name for pod in pods}


def test_the_standby_takes_over_when_the_active_operator_is_killed_and_nothing_is_duplicated(
    kiln: Kiln, replicas: list[OperatorProcess]
) -> None:
    namespace = "ha-training"
    kiln.kubectl("create", "namespace", namespace)
    kiln.apply(namespace, _job())
    seen: dict[str, str] = {}

    def running() -> bool:
        seen.update(_worker_pods(kiln, namespace))
        return _job_phase(kiln, namespace) == "Running"

    eventually(running, f"tj/{JOB} to be Running (see the replicas' logs)", 30)
    active, standby = _the_active_one(replicas, namespace)
    active.kill()
    killed = time.monotonic()

    def finished() -> bool:
        seen.update(_worker_pods(kiln, namespace))
        return _job_phase(kiln, namespace) == "Succeeded"

    eventually(finished, f"tj/{JOB} to be Succeeded by the standby", PEERING_LIFETIME + 20)
    assert _acted(standby.log, namespace), "the standby finished the job"
    assert time.monotonic() - killed <= PEERING_LIFETIME + 20
    names = list(seen.values())
    assert sorted(names) == [f"{JOB}-worker-0"], f"one worker pod, created once: {seen}"


def _canary(version: str) -> dict[str, Any]:
    """A canary without analysis: 30% to the candidate, a timed pause, then all of it."""
    steps = [{"setWeight": 30}, {"pause": {"duration": f"{PAUSE_SECONDS}s"}}, {"setWeight": 100}]
    return {
        "model": "iris",
        "version": version,
        "replicas": 1,
        "strategy": {"canary": {"steps": steps, "scaleDownDelaySeconds": SCALE_DOWN_DELAY_SECONDS}},
        "progressDeadlineSeconds": 120,
    }


def _moment(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclasses.dataclass(frozen=True)
class Sight:
    """What the test saw at one moment of the hand-over; `standby_acted` read after the rest, so when
    it is False, nothing else here was written by the standby."""

    time: float
    status: dict[str, Any]
    router: dict[str, Any]
    pods: dict[str, str]
    standby_acted: bool

    @property
    def rollout(self) -> tuple[Any, ...]:
        """Where the rollout stands: its step, the pause's start, the weights."""
        return (self.status.get("currentStepIndex"), self.status.get("pauseStartTime"), self.status.get("weights"))


def test_the_standby_finishes_a_canary_paused_when_the_active_operator_is_killed_and_traffic_never_stops(
    kiln: Kiln, replicas: list[OperatorProcess]
) -> None:
    namespace = "ha-rollout"
    kiln.kubectl("create", "namespace", namespace)
    serving = rollout_world.Serving(kiln)
    serving.model_store(namespace)
    for version in ("1.0.0", "1.1.0"):
        serving.register(namespace, version)
    serving.deploy(namespace, _canary("1.0.0"))
    serving.wait_for(
        namespace, "Healthy on 1.0.0", lambda s: s.get("phase") == "Healthy" and s.get("stableVersion") == "1.0.0"
    )
    sights: list[Sight] = []

    with rollout_world.Traffic(serving.url(namespace)) as traffic:
        serving.set_version(namespace, "1.1.0")
        paused = serving.wait_for(
            namespace, "paused at step 2", lambda s: s.get("currentStepIndex") == 1 and s.get("pauseStartTime")
        )
        pause_ends = _moment(paused["pauseStartTime"]) + PAUSE_SECONDS
        active, standby = _the_active_one(replicas, namespace)

        def sight() -> Sight:
            status, router = serving.status(namespace), serving.router_config(namespace)
            seen = Sight(time.time(), status, router, serving.pod_uids(namespace), _acted(standby.log, namespace))
            sights.append(seen)
            return seen

        active.kill()
        killed = time.time()
        at_kill = sight()
        assert at_kill.rollout[0] == 1, f"the kill came during the pause: {at_kill.status}"
        assert at_kill.router["weights"] == {"stable": 70, "candidate": 30}
        within = PEERING_LIFETIME + (pause_ends - killed) + MARGIN
        eventually(lambda: sight().status.get("stableVersion") == "1.1.0", "the standby to promote 1.1.0", within)
        promoted = sights[-1]
        eventually(lambda: len(traffic.since(promoted.time + 1)) >= 30, "traffic after the promotion", MARGIN)

    held = [seen for seen in sights if seen.time < pause_ends - 1]
    assert all(seen.rollout == at_kill.rollout for seen in held), "the rollout moved before its pause ended"
    assert all(seen.router == at_kill.router for seen in held), "the router's weights moved before the pause ended"
    taken_over = [seen for seen in held if seen.standby_acted]
    assert taken_over, "the standby took over while the pause held, and kept it"
    assert taken_over[0].time - killed <= PEERING_LIFETIME + MARGIN
    assert all(seen.pods == at_kill.pods for seen in sights), "a serving pod was recreated or added"

    status = promoted.status
    assert [(h["version"], h["outcome"]) for h in status["history"]] == [("1.0.0", "Deployed"), ("1.1.0", "Promoted")]
    assert _moment(status["history"][-1]["endTime"]) >= pause_ends - 1, "the standby cut the pause short"
    assert promoted.time - killed <= within
    assert (promoted.router["weights"], promoted.router["variants"]["stable"]["version"]) == ({"stable": 100}, "1.1.0")
    unattended = [answer for answer in traffic.since(killed) if answer.time < taken_over[0].time]
    assert set(rollout_world.served_versions(unattended)) == {"1.0.0", "1.1.0"}, "the split held with no operator"
    assert all(answer.status == 200 for answer in traffic.answers), "a request failed during the hand-over"
    after = traffic.since(promoted.time + 1)
    assert rollout_world.served_versions(after) == {"1.1.0": len(after)}


def _set_peers(kiln: Kiln, peers: dict[str, Any]) -> None:
    """Write entries of kopf's peering object as kopf's keepalive does (None removes one)."""
    kiln.api().patch_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", "default", {"status": peers})


def test_a_replica_that_kopf_pauses_runs_no_training_deadline_until_it_acts_again(
    kiln: Kiln, tmp_path: pathlib.Path
) -> None:
    """kopf pauses a replica when a peer of higher priority appears; the TrainingJob wake-ups, a thread
    of Kiln's own, pause with it, and run the deadline that passed meanwhile once it acts again."""
    namespace, timeout = "ha-standby", 10
    left = kiln.api().get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", "default")
    _set_peers(kiln, dict.fromkeys(left.get("status") or {}))  # peers of earlier tests, killed or gone
    replica = OperatorProcess(kiln, peering=True, peer_id="kiln-solo", log=tmp_path / "operator-solo.log")
    replica.start()
    try:
        kiln.kubectl("create", "namespace", namespace)
        no_pods = {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "none"},
            "spec": {"hard": {"pods": "0"}},
        }
        kiln.apply(namespace, no_pods)
        job = _job()
        job["spec"] = {**job["spec"], "gangScheduling": {"timeoutSeconds": timeout}}  # type: ignore[dict-item]
        kiln.apply(namespace, job)
        eventually(lambda: _job_phase(kiln, namespace) == "Queued", f"tj/{JOB} Queued over the quota", 30)
        queued = kiln.api().get_namespaced_custom_object(GROUP, VERSION, namespace, "trainingjobs", JOB)
        deadline = _moment(queued["status"]["queuedTime"]) + timeout

        newer = {"priority": 2**31, "lifetime": 120, "lastseen": datetime.datetime.now(datetime.UTC).isoformat()}
        _set_peers(kiln, {"kiln-newer": newer})
        eventually(
            lambda: "Pausing operations in favour of" in replica.log.read_text(errors="replace"), "kopf pausing", 20
        )
        eventually(lambda: time.time() > deadline + 3, "the gang timeout to pass on standby", timeout + 10)
        assert _job_phase(kiln, namespace) == "Queued", "a paused replica ran the job's deadline"

        _set_peers(kiln, {"kiln-newer": None})
        eventually(lambda: _job_phase(kiln, namespace) == "Failed", f"tj/{JOB} failing once the replica acts", 30)
        failed = kiln.api().get_namespaced_custom_object(GROUP, VERSION, namespace, "trainingjobs", JOB)
        assert "timeoutSeconds (10s)" in failed["status"]["message"]
    finally:
        replica.stop()
    assert "Traceback" not in replica.log.read_text(errors="replace")
