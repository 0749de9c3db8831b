"""A canary judged on live accuracy end to end: a client sends each prediction's ground truth back
through the ModelDeployment's router to the kiln-server that made it, a real Prometheus scrapes the
joined counts, and `kiln run` compares the candidate's accuracy with stable's using the ready-made
`live-accuracy` metric.

The client decides the truth: it agrees with stable's predictions 19 times in 20 and with the
candidate's 3 times in 5, so stable is right 95% of the time and the candidate 60%.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from typing import Any

import httpx
from rollout_world import INFER, IRIS_ROWS, World
from test_canary_rollout import INTERVAL_SECONDS, canary, serving

from kiln.delivery import analysis

RIGHT_OUT_OF = {"1.0.0": (19, 20), "1.1.0": (3, 5)}
"""Per version: how many of each run of predictions get their own class back as the truth."""


def live_accuracy() -> dict[str, Any]:
    """The ready-made template with this suite's short interval: enough room for the inconclusive
    answers until the candidate has 20 labels, and a count no run of those reaches first."""
    template = analysis.TEMPLATES["live-accuracy"].model_dump(by_alias=True, exclude_none=True, mode="json")
    return {**template, "interval": f"{INTERVAL_SECONDS:g}s", "initialDelay": "4s", "count": 12, "inconclusiveLimit": 8}


@dataclasses.dataclass
class Labelling:
    """Predictions through the router, each followed by its truth posted to the version that served it."""

    url: str
    labelled: Counter[str] = dataclasses.field(default_factory=Counter)
    refused: Counter[tuple[str, int, str]] = dataclasses.field(default_factory=Counter)
    """(version, HTTP status, error) of every truth not joined."""
    _stop: threading.Event = dataclasses.field(default_factory=threading.Event)

    def truth(self, version: str, predicted: int) -> int:
        right, out_of = RIGHT_OUT_OF[version]
        wrong = self.labelled[version] % out_of >= right
        return (predicted + 1) % 3 if wrong else predicted

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            sent = 0
            while not self._stop.is_set():
                request_id, row = f"req-{sent}", IRIS_ROWS[sent % len(IRIS_ROWS)]
                sent += 1
                tensor = {"name": "features", "shape": [1, 4], "datatype": "FP64", "data": row}
                try:
                    answer = client.post(INFER, json={"id": request_id, "inputs": [tensor]})
                    if answer.status_code != 200:
                        continue
                    version = answer.json()["model_version"]
                    predicted = int(answer.json()["outputs"][0]["data"][0])
                    truth = {"id": request_id, "truth": self.truth(version, predicted)}
                    posted = client.post(f"/v2/models/iris/versions/{version}/feedback", json=truth)
                except httpx.HTTPError:
                    continue
                if posted.status_code == 200:
                    self.labelled[version] += 1
                else:
                    self.refused[version, posted.status_code, posted.json().get("error", "")] += 1

    def __enter__(self) -> Labelling:
        self._thread = threading.Thread(target=self.run, name="labelling", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def test_a_canary_less_accurate_than_stable_on_live_labels_is_rolled_back(world: World, namespace: str) -> None:
    steps = [{"setWeight": 50}, {"analysis": {}}, {"setWeight": 100}]
    url = serving(world, namespace, canary("1.0.0", steps, live_accuracy()), "1.0.0", "1.1.0")

    with Labelling(url) as labelling:
        world.wait_for(namespace, "stable labelled", lambda _: labelling.labelled["1.0.0"] >= 40)
        world.set_version(namespace, "1.1.0")
        rolled = world.wait_for(namespace, "RolledBack", lambda s: s.get("phase") == "RolledBack", timeout=120)

    (analysed,) = rolled["analysis"]
    failed = [float(m["value"]) for m in analysed["measurements"] if m["phase"] == "Failed"]
    assert analysed["metric"] == "live-accuracy"
    assert len(failed) == 1
    # Stable 0.95 less the candidate's 0.60; the counts Prometheus saw end mid-run, hence the margin.
    assert abs(failed[0] - 0.35) <= 0.1, analysed["measurements"]
    for words in ("metric live-accuracy failed", "failureCondition 'result > 0.05' held"):
        assert words in rolled["message"]
    assert (rolled["stableVersion"], rolled["rolledBackVersions"]) == ("1.0.0", ["1.1.0"])
    assert labelling.labelled["1.1.0"] >= analysis.LIVE_QUALITY_MIN_LABELS
    # A truth for the candidate posted once the router has dropped it finds only stable, which says so.
    gone = ("1.1.0", 404, "model 'iris' has no version '1.1.0'; served: 1.0.0")
    assert set(labelling.refused) <= {gone}, labelling.refused
