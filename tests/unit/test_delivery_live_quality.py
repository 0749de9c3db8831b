"""The ready-made live-quality metrics: their queries render with a rollout's variables, and their
conditions pass a candidate as accurate as stable and fail one clearly worse."""

from __future__ import annotations

import datetime

import pytest

from kiln.api import modeldeployment
from kiln.delivery import analysis

NOW = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)
VARIABLES = {"model": "iris", "namespace": "ml", "deployment": "iris", "stable": "1.0.0", "candidate": "1.1.0"}
Measured = modeldeployment.MeasurementPhase


@pytest.mark.parametrize("name", ["live-accuracy", "live-absolute-error"])
def test_a_live_quality_template_compares_the_candidate_with_stable(name: str) -> None:
    request = analysis.request_for(analysis.TEMPLATES[name], 1, VARIABLES, "http://prometheus:9090")

    assert request.error is None
    assert 'version="1.1.0"' in request.expression
    assert 'version="1.0.0"' in request.expression
    assert f">= {analysis.LIVE_QUALITY_MIN_LABELS}" in request.expression
    assert "{{" not in request.expression


@pytest.mark.parametrize(
    ("name", "value", "phase"),
    [
        ("live-accuracy", 0.0, Measured.SUCCESSFUL),
        ("live-accuracy", -0.1, Measured.SUCCESSFUL),
        ("live-accuracy", 0.035, Measured.INCONCLUSIVE),
        ("live-accuracy", 0.35, Measured.FAILED),
        ("live-absolute-error", 1.0, Measured.SUCCESSFUL),
        ("live-absolute-error", 1.5, Measured.FAILED),
    ],
)
def test_a_live_quality_template_judges_the_gap(name: str, value: float, phase: Measured) -> None:
    judged = analysis.judge(analysis.TEMPLATES[name], analysis.Answer(value=value), NOW)

    assert judged.phase is phase


def test_too_few_labels_give_nothing_to_judge() -> None:
    judged = analysis.judge(analysis.LIVE_ACCURACY, analysis.Answer(value=None), NOW)

    assert judged.phase is Measured.INCONCLUSIVE


def test_the_templates_are_valid_analysis_metrics() -> None:
    for template in analysis.TEMPLATES.values():
        document = template.model_dump(by_alias=True, exclude_none=True, mode="json")
        assert modeldeployment.AnalysisMetric.model_validate(document) == template
