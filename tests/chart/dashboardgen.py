"""The chart's Grafana dashboard, `charts/kiln/dashboards/kiln.json`, built with grafana-foundation-sdk.

The operator's own metrics (kiln.controllers.metrics) and the serving runtimes' (kiln_router_requests_total,
kiln_server_requests_total); the chart ships the JSON in a ConfigMap for Grafana's dashboard sidecar
(`monitoring.dashboard.enabled`). It lives with the chart tests because it needs the dev extra's
grafana-foundation-sdk, which the operator itself never imports; test_dashboard.py compares the committed
file with a fresh build.

    python tests/chart/dashboardgen.py [--check]
"""

from __future__ import annotations

import json
import pathlib
import sys

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as models

ROOT = pathlib.Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "charts" / "kiln" / "dashboards" / "kiln.json"
UID = "kiln-operator"
DATASOURCE = models.DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"


def _query(expr: str, legend: str) -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).datasource(DATASOURCE)


def _series(title: str, description: str, unit: str, *queries: prometheus.Dataquery) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .min(0)
        .height(8)
        .span(12)
    )
    for index, query in enumerate(queries):
        panel = panel.with_target(query.ref_id(chr(ord("A") + index)))  # Grafana wants one refId per target
    return panel


def _error_rate(metric: str) -> str:
    errors = f'sum by (version) (rate({metric}{{code=~"5.."}}[{RATE}]))'
    return f"{errors} / sum by (version) (rate({metric}[{RATE}]))"


def build() -> models.Dashboard:
    operator = [
        _series(
            "Reconciles by kind and result",
            "kiln_reconciles_total: success, conflict (retried at once) or error.",
            "ops",
            _query(f"sum by (kind, result) (rate(kiln_reconciles_total[{RATE}]))", "{{kind}} {{result}}"),
        ),
        _series(
            "Reconcile duration p99",
            "The 99th percentile of kiln_reconcile_duration_seconds, by kind.",
            "s",
            _query(
                f"histogram_quantile(0.99, sum by (kind, le) (rate(kiln_reconcile_duration_seconds_bucket[{RATE}])))",
                "{{kind}}",
            ),
        ),
        _series(
            "Rollouts by outcome",
            "Finished ModelDeployment rollouts (kiln_rollouts_total) in each interval.",
            "short",
            _query(f"sum by (outcome) (increase(kiln_rollouts_total[{RATE}]))", "{{outcome}}"),
        ),
        _series(
            "Analysis measurements by phase",
            "kiln_analysis_measurements_total: Successful, Failed, Inconclusive or Error.",
            "short",
            _query(f"sum by (metric_phase) (increase(kiln_analysis_measurements_total[{RATE}]))", "{{metric_phase}}"),
        ),
        _series(
            "Training jobs by phase",
            "kiln_training_jobs: TrainingJobs by phase, as the operator last saw them.",
            "short",
            _query("max by (phase) (kiln_training_jobs)", "{{phase}}"),
        ),
    ]
    demand = (
        stat.Panel()
        .title("Queued GPU demand")
        .description("kiln_queued_gpu_demand: GPUs the Queued TrainingJobs ask for.")
        .datasource(DATASOURCE)
        .unit("short")
        .height(8)
        .span(12)
        .with_target(_query("max(kiln_queued_gpu_demand)", "GPUs"))
    )
    serving = [
        _series(
            "Router requests by version",
            "kiln_router_requests_total: requests the routers proxied, by version.",
            "reqps",
            _query(f"sum by (version) (rate(kiln_router_requests_total[{RATE}]))", "{{version}}"),
        ),
        _series(
            "Router error rate by version",
            "The share of routed requests answered 5xx, by version.",
            "percentunit",
            _query(_error_rate("kiln_router_requests_total"), "{{version}}"),
        ),
        _series(
            "Server requests by version",
            "kiln_server_requests_total: inference requests the model servers answered, by version.",
            "reqps",
            _query(f"sum by (version) (rate(kiln_server_requests_total[{RATE}]))", "{{version}}"),
        ),
        _series(
            "Server error rate by version",
            "The share of inference requests answered 5xx, by version.",
            "percentunit",
            _query(_error_rate("kiln_server_requests_total"), "{{version}}"),
        ),
    ]
    models = [
        _series(
            "Server p99 latency by version",
            "The 99th percentile of kiln_server_request_duration_seconds, by model version.",
            "s",
            _query(
                "histogram_quantile(0.99, sum by (version, le) "
                f"(rate(kiln_server_request_duration_seconds_bucket[{RATE}])))",
                "{{version}}",
            ),
        ),
        _series(
            "Traffic weights",
            "kiln_router_weight: the share of traffic each variant gets, over time.",
            "percent",
            _query("max by (variant) (kiln_router_weight)", "{{variant}}"),
        ),
        _series(
            "Drift by feature",
            "kiln_drift_score: each feature's drift statistic (PSI or KS) at the last check, by deployment.",
            "none",
            _query("max by (deployment, feature) (kiln_drift_score)", "{{deployment}} {{feature}}"),
        ),
        _series(
            "Live accuracy by version",
            "Correct over all predictions whose ground truth was posted to /feedback, over the last hour.",
            "percentunit",
            _query(
                'sum by (version) (increase(kiln_server_feedback_predictions_total{outcome="correct"}[1h]))'
                " / sum by (version) (increase(kiln_server_feedback_predictions_total[1h]))",
                "{{version}}",
            ),
        ),
        _series(
            "Retrainings",
            "kiln_retrainings_total by trigger, and kiln_retrainings_skipped_total by why they were held back.",
            "short",
            _query(f"sum by (trigger) (increase(kiln_retrainings_total[{RATE}]))", "started {{trigger}}"),
            _query(f"sum by (reason) (increase(kiln_retrainings_skipped_total[{RATE}]))", "skipped {{reason}}"),
        ),
    ]
    builder = (
        dashboard.Dashboard("Kiln")
        .uid(UID)
        .description("The Kiln operator's reconciles, rollouts, analysis and training queue, and model serving.")
        .tags(["kiln", "generated"])
        .editable()
        .refresh("30s")
        .time("now-6h", "now")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_row(dashboard.Row("Operator"))
    )
    for panel in [*operator, demand]:
        builder = builder.with_panel(panel)
    builder = builder.with_row(dashboard.Row("Serving"))
    for panel in serving:
        builder = builder.with_panel(panel)
    builder = builder.with_row(dashboard.Row("Models: latency, weights, drift, live accuracy, retraining"))
    for panel in models:
        builder = builder.with_panel(panel)
    return builder.build()


def render() -> str:
    return json.dumps(build(), cls=JSONEncoder, sort_keys=True, indent=2) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not DASHBOARD.exists() or DASHBOARD.read_text() != text:
            print(f"{DASHBOARD.relative_to(ROOT)} is stale; run `python tests/chart/dashboardgen.py`", file=sys.stderr)
            return 1
        print(f"{DASHBOARD.relative_to(ROOT)} is up to date")
        return 0
    DASHBOARD.parent.mkdir(parents=True, exist_ok=True)
    DASHBOARD.write_text(text)
    print(f"wrote {DASHBOARD.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
