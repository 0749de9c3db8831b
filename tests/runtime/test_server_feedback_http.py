"""Ground truth posted to a real kiln-server: joined to the predictions it served, counted as live
accuracy (a classifier) or absolute error (a regressor), with late, duplicate and unknown ids
answered and counted apart."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from conftest import Iris
from server_process import RunningServer, kiln_server, model_version, write_skops
from sklearn.linear_model import LinearRegression, LogisticRegression
from test_server_http import SIGNATURE, metric, output, tensor

WINDOW_ROWS = 20


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, iris: Iris, iris_model: LogisticRegression
) -> Iterator[RunningServer]:
    """iris 1.0.0 (a classifier) and petal 1.0.0 (a regressor), remembering WINDOW_ROWS rows."""
    directory = tmp_path_factory.mktemp("feedback")
    regressor = LinearRegression().fit(iris.features[:, :3], iris.features[:, 3])
    versions = [
        model_version(
            directory / "iris.skops", write_skops(iris_model, directory / "iris.skops"), extra={"signature": SIGNATURE}
        ),
        model_version(directory / "petal.skops", write_skops(regressor, directory / "petal.skops"), name="petal"),
    ]
    with kiln_server(directory, versions, "--feedback-max-predictions", str(WINDOW_ROWS)) as running:
        running.wait_ready()
        yield running


def post(server: RunningServer, body: object, path: str = "/v2/models/iris/feedback") -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=10)


def counted(server: RunningServer, name: str, **labels: str) -> float:
    try:
        return metric(server.get("/metrics").text, name, **labels)
    except AssertionError:
        return 0.0


def predicted(server: RunningServer, request_id: str, rows: np.ndarray, model: str = "iris") -> np.ndarray:
    response = server.infer({"id": request_id, "inputs": [tensor(rows)]}, f"/v2/models/{model}/infer")
    assert response.status_code == 200, response.text
    return output(response, "predict").reshape(-1)


def test_labels_fed_back_count_correct_and_incorrect_predictions(server: RunningServer, iris: Iris) -> None:
    rows = iris.features[[0, 50, 100]]
    predictions = predicted(server, "acc-1", rows)
    truth = [int(predictions[0]), int(predictions[1]), (int(predictions[2]) + 1) % 3]
    correct_before = counted(server, "kiln_server_feedback_predictions_total", model="iris", outcome="correct")
    incorrect_before = counted(server, "kiln_server_feedback_predictions_total", model="iris", outcome="incorrect")

    response = post(server, {"id": "acc-1", "truth": truth})

    assert response.status_code == 200, response.text
    assert response.json() == {
        "id": "acc-1",
        "model_name": "iris",
        "model_version": "1.0.0",
        "outcome": "joined",
        "rows": 3,
        "correct": 2,
    }
    labels = {"model": "iris", "version": "1.0.0"}
    assert counted(server, "kiln_server_feedback_predictions_total", **labels, outcome="correct") == correct_before + 2
    assert (
        counted(server, "kiln_server_feedback_predictions_total", **labels, outcome="incorrect") == incorrect_before + 1
    )


def test_a_second_truth_is_a_duplicate_409_and_counted(server: RunningServer, iris: Iris) -> None:
    predictions = predicted(server, "dup-1", iris.features[:1])
    assert post(server, {"id": "dup-1", "truth": int(predictions[0])}).status_code == 200
    before = counted(server, "kiln_server_feedback_requests_total", model="iris", outcome="duplicate")

    again = post(server, {"id": "dup-1", "truth": int(predictions[0])})

    assert again.status_code == 409
    assert again.json()["outcome"] == "duplicate"
    assert "already has its truth" in again.json()["error"]
    assert (
        counted(server, "kiln_server_feedback_requests_total", model="iris", version="1.0.0", outcome="duplicate")
        == before + 1
    )


def test_an_unknown_id_is_404_and_counted(server: RunningServer) -> None:
    before = counted(server, "kiln_server_feedback_requests_total", model="iris", outcome="unknown")

    response = post(server, {"id": "never-served", "truth": 1})

    assert response.status_code == 404
    assert "no prediction for request 'never-served'" in response.json()["error"]
    assert (
        counted(server, "kiln_server_feedback_requests_total", model="iris", version="", outcome="unknown")
        == before + 1
    )


def test_a_prediction_pushed_out_of_the_window_is_late_410(server: RunningServer, iris: Iris) -> None:
    predicted(server, "late-1", iris.features[:1])
    predicted(server, "flood", iris.features[:WINDOW_ROWS])
    before = counted(server, "kiln_server_feedback_requests_total", model="iris", outcome="late")

    response = post(server, {"id": "late-1", "truth": 0})

    assert response.status_code == 410
    assert "newer predictions pushed it out" in response.json()["error"]
    assert (
        counted(server, "kiln_server_feedback_requests_total", model="iris", version="1.0.0", outcome="late")
        == before + 1
    )


def test_a_truth_that_does_not_fit_is_400_and_leaves_the_prediction_to_join(server: RunningServer, iris: Iris) -> None:
    predictions = predicted(server, "fit-1", iris.features[:2])

    wrong = post(server, {"id": "fit-1", "truth": [0]})
    right = post(server, {"id": "fit-1", "truth": predictions.tolist()})

    assert wrong.status_code == 400
    assert "'truth' has 1 value(s) but the request predicted 2" in wrong.json()["error"]
    assert (right.status_code, right.json()["correct"]) == (200, 2)


def test_the_versioned_path_joins_only_what_that_version_served(server: RunningServer, iris: Iris) -> None:
    predictions = predicted(server, "ver-1", iris.features[:1])

    other = post(server, {"id": "ver-1", "truth": 0}, "/v2/models/iris/versions/9.9.9/feedback")
    own = post(server, {"id": "ver-1", "truth": int(predictions[0])}, "/v2/models/iris/versions/1.0.0/feedback")

    assert other.status_code == 404
    assert "no version '9.9.9'" in other.json()["error"]
    assert own.status_code == 200


def test_a_request_without_an_id_is_not_remembered(server: RunningServer, iris: Iris) -> None:
    remembered = counted(server, "kiln_server_feedback_remembered_predictions")

    response = server.infer({"inputs": [tensor(iris.features[:3])]})

    assert response.status_code == 200
    assert counted(server, "kiln_server_feedback_remembered_predictions") == remembered


def test_a_regressor_exports_its_absolute_error(server: RunningServer, iris: Iris) -> None:
    rows = iris.features[:2, :3]
    predictions = predicted(server, "reg-1", rows, model="petal")
    truth = [float(predictions[0]) + 0.5, float(predictions[1]) - 1.5]

    response = post(server, {"id": "reg-1", "truth": truth}, "/v2/models/petal/feedback")

    assert response.status_code == 200, response.text
    assert response.json()["meanAbsoluteError"] == pytest.approx(1.0)
    labels = {"model": "petal", "version": "1.0.0"}
    assert counted(server, "kiln_server_feedback_absolute_error_sum", **labels) == pytest.approx(2.0)
    assert counted(server, "kiln_server_feedback_absolute_error_count", **labels) == 2
    assert counted(server, "kiln_server_feedback_absolute_error_bucket", **labels, le="0.5") == 1


def test_feedback_takes_post_only(server: RunningServer) -> None:
    assert server.get("/v2/models/iris/feedback").status_code == 405
