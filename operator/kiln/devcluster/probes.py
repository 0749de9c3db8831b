"""Container probes as the kubelet runs them: httpGet, tcpSocket and exec, with their thresholds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Object = dict[str, Any]


@dataclass
class Result:
    success: bool
    message: str = ""


def _port(probe_port: Any, container: Object) -> int:
    if isinstance(probe_port, int):
        return probe_port
    if isinstance(probe_port, str) and probe_port.isdigit():
        return int(probe_port)
    for port in container.get("ports") or []:
        if port.get("name") == probe_port:
            return int(port["containerPort"])
    raise ValueError(f"port {probe_port!r} is not a named port of container {container.get('name')}")


async def _http_get(action: Object, container: Object, pod_ip: str, timeout: float) -> Result:
    host = action.get("host") or pod_ip
    port = _port(action.get("port"), container)
    path = action.get("path") or "/"
    if action.get("scheme", "HTTP").upper() != "HTTP":
        return Result(False, "HTTPS probes are not supported by the dev cluster's kubelet")
    headers = "".join(f"{h['name']}: {h.get('value', '')}\r\n" for h in action.get("httpHeaders") or [])
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.32\r\nAccept: */*\r\n"
    request += f"{headers}Connection: close\r\n\r\n"
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(request.encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    parts = status_line.decode(errors="replace").split()
    code = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
    if 200 <= code < 400:
        return Result(True)
    return Result(False, f"HTTP probe failed with statuscode: {code}")


async def _tcp_socket(action: Object, container: Object, pod_ip: str, timeout: float) -> Result:
    host = action.get("host") or pod_ip
    port = _port(action.get("port"), container)
    _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    writer.close()
    return Result(True)


async def _exec(action: Object, env: Mapping[str, str], cwd: str, timeout: float) -> Result:
    command = action.get("command") or []
    if not command:
        return Result(False, "exec probe has no command")
    process = await asyncio.create_subprocess_exec(
        *command, env=dict(env), cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        return Result(False, f"command timed out after {timeout:g}s")
    if process.returncode == 0:
        return Result(True)
    text = output.decode(errors="replace").strip()
    return Result(False, f"command {command!r} exited with {process.returncode}: {text[-200:]}")


async def run(probe: Object, container: Object, pod_ip: str, env: Mapping[str, str], cwd: str) -> Result:
    """One probe attempt; connection errors and timeouts are failures, never exceptions."""
    timeout = float(probe.get("timeoutSeconds", 1))
    try:
        if "httpGet" in probe:
            return await _http_get(probe["httpGet"], container, pod_ip, timeout)
        if "tcpSocket" in probe:
            return await _tcp_socket(probe["tcpSocket"], container, pod_ip, timeout)
        if "exec" in probe:
            return await _exec(probe["exec"], env, cwd, timeout)
    except (OSError, TimeoutError, ValueError) as error:
        return Result(False, f"probe failed: {error or type(error).__name__}")
    return Result(False, "the dev cluster's kubelet supports httpGet, tcpSocket and exec probes")


class Prober:
    """Counts consecutive results against successThreshold and failureThreshold."""

    def __init__(self, probe: Object, initially: bool) -> None:
        self.probe = probe
        self.passing = initially
        self._successes = 0
        self._failures = 0
        self.last_message = ""

    @property
    def period(self) -> float:
        return float(self.probe.get("periodSeconds", 10))

    @property
    def initial_delay(self) -> float:
        return float(self.probe.get("initialDelaySeconds", 0))

    def record(self, result: Result) -> bool:
        """Fold in one result; True when the verdict (passing or not) changed."""
        before = self.passing
        if result.success:
            self._successes += 1
            self._failures = 0
            if self._successes >= int(self.probe.get("successThreshold", 1)):
                self.passing = True
        else:
            self._failures += 1
            self._successes = 0
            self.last_message = result.message
            if self._failures >= int(self.probe.get("failureThreshold", 3)):
                self.passing = False
        return self.passing != before
