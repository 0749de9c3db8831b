"""Benchmark kiln-server against MLServer and KServe: the same iris model, client and load.

Run with `.venv/bin/python tests/benchmarks/bench_server.py` (or `make bench`). It trains one
scikit-learn LogisticRegression on iris and writes it twice: as skops for kiln-server and as joblib
for MLServer's scikit-learn runtime and for a `kserve.Model` subclass, each peer in its own venv
under `.bench/` (created on first use, with the same scikit-learn as Kiln's, so all three run the
same estimator). Each server starts on 127.0.0.1 in turn, gets a warm-up, then the same closed-loop
load: CONCURRENCY keep-alive connections from one raw asyncio HTTP/1.1 client, each sending the
same Open Inference Protocol v2 request (asking for the `predict` output only, which every server
returns) as soon as its previous answer arrives, for SECONDS per case. Cases: one row, 32 rows.

It prints requests/s, p50 and p99 latency per server and case, kiln-server's ratios to the better
peer, and the in-process `predict` time, the floor no server can beat. A peer that cannot be
installed or started is reported and skipped. Every server process is stopped at the end.

Honest limits: the client and the server share this machine's cores (two here), so the client's
own CPU use is part of every number, equally for each server; each server runs as one process.
Not collected by pytest (the file name does not match test_*.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import joblib
import numpy as np
import sklearn
import skops.io
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from kiln.runtime.server import fastpath

REPO = pathlib.Path(__file__).resolve().parents[2]
CACHE = REPO / ".bench"
CONCURRENCY = 8
WARMUP_SECONDS = 2.0
START_TIMEOUT = 120.0
MODEL = "iris"
PLAIN = "kiln-plain"
"""kiln-server with --no-fast-predict: scikit-learn's own predict, as the peers call it."""

PEER_PACKAGES = {
    # MLServer 1.7.1 with uvloop 0.22+ kills its inference workers unless parallel_workers is 0; we
    # set that too, so inference runs in the server process as kiln-server's does.
    "mlserver": ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop<0.22"],
    "kserve": ["kserve"],
}

KSERVE_MODEL = textwrap.dedent(
    '''
    """A kserve.Model wrapping the benchmark's estimator, served on loopback."""
    import sys

    import joblib
    import kserve
    from kserve import InferOutput, InferRequest, InferResponse
    from kserve.utils.utils import generate_uuid


    class Iris(kserve.Model):
        def __init__(self, name, path):
            super().__init__(name)
            self.estimator = joblib.load(path)
            self.ready = True

        def predict(self, payload: InferRequest, headers=None):
            features = payload.inputs[0].as_numpy()
            predictions = self.estimator.predict(features)
            output = InferOutput(name="predict", shape=list(predictions.shape), datatype="INT64")
            output.set_data_from_numpy(predictions)
            response_id = payload.id or generate_uuid()
            return InferResponse(model_name=self.name, infer_outputs=[output], response_id=response_id)


    if __name__ == "__main__":
        model_path, port = sys.argv[1], int(sys.argv[2])
        from kserve.protocol.rest import server as rest_server

        # KServe binds 0.0.0.0; the benchmark keeps every server on loopback. No access log, as in
        # the other servers.
        original = rest_server.uvicorn.Config.__init__

        def loopback(self, *args, **kwargs):
            kwargs.update(host="127.0.0.1", access_log=False)
            original(self, *args, **kwargs)

        rest_server.uvicorn.Config.__init__ = loopback
        server = kserve.ModelServer(http_port=port, enable_grpc=False, workers=1, enable_latency_logging=False)
        server.start([Iris("iris", model_path)])
    '''
)


@dataclass(frozen=True)
class Result:
    server: str
    case: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def log(message: str) -> None:
    print(message, flush=True)


# --- the model -------------------------------------------------------------------------------


def write_model(directory: pathlib.Path) -> tuple[LogisticRegression, np.ndarray[Any, Any]]:
    features, labels = load_iris(return_X_y=True)
    estimator = LogisticRegression(max_iter=1000).fit(features, labels)
    skops.io.dump(estimator, directory / "model.skops")
    joblib.dump(estimator, directory / "model.joblib")
    return estimator, features


def request_body(rows: np.ndarray[Any, Any]) -> bytes:
    tensor = {"name": "input-0", "shape": list(rows.shape), "datatype": "FP64", "data": rows.reshape(-1).tolist()}
    return json.dumps({"inputs": [tensor], "outputs": [{"name": "predict"}]}).encode()


