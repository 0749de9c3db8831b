"""Prometheus discovery of pods, and a real Prometheus to scrape them.

The dev cluster keeps a file_sd targets file of every running pod annotated
`prometheus.io/scrape: "true"` (port from `prometheus.io/port` or the first
container port, path from `prometheus.io/path`), labelled with its namespace,
pod, node and pod labels. `kiln cluster start --prometheus` runs the
`prometheus` binary (Debian package `prometheus`) against that file with a
one-second scrape interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import pathlib
import re
import shutil
import socket
from collections.abc import Iterable
from typing import Any

import yaml

from kiln.devcluster import controllers
from kiln.devcluster.controllers import POD

log = logging.getLogger(__name__)

Object = dict[str, Any]

SCRAPE = "prometheus.io/scrape"
PORT = "prometheus.io/port"
PATH = "prometheus.io/path"
SCHEME = "prometheus.io/scheme"
INSTALL_HINT = "Prometheus is not installed: install it with `sudo apt-get install prometheus` (Debian/Ubuntu)"
READY_TIMEOUT_SECONDS = 60.0


def _label_name(key: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


def scrape_target(pod: Object) -> Object | None:
    """The file_sd entry of one pod, or None when it is not to be scraped."""
    metadata, status = pod["metadata"], pod.get("status") or {}
    annotations = metadata.get("annotations") or {}
    if annotations.get(SCRAPE) != "true" or status.get("phase") != "Running" or not status.get("podIP"):
        return None
    if metadata.get("deletionTimestamp"):
        return None
    port = annotations.get(PORT)
    if port is None:
        ports = [p for c in pod["spec"].get("containers") or [] for p in c.get("ports") or []]
        if not ports:
            return None
        port = ports[0]["containerPort"]
    labels = {_label_name(k): v for k, v in (metadata.get("labels") or {}).items()}
    labels.update(
        {
            "namespace": metadata["namespace"],
            "pod": metadata["name"],
            "node": pod["spec"].get("nodeName", ""),
            "__metrics_path__": annotations.get(PATH, "/metrics"),
            "__scheme__": annotations.get(SCHEME, "http"),
        }
    )
    return {"targets": [f"{status['podIP']}:{port}"], "labels": labels}


def targets(pods: Iterable[Object]) -> list[Object]:
    found = [target for target in map(scrape_target, pods) if target is not None]
    return sorted(found, key=lambda target: target["targets"][0])


class ScrapeTargets(controllers.FileWriter):
    """Keeps the file_sd targets file current."""

    name = "prometheus-discovery"
    watched = (POD,)

    def render(self) -> str:
        return json.dumps(targets(self.client.list(POD)), indent=1, sort_keys=True)


def configuration(targets_file: pathlib.Path) -> Object:
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {
                "job_name": "kubernetes-pods",
                "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}],
            }
        ],
    }


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class Prometheus:
    """A real Prometheus process scraping the dev cluster's pods; stopped with the cluster."""

    def __init__(
        self, state_dir: pathlib.Path, targets_file: pathlib.Path, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.dir = state_dir / "prometheus"
        self.targets_file = targets_file
        self.host = host
        self.port = port or free_port(host)
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError(INSTALL_HINT)
        self.dir.mkdir(parents=True, exist_ok=True)
        config_file = self.dir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(configuration(self.targets_file), sort_keys=False))
        if not self.targets_file.exists():
            self.targets_file.write_text("[]")
        with (self.dir / "prometheus.log").open("ab") as output:
            self.process = await asyncio.create_subprocess_exec(
                binary,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address={self.host}:{self.port}",
                "--storage.tsdb.retention.time=1d",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,
            )
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT_SECONDS
        while loop.time() < deadline:
            assert self.process is not None
            if self.process.returncode is not None:
                raise RuntimeError(
                    f"prometheus exited with {self.process.returncode}; see {self.dir / 'prometheus.log'}"
                )
            with contextlib.suppress(OSError):
                reader, writer = await asyncio.open_connection(self.host, self.port)
                writer.write(f"GET /-/ready HTTP/1.0\r\nHost: {self.host}\r\n\r\n".encode())
                line = await reader.readline()
                writer.close()
                if b" 200 " in line:
                    return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"prometheus did not become ready within {READY_TIMEOUT_SECONDS:g}s")

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
