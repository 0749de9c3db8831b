"""Prometheus in the dev cluster: annotated pods are discovered and really scraped.

A pod running a `prometheus_client` exporter, annotated `prometheus.io/scrape`,
appears in the file_sd targets file with its namespace and pod labels, and the
dev cluster's own Prometheus (a real `prometheus` process) scrapes its counter.
A pod without the annotation is never a target.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import httpx
from conftest import Kube, process_exists
from polling import eventually

from kiln.devcluster import cluster, config, prometheus

NS = "default"
WAIT = 20.0
SCRAPE_WAIT = 40.0  # Prometheus waits some seconds before its first scrape of a new target
METRIC = "kiln_devcluster_test_requests_total"
EXPORTER = """\
import time
import prometheus_client

requests = prometheus_client.Counter("kiln_devcluster_test_requests", "Requests the test pod served")
requests.inc(7)
prometheus_client.start_http_server(9100)
print("exporting", flush=True)
while True:
    time.sleep(1)
"""


def exporter_pod(name: str, script: pathlib.Path, annotations: dict[str, str]) -> dict[str, Any]:
    container = {"name": "exporter", "image": "python:3.12-slim", "command": ["python", str(script)],
                 "ports": [{"name": "metrics", "containerPort": 9100}]}  # fmt: skip
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "exporter"}, "annotations": annotations},
        "spec": {"containers": [container]},
    }


def query(url: str, promql: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def test_an_annotated_pod_is_discovered_and_scraped_by_prometheus(tmp_path: pathlib.Path) -> None:
    script = tmp_path / "exporter.py"
    script.write_text(EXPORTER)
    annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": "9100", "prometheus.io/path": "/metrics"}
    settings = config.load(None, {"prometheus": True})
    with cluster.ThreadedDevCluster(tmp_path / "devcluster", settings=settings) as dev:
        server = dev.prometheus
        assert server is not None
        assert server.process is not None
        prometheus_pid = server.process.pid
        kube = Kube(dev)
        try:
            kube.core.create_namespaced_pod(NS, exporter_pod("scraped", script, annotations))
            kube.core.create_namespaced_pod(NS, exporter_pod("unscraped", script, {}))
            pods = {}
            for name in ("scraped", "unscraped"):

                def exporting(name: str = name) -> bool:
                    return kube.kubectl("logs", name).stdout == "exporting\n"

                eventually(exporting, f"{name} to export", WAIT)
                pods[name] = kube.api.sanitize_for_serialization(kube.core.read_namespaced_pod(name, NS))
            address = pods["scraped"]["status"]["podIP"]

            def listed() -> list[dict[str, Any]]:
                text = dev.targets_file.read_text() if dev.targets_file.exists() else "[]"
                found: list[dict[str, Any]] = json.loads(text)
                return found

            targets = eventually(listed, "the targets file to list the annotated pod", WAIT)
            assert targets == [{
                "targets": [f"{address}:9100"],
                "labels": {"app": "exporter", "namespace": NS, "pod": "scraped", "node": "node-1",
                           "__metrics_path__": "/metrics", "__scheme__": "http"},
            }]  # fmt: skip
            assert prometheus.scrape_target(pods["unscraped"]) is None
            assert prometheus.scrape_target(pods["scraped"]) == targets[0]

            series = eventually(lambda: query(server.url, METRIC), f"Prometheus to scrape {METRIC}", SCRAPE_WAIT)
            assert [entry["metric"] for entry in series] == [{
                "__name__": METRIC, "app": "exporter", "instance": f"{address}:9100", "job": "kubernetes-pods",
                "namespace": NS, "node": "node-1", "pod": "scraped",
            }]  # fmt: skip
            assert float(series[0]["value"][1]) == 7.0
            (up,) = query(server.url, 'up{job="kubernetes-pods"}')
            assert (up["metric"]["pod"], up["value"][1]) == ("scraped", "1")
        finally:
            kube.close()
    eventually(lambda: not process_exists(prometheus_pid), "Prometheus to stop with the dev cluster", 10.0)