def in_process_floor(predict: Any, rows: np.ndarray[Any, Any], seconds: float = 2.0) -> float:
    """The median time of one `predict` call in this process, in seconds."""
    timings = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        predict(rows)
        timings.append(time.perf_counter() - started)
    return float(np.median(timings))


# --- the peers' virtualenvs ------------------------------------------------------------------


def peer_venv(name: str) -> pathlib.Path | None:
    """The peer's venv under .bench/, created on first use; None (with the reason printed) when
    it cannot be installed."""
    venv = CACHE / name
    stamp = venv / ".installed"
    packages = [*PEER_PACKAGES[name], f"scikit-learn=={sklearn.__version__}", f"joblib=={joblib.__version__}"]
    if stamp.exists() and stamp.read_text() == " ".join(packages):
        return venv
    log(f"installing {name} into {venv} ({' '.join(packages)}); this takes a few minutes the first time")
    shutil.rmtree(venv, ignore_errors=True)
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", *packages],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False, timeout=1800)
        if done.returncode != 0:
            log(f"  {name} could not be installed, so it is left out:\n{textwrap.indent(done.stderr[-2000:], '    ')}")
            return None
    stamp.write_text(" ".join(packages))
    return venv


# --- servers ---------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    infer_path: str


@contextlib.contextmanager
def started(name: str, command: list[str], port: int, infer_path: str, workdir: pathlib.Path) -> Iterator[Server]:
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as sink:
        process = subprocess.Popen(command, cwd=workdir, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(name, process, port, infer_path)
    try:
        wait_ready(server, log_path)
        yield server
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def wait_ready(server: Server, log_path: pathlib.Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    url = f"http://127.0.0.1:{server.port}/v2/models/{MODEL}/ready"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            tail = log_path.read_text()[-3000:]
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}:\n{tail}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} was not ready within {START_TIMEOUT}s:\n{log_path.read_text()[-3000:]}")


def kiln_command(workdir: pathlib.Path, port: int, *flags: str) -> list[str]:
    artifact = workdir / "model.skops"
    manifest = {
        "apiVersion": "kiln.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": "iris-1-0-0"},
        "spec": {
            "modelName": MODEL,
            "version": "1.0.0",
            "artifact": {
                "uri": f"file://{artifact}",
                "sha256": hashlib.sha256(artifact.read_bytes()).hexdigest(),
                "format": "skops",
            },
        },
    }
    (workdir / "modelversion.json").write_text(json.dumps(manifest))
    server = pathlib.Path(sys.executable).with_name("kiln-server")
    return [str(server), "--model-version", "modelversion.json", "--host", "127.0.0.1", "--port", str(port), *flags]


def mlserver_command(venv: pathlib.Path, workdir: pathlib.Path, port: int) -> list[str]:
    repository = workdir / "mlserver"
    (repository / MODEL).mkdir(parents=True, exist_ok=True)
    shutil.copy(workdir / "model.joblib", repository / MODEL / "model.joblib")
    settings = {
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "parallel_workers": 0,
        # debug (the default) writes an access log line per request; kiln-server writes none.
        "debug": False,
    }
    (repository / "settings.json").write_text(json.dumps(settings))
    model_settings = {
        "name": MODEL,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib"},
    }
    (repository / MODEL / "model-settings.json").write_text(json.dumps(model_settings))
    return [str(venv / "bin" / "mlserver"), "start", str(repository)]


def kserve_command(venv: pathlib.Path, workdir: pathlib.Path, port: int) -> list[str]:
    script = workdir / "kserve_iris.py"
    script.write_text(KSERVE_MODEL)
    return [str(venv / "bin" / "python"), str(script), str(workdir / "model.joblib"), str(port)]


# --- the load --------------------------------------------------------------------------------


@dataclass
class Load:
    """One case's load: the request every connection sends, when to record and when to stop."""

    port: int
    request: bytes
    record_after: float
    stop_at: float
    latencies: list[float]
    errors: list[int]


