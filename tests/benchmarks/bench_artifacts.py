"""Benchmark s3:// artifacts: a 2 GiB artifact uploaded, verified by the registry and served by
kiln-server, with how much memory each process grows by; and obstore against boto3 on the same
transfers.

Run with `.venv/bin/python tests/benchmarks/bench_artifacts.py` (or `make bench`). It starts moto's
S3 server (`moto_server`, the tests' real S3 protocol server) on 127.0.0.1 and writes, in a
temporary directory, a skops file of an iris LogisticRegression padded to the size asked for
(`--size-mib`, 2048 by default) with an entry no schema refers to, stored uncompressed: the bytes a
transfer moves and a digest covers are the size's, while the model that loads stays small, so what
is measured is the artifact path, not scikit-learn's memory for a large model. Then, each in a
process of its own:

- the upload, as kiln-trainer makes it (`kiln.artifacts.write`, multipart);
- the registry's ArtifactVerified check (`kiln.controllers.modelversion.check_artifact`), streaming
  the object through sha256; its growth is the process's peak RSS less its RSS before the check;
- kiln-server downloading the artifact into its cache, verifying it and answering an inference
  request; its growth is its peak RSS less that of a kiln-server serving the unpadded model, the
  peer measured in the same run;
- the peer library: boto3 (`download_fileobj`, `upload_file`, sha256 of the bytes as they arrive)
  on a `--peer-mib` object (512 by default), against obstore through Kiln's store on the same,
  each the better of two rounds run in alternating order.

It prints seconds, MiB/s and RSS growth in MiB; nothing is asserted. Honest limits: moto is a
Python server and is the slowest part of every transfer, so the throughputs are moto's as much as
the client's; the memory numbers are the clients' own and do not depend on it.
Not collected by pytest (the file name does not match test_*.py).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from typing import Any

import httpx
import skops.io
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path[:0] = [
    str(REPO / "tests" / "devcluster"),
    str(REPO / "tests" / "integration"),
    str(REPO / "tests" / "runtime"),
]

import s3_server  # noqa: E402  (the tests' helpers, found through the path set above)
from polling import eventually  # noqa: E402
from server_process import kiln_server  # noqa: E402

BUCKET = "bench"
MIB = 1 << 20
SETOSA = [5.1, 3.5, 1.4, 0.2]

UPLOAD = """
import json, pathlib, sys, time
from kiln import artifacts
path, uri = pathlib.Path(sys.argv[1]), sys.argv[2]
start = time.perf_counter()
written = artifacts.write(uri, path, artifacts.Settings.from_environment())
print(json.dumps({"seconds": time.perf_counter() - start, "sha256": written.sha256, "size": written.size}))
"""

VERIFY = """
import json, sys, time
from kiln import artifacts
from kiln.api import modelversion
from kiln.controllers import modelversion as controller

def rss(field):
    line = next(l for l in open("/proc/self/status") if l.startswith(field))
    return int(line.split()[1]) / 1024

artifact = modelversion.Artifact(uri=sys.argv[1], sha256=sys.argv[2])
settings = artifacts.Settings.from_environment()
before = rss("VmRSS:")
start = time.perf_counter()
check = controller.check_artifact(artifact, "bench", settings, timeout=3600)
print(json.dumps({"seconds": time.perf_counter() - start, "outcome": check.outcome, "message": check.message,
                  "before_mib": before, "peak_mib": rss("VmHWM:")}))
"""

PEER = """
import hashlib, json, os, pathlib, sys, time
import boto3
path, bucket, key = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
client = boto3.client("s3", region_name=os.environ["AWS_REGION"])

def rss(field):
    line = next(l for l in open("/proc/self/status") if l.startswith(field))
    return int(line.split()[1]) / 1024

class Digesting:
    def __init__(self):
        self.digest = hashlib.sha256()
    def write(self, data):
        self.digest.update(data)
        return len(data)

