"""Live traffic for the rollout examples: iris inference requests through a ModelDeployment's
Service for a while, then a count of who answered (variant and model version) and how.

    python examples/traffic.py --name iris --seconds 240                      # canary-rollout
    python examples/traffic.py --name iris-blue-green --preview-percent 10    # blue-green
    python examples/traffic.py --name iris-shadow --every-flower              # shadow

`--preview-percent` sends that share of requests with `x-kiln-variant: preview` (a blue-green
preview takes no other traffic); `--every-flower` cycles through the 150 flowers of scikit-learn's
iris data and asks for the predicted class only, which is what a shadow comparison judges.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import random
import subprocess
import time
from collections.abc import Iterator

import httpx

FEW_ROWS = ([5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3])


def service_address(namespace: str, name: str) -> str:
    """The ClusterIP of the ModelDeployment's Service: on the dev cluster it is reachable from here."""
    command = ["kubectl", "get", "service", name, "-n", namespace, "-o", "jsonpath={.spec.clusterIP}"]
    return "http://" + subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


def bodies(every_flower: bool) -> Iterator[dict[str, object]]:
    if every_flower:
        from sklearn.datasets import load_iris

        for row in itertools.cycle(load_iris().data.tolist()):
            tensor = {"name": "input-0", "datatype": "FP64", "shape": [1, 4], "data": row}
            yield {"inputs": [tensor], "outputs": [{"name": "predict"}]}
    while True:
        yield {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 4], "data": random.choice(FEW_ROWS)}]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", "-n", default="default")
    parser.add_argument("--name", default="iris", help="The ModelDeployment.")
    parser.add_argument("--model", default="iris", help="The model it serves.")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=50.0, help="Requests per second.")
    parser.add_argument("--preview-percent", type=float, default=0.0, help="The share of requests for the preview.")
    parser.add_argument("--every-flower", action="store_true", help="Cycle through all of iris, class output only.")
    arguments = parser.parse_args()
    url = service_address(arguments.namespace, arguments.name) + f"/v2/models/{arguments.model}/infer"
    answered: collections.Counter[tuple[str, int, str, str]] = collections.Counter()
    deadline = time.monotonic() + arguments.seconds
    with httpx.Client(timeout=10) as client:
        for body in bodies(arguments.every_flower):
            if time.monotonic() >= deadline:
                break
            asked = "preview" if random.random() * 100 < arguments.preview_percent else "live"
            headers = {"x-kiln-variant": "preview"} if asked == "preview" else {}
            try:
                response = client.post(url, json=body, headers=headers)
                version = response.json().get("model_version", "-") if response.status_code == 200 else "-"
                answered[(asked, response.status_code, response.headers.get("x-kiln-variant", "-"), version)] += 1
            except httpx.HTTPError as error:
                answered[(asked, 0, type(error).__name__, "-")] += 1
            time.sleep(1 / arguments.rate)
    for (asked, status, variant, version), count in sorted(answered.items()):
        print(f"{count:6d}  {asked:8s} HTTP {status}  {variant:10s} {version}")


if __name__ == "__main__":
    main()
