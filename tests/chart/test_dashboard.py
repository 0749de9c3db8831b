"""The Grafana dashboard: charts/kiln/dashboards/kiln.json is what dashboardgen.py builds, it asks for
the operator's and the runtimes' metrics, and the chart ships it in a ConfigMap for Grafana's sidecar."""

from __future__ import annotations

import json

import chartgen
import dashboardgen


def test_the_committed_dashboard_is_generated() -> None:
    assert dashboardgen.DASHBOARD.read_text() == dashboardgen.render(), "run `python tests/chart/dashboardgen.py`"


def test_the_dashboard_charts_the_operator_and_serving_metrics() -> None:
    board = json.loads(dashboardgen.render())
    exprs = " ".join(target["expr"] for panel in board["panels"] for target in panel.get("targets") or [])
    for metric in (
        "kiln_reconciles_total",
        "kiln_reconcile_duration_seconds_bucket",
        "kiln_rollouts_total",
        "kiln_analysis_measurements_total",
        "kiln_training_jobs",
        "kiln_queued_gpu_demand",
        "kiln_router_requests_total",
        "kiln_server_requests_total",
        "kiln_server_request_duration_seconds_bucket",
        "kiln_router_weight",
        "kiln_drift_score",
        "kiln_server_feedback_predictions_total",
        "kiln_retrainings_total",
        "kiln_retrainings_skipped_total",
    ):
        assert metric in exprs, metric
    assert board["uid"] == dashboardgen.UID
    assert [v["name"] for v in board["templating"]["list"]] == ["datasource"]


def test_the_chart_ships_the_dashboard_for_the_grafana_sidecar() -> None:
    values = {"monitoring": {"dashboard": {"enabled": True, "namespace": "grafana", "labels": {"team": "ml"}}}}
    (config_map,) = [obj for obj in chartgen.render(values) if obj["kind"] == "ConfigMap"]
    assert config_map["metadata"]["namespace"] == "grafana"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["labels"]["team"] == "ml"
    assert json.loads(config_map["data"]["kiln.json"]) == json.loads(dashboardgen.DASHBOARD.read_text())


def test_the_dashboard_is_off_by_default() -> None:
    assert not [obj for obj in chartgen.render({}) if obj["kind"] == "ConfigMap"]
