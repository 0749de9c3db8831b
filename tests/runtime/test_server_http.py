"""kiln-server over real HTTP: a real process on loopback serving real scikit-learn models."""

from __future__ import annotations

import json
import operator
import pathlib
import re
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import joblib
import numpy as np
import pytest
from conftest import Iris
from polling import eventually
from server_process import FEATURES, RunningServer, baseline, kiln_server, model_version, sha256, write_skops
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

SIGNATURE = {
    "inputs": [{"name": "features", "datatype": "FP64", "shape": [-1, 4]}],
    "featureNames": FEATURES,
}


def tensor(rows: np.ndarray[Any, Any], name: str = "features") -> dict[str, Any]:
    return {"name": name, "shape": list(rows.shape), "datatype": "FP64", "data": rows.reshape(-1).tolist()}


def output(response: httpx.Response, name: str) -> np.ndarray[Any, Any]:
    found = [out for out in response.json()["outputs"] if out["name"] == name]
    assert len(found) == 1, response.json()
    return np.asarray(found[0]["data"]).reshape(found[0]["shape"])


def metric(text: str, name: str, **labels: str) -> float:
    """The value of the one sample of `name` whose labels include `labels`."""
    for line in text.splitlines():
        match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            return float(match.group(3))
    raise AssertionError(f"no sample {name}{labels} in /metrics")


MAX_ROWS = 200


@pytest.fixture(scope="module")
def iris_server(
    tmp_path_factory: pytest.TempPathFactory, iris: Iris, iris_model: LogisticRegression
) -> Iterator[RunningServer]:
    directory = tmp_path_factory.mktemp("iris")
    digest = write_skops(iris_model, directory / "model.skops")
    extra = {"signature": SIGNATURE, "baseline": baseline(iris.features)}
    versions = [model_version(directory / "model.skops", digest, extra=extra)]
    with kiln_server(
        directory, versions, "--max-body-bytes", str(1 << 20), "--max-batch-size", str(MAX_ROWS)
    ) as server:
        server.wait_ready()
        yield server


def test_predictions_over_http_equal_the_model_in_process(
    iris_server: RunningServer, iris: Iris, iris_model: LogisticRegression
) -> None:
    response = iris_server.infer({"id": "batch-1", "inputs": [tensor(iris.features)]})

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("iris", "1.0.0", "batch-1")
    assert [(out["name"], out["datatype"], out["shape"]) for out in body["outputs"]] == [
        ("predict", "INT64", [150]),
        ("predict_proba", "FP64", [150, 3]),
    ]
    np.testing.assert_array_equal(output(response, "predict"), iris_model.predict(iris.features))
    np.testing.assert_array_equal(output(response, "predict_proba"), iris_model.predict_proba(iris.features))


def test_one_row_nested_data_and_a_chosen_output(
    iris_server: RunningServer, iris: Iris, iris_model: LogisticRegression
) -> None:
    row = iris.features[120:121]
    body = {
        "inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": row.tolist()}],
        "outputs": [{"name": "predict_proba"}],
        "parameters": {"content_type": "np"},
    }

    response = iris_server.infer(body)

    assert response.status_code == 200, response.text
    assert [out["name"] for out in response.json()["outputs"]] == ["predict_proba"]
    expected = iris_model.predict_proba(row.astype(np.float32).astype(np.float64))
    np.testing.assert_array_equal(output(response, "predict_proba"), expected)


def test_a_request_of_more_rows_than_the_batch_limit_is_refused_naming_the_limit(
    iris_server: RunningServer, iris: Iris
) -> None:
    rows = np.resize(iris.features, (MAX_ROWS + 1, 4))

    refused = iris_server.infer({"inputs": [tensor(rows)]})
    at_limit = iris_server.infer({"inputs": [tensor(rows[:MAX_ROWS])]})

    assert refused.status_code == 400
    assert refused.json()["error"].startswith(
        f"the request has {MAX_ROWS + 1} rows; this server takes at most {MAX_ROWS}"
    )
    assert at_limit.status_code == 200
    assert len(output(at_limit, "predict")) == MAX_ROWS


