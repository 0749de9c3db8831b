"""kiln-router over real HTTP: a real router process in front of real kiln-server processes.

Stable serves iris 1.0.0, candidate 1.1.0 and slow 2.0.0 (every answer held back by kiln-server's
fault injection), each a kiln-server on loopback; every router here is a `kiln-router` process
told its configuration by a file, rewritten (atomically, by rename) to reload it, or by a
ConfigMap on a dev cluster, watched through the Kubernetes API.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import kubernetes
import pytest
from polling import eventually
from server_process import RunningServer, free_port, kiln_server, model_version, write_skops
from sklearn.linear_model import LogisticRegression

from kiln.devcluster import cluster

ROUTER = pathlib.Path(sys.executable).with_name("kiln-router")
INFER = "/v2/models/iris/infer"
BODY = {"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]}
SLOW_SECONDS = 1.5


@dataclass
class Upstreams:
    stable: RunningServer
    candidate: RunningServer
    slow: RunningServer

    def variants(self) -> dict[str, Any]:
        return {
            "stable": {"url": self.stable.url, "version": "1.0.0"},
            "candidate": {"url": self.candidate.url, "version": "1.1.0"},
            "slow": {"url": self.slow.url, "version": "2.0.0"},
        }


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory: pytest.TempPathFactory, iris_model: LogisticRegression) -> Iterator[Upstreams]:
    directory = tmp_path_factory.mktemp("upstreams")
    digest = write_skops(iris_model, directory / "model.skops")
    delay = json.dumps({"delayRate": 1.0, "delaySeconds": SLOW_SECONDS})
    environments = {"1.0.0": {}, "1.1.0": {}, "2.0.0": {"KILN_FAULT_INJECTION": delay}}
    with contextlib.ExitStack() as stack:
        servers = [
            stack.enter_context(
                kiln_server(directory, [model_version(directory / "model.skops", digest, version=version)], env=env)
            )
            for version, env in environments.items()
        ]
        for server in servers:
            server.wait_ready()
        yield Upstreams(*servers)


def configuration(upstreams: Upstreams, mirror: dict[str, Any] | None = None, **weights: int) -> dict[str, Any]:
    """Variants stable, candidate and slow; weights not given are 0."""
    variants = upstreams.variants()
    document = {"variants": variants, "weights": {name: weights.get(name, 0) for name in variants}}
    if mirror is not None:
        document["mirror"] = mirror
    return document


@dataclass
class RunningRouter:
    process: subprocess.Popen[str]
    url: str
    config_file: pathlib.Path
    log: pathlib.Path

    def write(self, document: dict[str, Any] | str) -> None:
        """Replace the configuration file in one rename, as a ConfigMap volume does."""
        staged = self.config_file.with_suffix(".staged")
        staged.write_text(document if isinstance(document, str) else json.dumps(document))
        staged.replace(self.config_file)

    def reload(self, document: dict[str, Any]) -> None:
        """Write the configuration and wait until the router serves it."""
        self.write(document)
        eventually(lambda: self.shown().get("config", {}).get("weights") == document["weights"], "a reload", timeout=5)

    def shown(self) -> dict[str, Any]:
        """What /router/config says: the configuration in force and its generation."""
        answer = httpx.get(self.url + "/router/config", timeout=5)
        return dict(answer.json()) if answer.status_code == 200 else {}

    def metric(self, name: str, **labels: str) -> float:
        return metric(httpx.get(self.url + "/metrics", timeout=5).text, name, **labels)

    def logs(self) -> str:
        return self.log.read_text()


@contextlib.contextmanager
def kiln_router(directory: pathlib.Path, document: dict[str, Any] | None, *args: str) -> Iterator[RunningRouter]:
    """kiln-router on 127.0.0.1 reading `document` from a file (none yet if None), killed at the end
    whatever happens."""
    port = free_port()
    config_file = directory / f"router-{port}.json"
    log = directory / f"kiln-router-{port}.log"
    command = [str(ROUTER), "--host", "127.0.0.1", "--port", str(port), "--config-file", str(config_file)]
    with log.open("w") as sink:
        process = subprocess.Popen(
            [*command, "--drain-delay", "0", *args], stdout=sink, stderr=subprocess.STDOUT, text=True
        )
    router = RunningRouter(process, f"http://127.0.0.1:{port}", config_file, log)
    try:
        if document is not None:
            router.write(document)
        eventually(lambda: _answers(router, "/healthz") == 200, "the router to listen", timeout=20)
        if document is not None:
            eventually(lambda: _answers(router, "/readyz") == 200, "the router to load its configuration")
        yield router
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)


def _answers(router: RunningRouter, path: str) -> int | None:
    if router.process.poll() is not None:
        raise AssertionError(f"kiln-router exited with {router.process.returncode}:\n{router.logs()}")
    try:
        return httpx.get(router.url + path, timeout=5).status_code
    except httpx.TransportError:
        return None


def metric(text: str, name: str, **labels: str) -> float:
    """The value of the one sample of `name` whose labels include `labels`."""
    for line in text.splitlines():
        match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            return float(match.group(3))
    raise AssertionError(f"no sample {name}{labels} in /metrics")


def send(client: httpx.Client, count: int, headers: dict[str, str] | None = None) -> Counter[tuple[str, str, int]]:
    """(x-kiln-variant, model_version, status) of `count` inference requests."""
    seen: Counter[tuple[str, str, int]] = Counter()
    for _ in range(count):
        answer = client.post(INFER, json=BODY, headers=headers)
        version = answer.json().get("model_version", "") if answer.status_code == 200 else ""
        seen[answer.headers.get("x-kiln-variant", ""), version, answer.status_code] += 1
    return seen


@pytest.fixture
def directory(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path


def test_the_split_measured_from_responses_follows_the_weights(upstreams: Upstreams, directory: pathlib.Path) -> None:
    requests = 400
    with kiln_router(directory, configuration(upstreams, stable=100)) as router, httpx.Client(base_url=router.url) as c:
        for candidate in (0, 30, 100):
            router.reload(configuration(upstreams, stable=100 - candidate, candidate=candidate))

            seen = send(c, requests)

            assert set(seen) <= {("stable", "1.0.0", 200), ("candidate", "1.1.0", 200)}, seen
            share = candidate / 100
            # Four binomial standard deviations (0.092 at 30%): a correct router fails 1 run in 16,000.
            tolerance = 4 * (share * (1 - share) / requests) ** 0.5
            assert abs(seen["candidate", "1.1.0", 200] / requests - share) <= tolerance, (candidate, seen)


def test_the_variant_header_overrides_the_weights(upstreams: Upstreams, directory: pathlib.Path) -> None:
    with kiln_router(directory, configuration(upstreams, stable=100)) as router, httpx.Client(base_url=router.url) as c:
        assert send(c, 20, {"x-kiln-variant": "candidate"}) == {("candidate", "1.1.0", 200): 20}

        router.reload(configuration(upstreams, candidate=100))

        assert send(c, 20, {"x-kiln-variant": "stable"}) == {("stable", "1.0.0", 200): 20}
        assert send(c, 20, {"x-kiln-variant": "preview"}) == {("candidate", "1.1.0", 200): 20}


def test_rewriting_the_file_moves_traffic_without_a_restart_or_a_failed_request(
    upstreams: Upstreams, directory: pathlib.Path
) -> None:
    with kiln_router(directory, None) as router:
        assert httpx.get(router.url + "/readyz").status_code == 503
        router.write("{not json")
        router.reload(configuration(upstreams, stable=100))
        assert router.metric("kiln_router_config_reloads_total", outcome="rejected") == 1
        pid = router.process.pid
        failures: list[str] = []
        answered: Counter[str] = Counter()
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(base_url=router.url, timeout=10) as http:
                while not stop.is_set():
                    try:
                        answer = http.post(INFER, json=BODY)
                    except httpx.TransportError as error:
                        failures.append(repr(error))
                        continue
                    if answer.status_code != 200:
                        failures.append(f"{answer.status_code} {answer.text}")
                    answered[answer.headers.get("x-kiln-variant", "")] += 1

        sender = threading.Thread(target=client)
        sender.start()
        try:
            for candidate in (10, 50, 90, 0, 100):
                router.reload(configuration(upstreams, stable=100 - candidate, candidate=candidate))
            router.write('{"variants": {}, "weights": {}}')
            eventually(lambda: router.metric("kiln_router_config_reloads_total", outcome="rejected") == 2)
            before = answered["candidate"]
            eventually(lambda: answered["candidate"] > before + 50, "requests after the last reload")
        finally:
            stop.set()
            sender.join(timeout=15)

        assert failures == []
        assert router.process.pid == pid
        assert router.process.poll() is None
        assert router.shown()["generation"] == 6
        assert min(answered["candidate"], answered["stable"]) > 0, answered
        with httpx.Client(base_url=router.url) as after:
            assert send(after, 20) == {("candidate", "1.1.0", 200): 20}


def test_an_upstream_that_is_down_answers_502_counted_against_its_variant(
    upstreams: Upstreams, directory: pathlib.Path
) -> None:
    document = configuration(upstreams, stable=100)
    document["variants"]["gone"] = {"url": f"http://127.0.0.1:{free_port()}", "version": "0.9.0"}
    document["weights"]["gone"] = 0
    with kiln_router(directory, document) as router, httpx.Client(base_url=router.url) as client:
        answers = [client.post(INFER, json=BODY, headers={"x-kiln-variant": "gone"}) for _ in range(5)]

        assert [answer.status_code for answer in answers] == [502] * 5
        assert "gone upstream is unreachable" in answers[0].json()["error"]
        assert answers[0].headers["x-kiln-variant"] == "gone"
        assert router.metric("kiln_router_upstream_errors_total", variant="gone", version="0.9.0", kind="connect") == 5
        assert router.metric("kiln_router_requests_total", variant="gone", code="502") == 5
        assert router.metric("kiln_router_upstream_errors_total", variant="stable", kind="connect") == 0


def test_metrics_count_per_variant_what_the_client_saw(upstreams: Upstreams, directory: pathlib.Path) -> None:
    with kiln_router(directory, configuration(upstreams, stable=50, candidate=50)) as router:
        with httpx.Client(base_url=router.url) as client:
            seen = send(client, 200)

        for variant, version in (("stable", "1.0.0"), ("candidate", "1.1.0")):
            labels = {"variant": variant, "version": version}
            assert router.metric("kiln_router_requests_total", **labels, code="200") == seen[variant, version, 200]
            assert router.metric("kiln_router_request_duration_seconds_count", **labels) == seen[variant, version, 200]
            assert router.metric("kiln_router_weight", variant=variant) == 50
        assert router.metric("kiln_router_requests_total", variant="slow", code="200") == 0
        assert router.metric("kiln_router_weight", variant="slow") == 0
        assert router.metric("kiln_router_config_reloads_total", outcome="applied") == 1


def test_mirrored_copies_reach_the_mirror_variant_and_the_client_sees_only_the_live_answer(
    upstreams: Upstreams, directory: pathlib.Path
) -> None:
    mirror = {"variant": "candidate", "percent": 100}
    candidate_count = {"version": "1.1.0", "code": "200"}
    before = metric(upstreams.candidate.get("/metrics").text, "kiln_server_requests_total", **candidate_count)
    with kiln_router(directory, configuration(upstreams, mirror, stable=100)) as router:
        with httpx.Client(base_url=router.url) as client:
            assert send(client, 30) == {("stable", "1.0.0", 200): 30}

        copies = {"variant": "candidate", "version": "1.1.0"}
        eventually(lambda: router.metric("kiln_router_mirrored_requests_total", **copies, outcome="answered") == 30)
        after = metric(upstreams.candidate.get("/metrics").text, "kiln_server_requests_total", **candidate_count)
        assert after - before == 30


def test_sigterm_turns_readiness_off_lets_the_slow_request_finish_and_exits_0(
    upstreams: Upstreams, directory: pathlib.Path
) -> None:
    document = configuration(upstreams, stable=100)
    with kiln_router(directory, document, "--drain-delay", "0.5") as router:
        answers: list[httpx.Response] = []
        slow = threading.Thread(
            target=lambda: answers.append(httpx.post(router.url + INFER, json=BODY, headers={"x-kiln-variant": "slow"}))
        )
        slow.start()
        in_flight = "kiln_server_requests_in_flight"
        eventually(lambda: metric(upstreams.slow.get("/metrics").text, in_flight) == 1, "the slow request upstream")

        router.process.send_signal(signal.SIGTERM)

        eventually(lambda: _answers(router, "/readyz") == 503, "readiness to turn off", timeout=2)
        assert router.process.wait(timeout=SLOW_SECONDS + 10) == 0
        slow.join(timeout=5)
        assert [(answer.status_code, answer.json()["model_version"]) for answer in answers] == [(200, "2.0.0")]
        assert "stopped" in router.logs()


def test_an_upstream_slower_than_the_timeout_answers_504(upstreams: Upstreams, directory: pathlib.Path) -> None:
    with kiln_router(directory, configuration(upstreams, slow=100), "--upstream-timeout", "0.3") as router:
        answer = httpx.post(router.url + INFER, json=BODY)

        assert answer.status_code == 504, answer.text
        assert router.metric("kiln_router_upstream_errors_total", variant="slow", kind="timeout") == 1


def test_the_router_answers_its_own_endpoints_and_proxies_every_other_path(
    upstreams: Upstreams, directory: pathlib.Path
) -> None:
    with kiln_router(directory, configuration(upstreams, stable=100)) as router:
        shown = httpx.get(router.url + "/router/config").json()
        assert shown["generation"] == 1
        assert len(shown["digest"]) == 64
        assert shown["config"]["weights"] == {"stable": 100, "candidate": 0, "slow": 0}
        assert httpx.get(router.url + "/healthz").json() == {"live": True}

        metadata = httpx.get(router.url + "/v2/models/iris?unused=1")
        missing = httpx.get(router.url + "/v2/models/nope")

        assert metadata.status_code == 200
        assert metadata.json()["versions"] == ["1.0.0"]
        assert missing.status_code == 404
        assert missing.headers["x-kiln-variant"] == "stable"


def test_the_command_needs_exactly_one_configuration_source() -> None:
    done = subprocess.run([str(ROUTER)], capture_output=True, text=True, timeout=30, env=os.environ, check=False)

    assert done.returncode == 2
    assert "exactly one of --config-file and --configmap" in done.stderr


def test_a_watched_configmap_moves_traffic_at_once(upstreams: Upstreams, directory: pathlib.Path) -> None:
    """Given a router watching a ConfigMap on a dev cluster, when the ConfigMap is patched (and
    when it is patched with a bad configuration), then traffic follows within a bounded poll."""
    with cluster.ThreadedDevCluster(directory / "devcluster") as dev:
        core = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(dev.kubeconfig_path)))
        data = {"router.json": json.dumps(configuration(upstreams, stable=100))}
        core.create_namespaced_config_map("default", {"metadata": {"name": "iris-router"}, "data": data})
        port = free_port()
        log = directory / "kiln-router-configmap.log"
        command = [str(ROUTER), "--host", "127.0.0.1", "--port", str(port), "--configmap", "default/iris-router"]
        with log.open("w") as sink:
            process = subprocess.Popen(
                command, env={**os.environ, "KUBECONFIG": str(dev.kubeconfig_path)}, stdout=sink, stderr=sink
            )
        router = RunningRouter(process, f"http://127.0.0.1:{port}", directory / "unused.json", log)
        try:
            eventually(lambda: _answers(router, "/readyz") == 200, "the router to read the ConfigMap", timeout=20)
            assert router.shown()["origin"] == "configmap default/iris-router"

            moved = configuration(upstreams, candidate=100)
            core.patch_namespaced_config_map("iris-router", "default", {"data": {"router.json": json.dumps(moved)}})
            eventually(lambda: router.shown()["config"]["weights"] == moved["weights"], "the watch to reload", 5)
            core.patch_namespaced_config_map("iris-router", "default", {"data": {"router.json": "{not json"}})
            eventually(lambda: router.metric("kiln_router_config_reloads_total", outcome="rejected") == 1, "a reject")

            with httpx.Client(base_url=router.url) as client:
                assert send(client, 20) == {("candidate", "1.1.0", 200): 20}
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