before = rss("VmRSS:")
start = time.perf_counter()
client.upload_file(str(path), bucket, key)
uploaded = time.perf_counter() - start
sink = Digesting()
start = time.perf_counter()
client.download_fileobj(bucket, key, sink)
print(json.dumps({"upload_seconds": uploaded, "download_seconds": time.perf_counter() - start,
                  "sha256": sink.digest.hexdigest(), "before_mib": before, "peak_mib": rss("VmHWM:")}))
"""

OURS = """
import hashlib, json, pathlib, sys, time
from kiln import artifacts
path, uri = pathlib.Path(sys.argv[1]), sys.argv[2]
settings = artifacts.Settings.from_environment()

def rss(field):
    line = next(l for l in open("/proc/self/status") if l.startswith(field))
    return int(line.split()[1]) / 1024

before = rss("VmRSS:")
start = time.perf_counter()
artifacts.write(uri, path, settings)
uploaded = time.perf_counter() - start
start = time.perf_counter()
digest = artifacts.sha256_of(artifacts.store_for(uri, settings).chunks(uri))
print(json.dumps({"upload_seconds": uploaded, "download_seconds": time.perf_counter() - start,
                  "sha256": digest, "before_mib": before, "peak_mib": rss("VmHWM:")}))
"""


def say(message: str) -> None:
    print(message, flush=True)


def run_json(script: str, *args: str, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=3600, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"a benchmark step failed:\n{done.stdout}{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def sha256_of(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(8 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def write_models(directory: pathlib.Path, size: int) -> tuple[pathlib.Path, pathlib.Path]:
    """The iris model as skops, and the same archive padded to `size` bytes."""
    features, labels = load_iris(return_X_y=True)
    small = directory / "small.skops"
    skops.io.dump(LogisticRegression(max_iter=500).fit(features, labels), small)
    padded = directory / "padded.skops"
    padded.write_bytes(small.read_bytes())
    block = os.urandom(MIB)
    with (
        zipfile.ZipFile(padded, "a", compression=zipfile.ZIP_STORED, allowZip64=True) as archive,
        archive.open(zipfile.ZipInfo("padding.bin"), "w", force_zip64=True) as stream,
    ):
        for _ in range(max(0, size - small.stat().st_size) // MIB):
            stream.write(block)
    return small, padded


def model_version(uri: str, digest: str, size: int, version: str) -> dict[str, Any]:
    return {
        "apiVersion": "kiln.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": f"iris-{version.replace('.', '-')}", "namespace": "bench"},
        "spec": {
            "modelName": "iris",
            "version": version,
            "artifact": {"uri": uri, "sha256": digest, "sizeBytes": size},
        },
    }


def peak_rss_mib(pid: int) -> float:
    line = next(line for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines() if "VmHWM" in line)
    return int(line.split()[1]) / 1024


def served(directory: pathlib.Path, version: dict[str, Any], env: dict[str, str]) -> tuple[float, float]:
    """Seconds until kiln-server is ready with the version, and its peak RSS in MiB once it answered."""
    cache = directory / f"cache-{version['spec']['version']}"
    start = time.perf_counter()
    with kiln_server(directory, [version], env={**env, "KILN_ARTIFACT_CACHE": str(cache)}, through_env=True) as server:
        eventually(lambda: server.get("/v2/health/ready").status_code == 200, "kiln-server ready", 3600)
        ready = time.perf_counter() - start
        body = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": SETOSA}]}
        answer = httpx.post(f"{server.url}/v2/models/iris/infer", json=body, timeout=30)
        if answer.status_code != 200:
            raise SystemExit(f"kiln-server did not answer: {answer.text}")
        return ready, peak_rss_mib(server.process.pid)


def mib_per_second(size: int, seconds: float) -> str:
    return f"{size / MIB / seconds:7.1f} MiB/s"


def bench(directory: pathlib.Path, size: int, peer_size: int) -> None:
    with s3_server.s3_server(directory) as s3:
        s3.create_bucket(BUCKET)
        env = {**os.environ, **s3.env()}
        small, padded = write_models(directory, size)
        size, digest = padded.stat().st_size, sha256_of(padded)
        say(f"artifact: {size / MIB:.0f} MiB, sha256 {digest}")

        uri = f"s3://{BUCKET}/iris/2.0.0/model.skops"
        uploaded = run_json(UPLOAD, str(padded), uri, env=env)
        assert uploaded["sha256"] == digest, uploaded
        say(
            f"upload (kiln-trainer's write):   {uploaded['seconds']:7.1f} s {mib_per_second(size, uploaded['seconds'])}"
        )

        verified = run_json(VERIFY, uri, digest, env=env)
        assert verified["outcome"] == "Verified", verified
        growth = verified["peak_mib"] - verified["before_mib"]
        say(
            f"registry verification:          {verified['seconds']:7.1f} s {mib_per_second(size, verified['seconds'])}"
            f"   RSS growth {growth:6.1f} MiB"
        )

        small_uri = f"s3://{BUCKET}/iris/1.0.0/model.skops"
        run_json(UPLOAD, str(small), small_uri, env=env)
        small_ready, small_peak = served(
            directory, model_version(small_uri, sha256_of(small), small.stat().st_size, "1.0.0"), env
        )
        large_ready, large_peak = served(directory, model_version(uri, digest, size, "2.0.0"), env)
        say(
            f"kiln-server, download to ready: {large_ready:7.1f} s {mib_per_second(size, large_ready)}"
            f"   peak RSS {large_peak:6.1f} MiB against {small_peak:6.1f} MiB serving the unpadded"
            f" model ({small_ready:.1f} s): growth {large_peak - small_peak:6.1f} MiB"
        )

        peer_file = directory / "peer.bin"
        with peer_file.open("wb") as stream, padded.open("rb") as source:
            stream.write(source.read(peer_size))
        peer_digest = sha256_of(peer_file)
        ours, theirs = peer_rounds(peer_file, env)
        assert ours["sha256"] == theirs["sha256"] == peer_digest, (ours, theirs)
        say(f"peer library on {peer_size / MIB:.0f} MiB (upload, download with sha256, RSS growth):")
        for name, result in (("obstore (Kiln)", ours), ("boto3", theirs)):
            say(
                f"  {name:15} {mib_per_second(peer_size, result['upload_seconds'])}"
                f" {mib_per_second(peer_size, result['download_seconds'])}"
                f"   {result['peak_mib'] - result['before_mib']:6.1f} MiB"
            )
        say(
            f"  boto3 / obstore: upload time x{theirs['upload_seconds'] / ours['upload_seconds']:.2f}, download time"
            f" x{theirs['download_seconds'] / ours['download_seconds']:.2f}, RSS growth"
            f" x{(theirs['peak_mib'] - theirs['before_mib']) / max(1.0, ours['peak_mib'] - ours['before_mib']):.2f}"
        )


def peer_rounds(peer_file: pathlib.Path, env: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """obstore's and boto3's best of two rounds, in alternating order, since the shared S3 server
    warms up and slows down with what it holds."""
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "theirs": []}
    for turn in range(2):
        order = ["ours", "theirs"] if turn == 0 else ["theirs", "ours"]
        for who in order:
            key = f"peer/{who}-{turn}.bin"
            if who == "ours":
                runs[who].append(run_json(OURS, str(peer_file), f"s3://{BUCKET}/{key}", env=env))
            else:
                runs[who].append(run_json(PEER, str(peer_file), BUCKET, key, env=env))
    best = {
        who: min(results, key=lambda result: result["upload_seconds"] + result["download_seconds"])
        for who, results in runs.items()
    }
    return best["ours"], best["theirs"]


@contextlib.contextmanager
def workspace() -> Iterator[pathlib.Path]:
    with tempfile.TemporaryDirectory(prefix="kiln-bench-artifacts-") as directory:
        yield pathlib.Path(directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=2048, help="the padded artifact's size")
    parser.add_argument("--peer-mib", type=int, default=512, help="the object obstore and boto3 both move")
    arguments = parser.parse_args()
    with workspace() as directory:
        bench(directory, arguments.size_mib * MIB, arguments.peer_mib * MIB)


if __name__ == "__main__":
    main()
