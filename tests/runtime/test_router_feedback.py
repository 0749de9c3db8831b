"""Ground truth through kiln-router reaches the variant that made the prediction: a path naming a
version goes to the variant serving it, the x-kiln-variant header still wins, and an unversioned
/feedback is refused while two variants could have served it."""

from __future__ import annotations

import pathlib

import httpx
from test_router_http import BODY, INFER, Upstreams, configuration, kiln_router, upstreams

__all__ = ["upstreams"]  # the module-scoped fixture, shared with test_router_http


def served(client: httpx.Client, request_id: str) -> tuple[str, str, int]:
    """(variant, version, predicted class) of one inference request with `request_id`."""
    answer = client.post(INFER, json={**BODY, "id": request_id})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return answer.headers["x-kiln-variant"], body["model_version"], body["outputs"][0]["data"][0]


def test_feedback_naming_the_version_reaches_the_variant_that_served_it(
    upstreams: Upstreams, tmp_path: pathlib.Path
) -> None:
    with (
        kiln_router(tmp_path, configuration(upstreams, stable=50, candidate=50)) as router,
        httpx.Client(base_url=router.url, timeout=10) as client,
    ):
        answers = []
        for position in range(12):
            variant, version, predicted = served(client, f"fb-{position}")
            feedback = client.post(
                f"/v2/models/iris/versions/{version}/feedback", json={"id": f"fb-{position}", "truth": predicted}
            )
            answers.append((variant, feedback.status_code, feedback.headers.get("x-kiln-variant")))

        assert {status for _, status, _ in answers} == {200}, answers
        assert all(variant == answered for variant, _, answered in answers)
        assert {variant for variant, _, _ in answers} == {"stable", "candidate"}


def test_feedback_with_the_variant_header_goes_where_the_header_says(
    upstreams: Upstreams, tmp_path: pathlib.Path
) -> None:
    with (
        kiln_router(tmp_path, configuration(upstreams, stable=90, candidate=10)) as router,
        httpx.Client(base_url=router.url, timeout=10) as client,
    ):
        variant, _, predicted = served(client, "hdr-1")

        feedback = client.post(
            "/v2/models/iris/feedback", json={"id": "hdr-1", "truth": predicted}, headers={"x-kiln-variant": variant}
        )

        assert feedback.status_code == 200, feedback.text


def test_unaddressed_feedback_is_refused_while_two_variants_serve(upstreams: Upstreams, tmp_path: pathlib.Path) -> None:
    with (
        kiln_router(tmp_path, configuration(upstreams, stable=90, candidate=10)) as router,
        httpx.Client(base_url=router.url, timeout=10) as client,
    ):
        refused = client.post("/v2/models/iris/feedback", json={"id": "any", "truth": 0})

        router.reload({"variants": {"stable": upstreams.variants()["stable"]}, "weights": {"stable": 100}})
        _, _, predicted = served(client, "one-1")
        accepted = client.post("/v2/models/iris/feedback", json={"id": "one-1", "truth": predicted})

    assert refused.status_code == 400
    assert "/v2/models/{name}/versions/{model_version}/feedback" in refused.json()["error"]
    assert accepted.status_code == 200, accepted.text