def test_server_and_model_metadata(iris_server: RunningServer) -> None:
    assert iris_server.get("/v2/health/live").json() == {"live": True}
    ready = iris_server.get("/v2/health/ready")
    assert (ready.status_code, ready.json()["ready"]) == (200, True)
    assert iris_server.get("/v2").json()["name"] == "kiln-server"
    assert iris_server.get("/v2/models/iris/ready").json()["ready"] is True
    metadata = iris_server.get("/v2/models/iris/versions/1.0.0").json()
    assert metadata == {
        "name": "iris",
        "versions": ["1.0.0"],
        "platform": "sklearn",
        "inputs": [{"name": "features", "datatype": "FP64", "shape": [-1, 4]}],
        "outputs": [
            {"name": "predict", "datatype": "INT64", "shape": [-1]},
            {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]},
        ],
    }


ROW = [5.1, 3.5, 1.4, 0.2]


def good(**changes: Any) -> dict[str, Any]:
    return {"name": "features", "shape": [1, 4], "datatype": "FP64", "data": ROW, **changes}


INFER = "/v2/models/iris/infer"


@dataclass(frozen=True)
class Malformed:
    id: str
    status: int
    message: str
    """A part of the error message."""
    body: bytes | None = None
    method: str = "POST"
    path: str = INFER
    headers: dict[str, str] = field(default_factory=dict)


def inputs(*tensors: dict[str, Any], **document: Any) -> bytes:
    return json.dumps({"inputs": list(tensors), **document}).encode()


MALFORMED = [
    Malformed("not-json", 400, "not valid JSON", b"{inputs: ["),
    Malformed("json-array", 400, "JSON object", b"[1, 2]"),
    Malformed("no-inputs", 400, "'inputs'", b"{}"),
    Malformed("empty-inputs", 400, "'inputs'", inputs()),
    Malformed("shape-count", 400, "holds 8", inputs(good(shape=[2, 4]))),
    Malformed("too-few-features", 400, "the model takes 4", inputs(good(shape=[2, 2]))),
    Malformed("three-dimensions", 400, "shape", inputs(good(shape=[1, 2, 2]))),
    Malformed("negative-shape", 400, "non-negative", inputs(good(shape=[-1, 4]))),
    Malformed("unknown-datatype", 400, "not one of", inputs(good(datatype="FLOAT"))),
    Malformed("bytes-datatype", 400, "BYTES", inputs(good(datatype="BYTES"))),
    Malformed("strings-in-fp64", 400, "strings", inputs(good(data=["a", "b", "c", "d"]))),
    Malformed("fractions-in-int32", 400, "INT32", inputs(good(datatype="INT32"))),
    Malformed("uint8-overflow", 400, "range of UINT8", inputs(good(datatype="UINT8", data=[1, 2, 300, 4]))),
    Malformed("fp16-overflow", 400, "not finite", inputs(good(datatype="FP16", data=[1, 2, 1e6, 4]))),
    Malformed("ragged", 400, "ragged", inputs(good(data=[[1, 2], [3]]))),
    Malformed("null-in-data", 400, "data holds", inputs(good(data=[1, None, 3, 4]))),
    Malformed("wrong-input-name", 400, "[features]", inputs(good(name="x"))),
    Malformed("unknown-output", 400, "logits", inputs(good(), outputs=[{"name": "logits"}])),
    Malformed("id-not-string", 400, "'id'", inputs(good(), id=7)),
    Malformed("no-rows", 400, "no rows", inputs(good(shape=[0, 4], data=[]))),
    Malformed("unknown-model", 404, "'roses'", inputs(good()), path="/v2/models/roses/infer"),
    Malformed("unknown-version", 404, "9.9.9", inputs(good()), path="/v2/models/iris/versions/9.9.9/infer"),
    Malformed("unknown-path", 404, "no endpoint", method="GET", path="/v3/anything"),
    Malformed("get-on-infer", 405, "takes POST", method="GET"),
    Malformed(
        "form-body", 415, "application/json", b"a=1", headers={"Content-Type": "application/x-www-form-urlencoded"}
    ),
    Malformed("oversize", 413, "at most", b"[" + b"1.0," * 300_000 + b"1.0]"),
]


@pytest.mark.parametrize("case", MALFORMED, ids=lambda case: case.id)
def test_a_malformed_request_gets_a_4xx_with_a_message_and_the_server_answers_on(
    iris_server: RunningServer, case: Malformed
) -> None:
    url = iris_server.url + case.path
    response = httpx.request(case.method, url, content=case.body, headers=case.headers, timeout=10)

    assert response.status_code == case.status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert case.message in response.json()["error"]
    assert iris_server.infer({"inputs": [good()]}).status_code == 200


