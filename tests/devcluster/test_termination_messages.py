"""Termination messages: when a container's process ends, the kubelet puts what it wrote to its
terminationMessagePath into the pod's status, or, with FallbackToLogsOnError, the end of its log
when it failed without writing one. Real processes, read back through the `kubernetes` client."""

from __future__ import annotations

import pathlib
from typing import Any

from conftest import Kube
from polling import eventually

NS = "default"
WAIT = 20.0
IMAGE = "python:3.12-slim"
OUTPUT = "/var/run/kiln/output"
HOST_DEFAULT = pathlib.Path("/dev/termination-log")


def pod(name: str, script: str, *args: str, restart: str = "Never", **container: Any) -> dict[str, Any]:
    """A pod whose one container runs `python -c script args...`, with an emptyDir at OUTPUT."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": restart,
            "volumes": [{"name": "output", "emptyDir": {}}],
            "containers": [
                {
                    "name": "main",
                    "image": IMAGE,
                    "command": ["python", "-c", script, *args],
                    "volumeMounts": [{"name": "output", "mountPath": OUTPUT}],
                    **container,
                }
            ],
        },
    }


def finished(kube: Kube, name: str) -> Any:
    """The container's status once the pod has succeeded or failed."""

    def check() -> Any:
        found = kube.core.read_namespaced_pod(name, NS)
        return found if found.status.phase in ("Succeeded", "Failed") else None

    (status,) = eventually(check, f"pod {name} to finish", WAIT).status.container_statuses
    return status


WRITE = "import sys; open(sys.argv[1], 'w').write(sys.argv[2]); sys.exit(int(sys.argv[3]))"


def test_the_message_is_what_the_container_wrote_to_its_termination_message_path(kube: Kube) -> None:
    result = f"{OUTPUT}/result.json"
    env = [{"name": "KILN_RESULT_FILE", "value": result}]
    script = "import os; open(os.environ['KILN_RESULT_FILE'], 'w').write('{\"accuracy\": 0.97}')"
    kube.core.create_namespaced_pod(NS, pod("result", script, env=env, terminationMessagePath=result))

    terminated = finished(kube, "result").state.terminated

    assert (terminated.exit_code, terminated.message) == (0, '{"accuracy": 0.97}')


def test_the_default_path_is_a_file_of_the_containers_own_and_the_message_is_cut_at_4096_bytes(kube: Kube) -> None:
    before = HOST_DEFAULT.read_bytes() if HOST_DEFAULT.is_file() else None
    kube.core.create_namespaced_pod(NS, pod("long", WRITE, "/dev/termination-log", "x" * 5000, "0"))

    terminated = finished(kube, "long").state.terminated

    assert terminated.message == "x" * 4096
    assert (HOST_DEFAULT.read_bytes() if HOST_DEFAULT.is_file() else None) == before, "the host's file was written"


def test_fallback_to_logs_on_error_gives_the_end_of_the_log_of_a_failed_container(kube: Kube) -> None:
    fallback = {"terminationMessagePolicy": "FallbackToLogsOnError"}
    short = "for i in range(100): print(f'line {i}')\nraise SystemExit(1)"
    long = "for i in range(100): print(f'{i:03d} ' + 'x' * 95)\nraise SystemExit(1)"
    kube.core.create_namespaced_pod(NS, pod("short-lines", short, **fallback))
    kube.core.create_namespaced_pod(NS, pod("long-lines", long, **fallback))
    kube.core.create_namespaced_pod(NS, pod("wrote-one", WRITE, "/dev/termination-log", "why", "2", **fallback))
    kube.core.create_namespaced_pod(NS, pod("succeeded", "print('fine')", **fallback))

    assert finished(kube, "short-lines").state.terminated.message == "".join(f"line {i}\n" for i in range(20, 100))
    long_tail = "".join(f"{i:03d} " + "x" * 95 + "\n" for i in range(20, 100))[-2048:]
    assert finished(kube, "long-lines").state.terminated.message == long_tail
    assert long_tail.endswith("099 " + "x" * 95 + "\n")
    wrote = finished(kube, "wrote-one").state.terminated
    assert (wrote.exit_code, wrote.message) == (2, "why")
    assert finished(kube, "succeeded").state.terminated.message is None


def test_the_file_policy_gives_no_message_when_a_failed_container_wrote_none(kube: Kube) -> None:
    script = "print('a log line the File policy does not report')\nraise SystemExit(1)"
    kube.core.create_namespaced_pod(NS, pod("silent", script, terminationMessagePolicy="File"))

    terminated = finished(kube, "silent").state.terminated

    assert (terminated.exit_code, terminated.message) == (1, None)


def test_each_run_starts_with_an_empty_file_so_a_restart_never_reports_the_previous_message(kube: Kube) -> None:
    first_run = (
        "import os, sys\n"
        "marker = os.path.join(sys.argv[1], 'ran')\n"
        "if not os.path.exists(marker):\n"
        "    open(marker, 'w').close()\n"
        "    open(sys.argv[2], 'w').write('first run failed')\n"
        "    sys.exit(1)\n"
    )
    kube.core.create_namespaced_pod(NS, pod("rerun", first_run, OUTPUT, "/dev/termination-log", restart="OnFailure"))

    status = finished(kube, "rerun")

    assert (status.restart_count, status.state.terminated.exit_code, status.state.terminated.message) == (1, 0, None)
    assert status.last_state.terminated.message == "first run failed"
