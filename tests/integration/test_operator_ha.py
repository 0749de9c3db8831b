"""HA: two `kiln run --peering` replicas against one dev cluster, as the chart's Deployment runs
them; the active one is SIGKILLed mid-training, the other takes over within kopf's peering
lifetime and finishes the job, and no worker pod is created twice."""

from __future__ import annotations

import pathlib
import time

import yaml
from kiln_cluster import REPO, Kiln, OperatorProcess, cluster_with_crds
from polling import eventually

GROUP, VERSION, PLURAL = "kiln.dev", "v1alpha1", "trainingjobs"
PEERING_CRDS = REPO / "charts" / "kiln" / "crds" / "kopf.dev_peerings.yaml"
PEERING_LIFETIME = 15
"""The peering lifetime `kiln run` gives its replicas (kiln.handlers.PEERING_LIFETIME_SECONDS; not
imported, as importing the handlers registers them with kopf in this process): a SIGKILLed peer is
taken for dead this long after its last touch."""
NAMESPACE = "ha"
JOB = "long"
TRAINING_SECONDS = 12


def _job() -> dict[str, object]:
    code = f"import time; print('training', flush=True); time.sleep({TRAINING_SECONDS}); print('done', flush=True)"
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingJob",
        "metadata": {"name": JOB},
        "spec": {"container": {"image": "python:3.11", "command": ["python", "-c", code]}},
    }


def _peering(kiln: Kiln) -> None:
    kiln.kubectl("apply", "-f", str(PEERING_CRDS))
    kiln.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=30s")
    default = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "default"}}
    kiln.kubectl("apply", "-f", "-", input=yaml.safe_dump(default))


def _phase(kiln: Kiln) -> str | None:
    body = kiln.api().get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, JOB)
    phase: str | None = (body.get("status") or {}).get("phase")
    return phase


def _worker_pods(kiln: Kiln) -> dict[str, str]:
    pods = kiln.core().list_namespaced_pod(NAMESPACE, label_selector=f"kiln.dev/trainingjob={JOB}").items
    return {pod.metadata.uid: pod.metadata.name for pod in pods}


def _acted(log: pathlib.Path) -> bool:
    """Whether this replica has handled the job (kopf logs each handler it runs, with the object)."""
    return f"[{NAMESPACE}/{JOB}] Handler" in log.read_text(errors="replace")


def test_the_standby_takes_over_when_the_active_operator_is_killed_and_nothing_is_duplicated(
    tmp_path: pathlib.Path,
) -> None:
    with cluster_with_crds(tmp_path) as kiln:
        _peering(kiln)
        kiln.kubectl("create", "namespace", NAMESPACE)
        replicas = [
            OperatorProcess(kiln, peering=True, peer_id=f"kiln-{name}", log=tmp_path / f"operator-{name}.log")
            for name in ("a", "b")
        ]
        for replica in replicas:
            replica.start()
        try:
            kiln.apply(NAMESPACE, _job())
            seen: dict[str, str] = {}

            def running() -> bool:
                seen.update(_worker_pods(kiln))
                return _phase(kiln) == "Running"

            eventually(running, f"tj/{JOB} to be Running (see {tmp_path}/operator-*.log)", 30)
            active = [replica for replica in replicas if _acted(replica.log)]
            assert len(active) == 1, f"exactly one replica acts, not {len(active)}"
            [standby] = [replica for replica in replicas if replica is not active[0]]
            active[0].kill()
            killed = time.monotonic()

            def finished() -> bool:
                seen.update(_worker_pods(kiln))
                return _phase(kiln) == "Succeeded"

            eventually(finished, f"tj/{JOB} to be Succeeded by the standby", PEERING_LIFETIME + 20)
            assert _acted(standby.log), "the standby finished the job"
            assert time.monotonic() - killed <= PEERING_LIFETIME + 20
            names = list(seen.values())
            assert sorted(names) == [f"{JOB}-worker-0"], f"one worker pod, created once: {seen}"
        finally:
            for replica in replicas:
                replica.stop()