@pytest.fixture
def metered_server(tmp_path: pathlib.Path, iris: Iris, iris_model: LogisticRegression) -> Iterator[RunningServer]:
    digest = write_skops(iris_model, tmp_path / "model.skops")
    extra = {"signature": SIGNATURE, "baseline": baseline(iris.features)}
    with kiln_server(tmp_path, [model_version(tmp_path / "model.skops", digest, extra=extra)]) as server:
        server.wait_ready()
        yield server


def test_metrics_count_requests_latencies_features_and_classes(
    metered_server: RunningServer, iris: Iris, iris_model: LogisticRegression
) -> None:
    batches = [iris.features[start : start + 10] for start in range(0, 150, 10)]
    for batch in batches:
        assert metered_server.infer({"inputs": [tensor(batch)]}).status_code == 200
    assert metered_server.infer({"inputs": [good(datatype="BYTES")]}).status_code == 400
    assert metered_server.infer({"inputs": [good()]}, path="/v2/models/roses/infer").status_code == 404

    text = metered_server.get("/metrics").text

    iris_labels = {"model": "iris", "version": "1.0.0"}
    assert metric(text, "kiln_server_requests_total", code="200", **iris_labels) == len(batches)
    assert metric(text, "kiln_server_requests_total", code="400", **iris_labels) == 1
    assert metric(text, "kiln_server_requests_total", code="404", model="", version="") == 1
    assert metric(text, "kiln_server_request_duration_seconds_count", **iris_labels) == len(batches) + 1
    assert metric(text, "kiln_server_request_duration_seconds_bucket", le="0.0001", **iris_labels) >= 0
    assert metric(text, "kiln_server_requests_in_flight") == 0
    assert metric(text, "kiln_server_model_ready", **iris_labels) == 1
    for feature in baseline(iris.features)["features"]:
        column = iris.features[:, FEATURES.index(feature["name"])]
        for edge in feature["bins"]:
            at_or_below = metric(text, "kiln_server_feature_values_bucket", feature=feature["name"], le=repr(edge))
            assert at_or_below == np.count_nonzero(column <= edge)
        assert metric(text, "kiln_server_feature_values_count", feature=feature["name"]) == 150
    labels, counts = np.unique(iris_model.predict(iris.features), return_counts=True)
    for label, count in zip(labels, counts, strict=True):
        assert metric(text, "kiln_server_predictions_total", **{"class": str(label)}, **iris_labels) == count


def test_unversioned_requests_go_to_the_newest_version_in_semver_order(
    tmp_path: pathlib.Path, iris_model: LogisticRegression, iris_tree: Any, iris: Iris
) -> None:
    linear = write_skops(iris_model, tmp_path / "linear.skops")
    tree = write_skops(iris_tree, tmp_path / "tree.skops")
    versions = [
        model_version(tmp_path / "tree.skops", tree, version="1.10.0"),
        model_version(tmp_path / "linear.skops", linear, version="1.9.0"),
        model_version(tmp_path / "linear.skops", linear, version="1.10.0-rc.1"),
    ]
    with kiln_server(tmp_path, versions, through_env=True) as server:
        server.wait_ready()
        row = {"inputs": [{"name": "any", "shape": [4], "datatype": "FP64", "data": iris.features[0].tolist()}]}

        newest = server.infer(row)
        pinned = server.infer(row, path="/v2/models/iris/versions/1.9.0/infer")

        assert newest.json()["model_version"] == "1.10.0"
        assert output(newest, "predict").tolist() == iris_tree.predict(iris.features[:1]).tolist() == ["setosa"]
        assert newest.json()["outputs"][0]["datatype"] == "BYTES"
        assert pinned.json()["model_version"] == "1.9.0"
        assert server.get("/v2/models/iris").json()["versions"] == ["1.10.0", "1.10.0-rc.1", "1.9.0"]


