"""The demo's load generator: batches of iris flowers through the ModelDeployment's router, one
request after another, each answer counted by the version that gave it; and the shifted data
that drift makes the deployment retrain on."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter

import httpx
import numpy as np
from sklearn.datasets import load_iris

IRIS = load_iris()
SHIFT = np.array([1.0, 0.8, 2.0, 0.8])
"""The shifted traffic's means move by this much per feature: past the training range's top bins."""
ROWS_PER_REQUEST = 5


def shifted_dataset() -> bytes:
    """The iris data with every feature moved by SHIFT, as CSV with a `target` column: what the
    world looks like once the traffic has shifted, which the retraining learns from."""
    shifted = np.column_stack([IRIS.data + SHIFT, IRIS.target])
    header = ",".join([*IRIS.feature_names, "target"])
    rows = "\n".join(",".join(f"{value:g}" for value in row) for row in shifted)
    return f"{header}\n{rows}\n".encode()


class LoadGenerator:
    """Live requests through `url` until stopped; `shifted` moves every flower by SHIFT."""

    def __init__(self, url: str, model: str) -> None:
        self.endpoint = f"{url}/v2/models/{model}/infer"
        self.shifted = False
        self.answers: Counter[tuple[str, int]] = Counter()
        """(model version, or the variant when an error names none; HTTP status) → answers."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-traffic", daemon=True)

    @property
    def sent(self) -> int:
        return sum(self.answers.values())

    def _body(self, sent: int) -> dict[str, object]:
        rows = IRIS.data[(sent * ROWS_PER_REQUEST + np.arange(ROWS_PER_REQUEST)) % len(IRIS.data)]
        if self.shifted:
            rows = rows + SHIFT
        tensor = {"name": "input-0", "shape": [ROWS_PER_REQUEST, 4], "datatype": "FP64", "data": rows.ravel().tolist()}
        return {"inputs": [tensor]}

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(self.endpoint, json=self._body(self.sent))
                except httpx.HTTPError as error:
                    self.answers[(type(error).__name__, 0)] += 1
                else:
                    version = None
                    if response.status_code == 200:
                        with contextlib.suppress(ValueError):
                            version = response.json().get("model_version")
                    who = version or response.headers.get("x-kiln-variant", "-")
                    self.answers[(who, response.status_code)] += 1
                self._stop.wait(0.05)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=15)
