"""Live traffic for the shadow example: inference requests through the ModelDeployment's Service
for a while, cycling through the 150 flowers of scikit-learn's iris data and asking for the
predicted class only (what the shadow comparison judges), then a count of who answered (variant
and model version) and how.

    python examples/shadow/traffic.py --seconds 180
"""

from __future__ import annotations

import argparse
import collections
import itertools
import subprocess
import time

import httpx
from sklearn.datasets import load_iris


def service_address(namespace: str, name: str) -> str:
    """The ClusterIP of the ModelDeployment's Service: on the dev cluster it is reachable from here."""
    command = ["kubectl", "get", "service", name, "-n", namespace, "-o", "jsonpath={.spec.clusterIP}"]
    return "http://" + subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", "-n", default="default")
    parser.add_argument("--name", default="iris-shadow", help="The ModelDeployment.")
    parser.add_argument("--model", default="iris", help="The model it serves.")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=50.0, help="Requests per second.")
    arguments = parser.parse_args()
    url = service_address(arguments.namespace, arguments.name) + f"/v2/models/{arguments.model}/infer"
    answered: collections.Counter[tuple[int, str, str]] = collections.Counter()
    deadline = time.monotonic() + arguments.seconds
    with httpx.Client(timeout=10) as client:
        for row in itertools.cycle(load_iris().data.tolist()):
            if time.monotonic() >= deadline:
                break
            tensor = {"name": "input-0", "datatype": "FP64", "shape": [1, 4], "data": row}
            body = {"inputs": [tensor], "outputs": [{"name": "predict"}]}
            try:
                response = client.post(url, json=body)
                version = response.json().get("model_version", "-") if response.status_code == 200 else "-"
                answered[(response.status_code, response.headers.get("x-kiln-variant", "-"), version)] += 1
            except httpx.HTTPError as error:
                answered[(0, type(error).__name__, "-")] += 1
            time.sleep(1 / arguments.rate)
    for (status, variant, version), count in sorted(answered.items()):
        print(f"{count:6d}  HTTP {status}  {variant:10s} {version}")


if __name__ == "__main__":
    main()