async def connection(load: Load) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", load.port)
    try:
        while (sent := time.perf_counter()) < load.stop_at:
            writer.write(load.request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            if sent >= load.record_after:
                load.latencies.append(time.perf_counter() - sent)
                if status != 200:
                    load.errors.append(status)
    finally:
        writer.close()


async def drive(port: int, path: str, body: bytes, seconds: float) -> tuple[list[float], list[int]]:
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    record_after = time.perf_counter() + WARMUP_SECONDS
    load = Load(port, request, record_after, record_after + seconds, [], [])
    await asyncio.gather(*(connection(load) for _ in range(CONCURRENCY)))
    return load.latencies, load.errors


def measure(server: Server, case: str, body: bytes, seconds: float) -> Result:
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    latencies, errors = runner(drive(server.port, server.infer_path, body, seconds))
    timings = np.asarray(latencies)
    result = Result(
        server=server.name,
        case=case,
        requests_per_second=len(timings) / seconds,
        p50_ms=float(np.percentile(timings, 50)) * 1e3,
        p99_ms=float(np.percentile(timings, 99)) * 1e3,
        errors=len(errors),
    )
    log(
        f"  {result.server:<12} {result.case:<8} {result.requests_per_second:>9,.0f} req/s"
        f"  p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  errors {result.errors}"
    )
    return result


def check_answer(server: Server, body: bytes, expected: list[int]) -> None:
    """Every server must give the same predictions before its speed counts."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}{server.infer_path}", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.loads(response.read())
    predict = next(output for output in answer["outputs"] if output["name"] == "predict")
    if [int(value) for value in np.asarray(predict["data"]).reshape(-1)] != expected:
        raise RuntimeError(f"{server.name} answered {predict['data']}, not {expected}")


# --- the report ------------------------------------------------------------------------------


def report(results: list[Result], floors: dict[str, float], short_floors: dict[str, float], missing: list[str]) -> None:
    log("")
    log(f"{'server':<12} {'case':<8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for result in results:
        log(
            f"{result.server:<12} {result.case:<8} {result.requests_per_second:>9,.0f} {result.p50_ms:>8.2f}"
            f" {result.p99_ms:>8.2f} {result.errors:>7}"
        )
    for what, by_case in (("estimator.predict", floors), ("kiln's short path", short_floors)):
        for case, floor in by_case.items():
            log(f"{'in-process':<12} {case:<8} {1 / floor:>9,.0f} {floor * 1e3:>8.3f} {'':>17}  ({what} alone)")
    log("")
    for case in floors:
        peers = [r for r in results if r.server not in ("kiln-server", PLAIN) and r.case == case]
        if not peers:
            continue
        best = max(peers, key=lambda r: r.requests_per_second)
        for kiln in (r for r in results if r.server in ("kiln-server", PLAIN) and r.case == case):
            log(
                f"{case}: {kiln.server} {kiln.requests_per_second / best.requests_per_second:.2f}x the throughput of "
                f"{best.server} (the better peer), p99 {kiln.p99_ms / best.p99_ms:.2f}x its p99"
            )
    for name in missing:
        log(f"{name}: not measured (see above)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per server and case")
    parser.add_argument("--servers", default=f"kiln-server,{PLAIN},mlserver,kserve", help="comma-separated servers")
    options = parser.parse_args()
    chosen = options.servers.split(",")
    CACHE.mkdir(exist_ok=True)
    workdir = CACHE / "run"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir()
    estimator, features = write_model(workdir)
    cases = {"1 row": features[:1], "32 rows": features[::5][:32]}
    bodies = {case: request_body(rows) for case, rows in cases.items()}
    log(f"scikit-learn {sklearn.__version__}, {type(estimator).__name__} on iris; {CONCURRENCY} connections")
    # Anything else running on the machine shows in every server's numbers; say how busy it was.
    log(f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at the start")
    floors = {case: in_process_floor(estimator.predict, rows) for case, rows in cases.items()}
    short = fastpath.predictor(estimator)
    short_floors = {case: in_process_floor(short, rows) for case, rows in cases.items()}

    launchers = {
        "kiln-server": lambda port: kiln_command(workdir, port),
        PLAIN: lambda port: kiln_command(workdir, port, "--no-fast-predict"),
        "mlserver": lambda port: mlserver_command(venv, workdir, port),
        "kserve": lambda port: kserve_command(venv, workdir, port),
    }
    results: list[Result] = []
    missing: list[str] = []
    for name in chosen:
        venv = CACHE / "none"
        if name in PEER_PACKAGES:
            found = peer_venv(name)
            if found is None:
                missing.append(name)
                continue
            venv = found
        port = free_port()
        log(f"{name}:")
        try:
            with started(name, launchers[name](port), port, f"/v2/models/{MODEL}/infer", workdir) as server:
                for case, body in bodies.items():
                    check_answer(server, body, estimator.predict(cases[case]).tolist())
                    results.append(measure(server, case, body, options.seconds))
        except (RuntimeError, OSError) as error:
            log(f"  {name} could not be measured: {error}")
            missing.append(name)
    report(results, floors, short_floors, missing)
    log(f"load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