def test_a_digest_mismatch_never_gets_ready_and_says_why(
    tmp_path: pathlib.Path, iris_model: LogisticRegression
) -> None:
    actual = write_skops(iris_model, tmp_path / "model.skops")
    pinned = "0" * 64
    with kiln_server(tmp_path, [model_version(tmp_path / "model.skops", pinned)]) as server:
        eventually(lambda: "will not be served" in server.logs(), "the load to fail")

        ready = server.get("/v2/health/ready")
        model_ready = server.get("/v2/models/iris/ready")
        infer = server.infer({"inputs": [good(name="input-0")]})

        assert ready.status_code == 503
        assert pinned in ready.json()["reason"]
        assert actual in ready.json()["reason"]
        assert (model_ready.status_code, model_ready.json()["state"]) == (503, "Failed")
        assert infer.status_code == 503
        assert pinned in server.logs()
        assert actual in server.logs()


def test_an_untrusted_type_in_a_skops_file_is_refused(tmp_path: pathlib.Path, iris: Iris) -> None:
    pipeline = make_pipeline(FunctionTransformer(operator.neg), LogisticRegression(max_iter=1000))
    digest = write_skops(pipeline.fit(iris.features, iris.labels), tmp_path / "model.skops")
    versions = [model_version(tmp_path / "model.skops", digest)]
    with kiln_server(tmp_path, versions) as refusing:
        eventually(lambda: "will not be served" in refusing.logs(), "the load to fail")

        ready = refusing.get("/v2/health/ready")

        assert ready.status_code == 503
        assert "not trusted: _operator.neg" in ready.json()["reason"]
    with kiln_server(tmp_path, versions, "--trusted-types", "_operator.neg") as trusting:
        trusting.wait_ready()


def test_joblib_is_refused_without_the_opt_in_and_served_with_it(
    tmp_path: pathlib.Path, iris: Iris, iris_model: LogisticRegression
) -> None:
    joblib.dump(iris_model, tmp_path / "model.joblib")
    versions = [model_version(tmp_path / "model.joblib", sha256(tmp_path / "model.joblib"), artifact_format="joblib")]
    with kiln_server(tmp_path, versions) as refusing:
        eventually(lambda: "will not be served" in refusing.logs(), "the load to fail")

        assert "--allow-unsafe-formats" in refusing.get("/v2/health/ready").json()["reason"]
    with kiln_server(tmp_path, versions, env={"KILN_ALLOW_UNSAFE_FORMATS": "true"}) as allowing:
        allowing.wait_ready()
        response = allowing.infer({"inputs": [good(name="input-0")]})

        assert output(response, "predict").tolist() == iris_model.predict([ROW]).tolist()


def test_fault_injection_fails_the_share_of_requests_it_is_told_to(
    tmp_path: pathlib.Path, iris_model: LogisticRegression
) -> None:
    digest = write_skops(iris_model, tmp_path / "model.skops")
    faults = json.dumps({"errorRate": 1.0, "errorStatus": 503})
    with kiln_server(
        tmp_path, [model_version(tmp_path / "model.skops", digest)], env={"KILN_FAULT_INJECTION": faults}
    ) as server:
        server.wait_ready()

        responses = [server.infer({"inputs": [good(name="input-0")]}) for _ in range(5)]

        assert {response.status_code for response in responses} == {503}
        assert "fault injected" in responses[0].json()["error"]
        text = server.get("/metrics").text
        assert metric(text, "kiln_server_requests_total", code="503", model="iris") == 5


def test_sigterm_turns_readiness_off_drains_the_request_in_flight_and_exits_0(
    tmp_path: pathlib.Path, iris_model: LogisticRegression
) -> None:
    digest = write_skops(iris_model, tmp_path / "model.skops")
    faults = json.dumps({"delayRate": 1.0, "delaySeconds": 3})
    versions = [model_version(tmp_path / "model.skops", digest)]
    with kiln_server(
        tmp_path, versions, "--drain-delay", "1", env={"KILN_FAULT_INJECTION": faults}, through_env=True
    ) as server:
        server.wait_ready()
        answers: list[httpx.Response] = []
        slow = threading.Thread(target=lambda: answers.append(server.infer({"inputs": [good(name="input-0")]})))
        slow.start()
        eventually(
            lambda: metric(server.get("/metrics").text, "kiln_server_requests_in_flight") == 1, "the request in flight"
        )

        server.process.send_signal(signal.SIGTERM)

        eventually(lambda: server.get("/v2/health/ready").status_code == 503, "readiness to turn off")
        assert server.get("/v2/health/ready").json()["reason"] == "shutting down"
        slow.join(timeout=20)
        assert [answer.status_code for answer in answers] == [200]
        assert server.process.wait(timeout=20) == 0
