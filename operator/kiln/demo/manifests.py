"""What the demo applies: the dev cluster's nodes, the TrainingJobs of each version and the
ModelDeployment, with steps and intervals short enough for the whole lifecycle to take minutes on
a laptop (a real cluster would analyse over minutes, not seconds)."""

from __future__ import annotations

from typing import Any

from kiln.api import base

MODEL = "iris"
DEPLOYMENT = "iris"
NAMESPACE = "default"
FIRST, CANDIDATE, BAD = "1.0.0", "1.1.0", "1.2.0"
"""The versions trained by hand: the first served, a good canary, a fault-injected one."""
FAULT = '{"errorRate": 0.5}'
"""kiln-server answers half of the bad version's requests with a 500."""
SHIFTED_DATASET = "data/iris-shifted.csv"
"""Where on the model store claim the demo puts the shifted data retraining learns from."""
STORE_CLAIM = "kiln-models"

CLUSTER: dict[str, Any] = {
    "nodePools": [
        {"name": "cpu", "count": 2, "cpu": "4", "memory": "16Gi"},
        {
            "name": "gpu",
            "count": 1,
            "cpu": "16",
            "memory": "64Gi",
            "gpus": 2,
            "gpuProduct": "NVIDIA-A100-SXM4-80GB",
            "taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}],
        },
    ],
    "prometheus": True,
}
"""Two CPU nodes and one simulated GPU node (tainted, as GPU pools are); the demo's pods need no GPU."""

GATES = [{"metric": "accuracy", "min": 0.9}]


def training_job(version: str, regularization: float) -> dict[str, Any]:
    """A TrainingJob fitting a LogisticRegression on the iris data scikit-learn ships; its
    ModelVersion is Validated only if the held-out accuracy passes the gate."""
    return {
        "apiVersion": base.API_VERSION,
        "kind": "TrainingJob",
        "metadata": {"name": f"{MODEL}-{version.replace('.', '-')}"},
        "spec": {
            "sklearn": {
                "estimator": "sklearn.linear_model.LogisticRegression",
                "params": {"C": regularization, "max_iter": 500},
                "dataset": {"builtin": "iris"},
                "testSize": 0.3,
                "randomSeed": 7,
            },
            "resources": {"cpu": "500m", "memory": "512Mi"},
            "output": {"modelName": MODEL, "version": version, "gates": GATES},
        },
    }


def _error_rate_query(window: str) -> str:
    selector = 'namespace="{{namespace}}",model="{{model}}",version="{{candidate}}"'
    return (
        f'sum(increase(kiln_server_requests_total{{{selector},code=~"5.."}}[{window}]))'
        f" / sum(increase(kiln_server_requests_total{{{selector}}}[{window}]))"
    )


def model_deployment() -> dict[str, Any]:
    """iris through kiln-router: canary 20% → analysis → 50% → analysis → 100%, the candidate's
    error rate measured in Prometheus every 3 s; drift (PSI over 0.5) checked every 5 s over 15 s while steady,
    and a detected drift retrains on the shifted data the demo puts on the model store."""
    return {
        "apiVersion": base.API_VERSION,
        "kind": "ModelDeployment",
        "metadata": {"name": DEPLOYMENT},
        "spec": {
            "model": MODEL,
            "versionPolicy": "Pin",
            "version": FIRST,
            "replicas": 1,
            "resources": {"cpu": "250m", "memory": "256Mi"},
            "strategy": {
                "canary": {
                    "steps": [
                        {"setWeight": 20},
                        {"analysis": {}},
                        {"setWeight": 50},
                        {"analysis": {}},
                        {"setWeight": 100},
                    ],
                    "scaleDownDelaySeconds": 10,
                }
            },
            "traffic": {"provider": "router", "router": {"replicas": 1}},
            "analysis": {
                "metrics": [
                    {
                        "name": "error-rate",
                        "provider": "prometheus",
                        "query": _error_rate_query("10s"),
                        "interval": "3s",
                        "initialDelay": "3s",
                        "count": 2,
                        "successCondition": "result <= 0.05",
                        "failureCondition": "result > 0.2",
                        "failureLimit": 0,
                        # A new pod is scraped a second or two after it starts; until then no answer.
                        "inconclusiveLimit": 5,
                    }
                ]
            },
            "progressDeadlineSeconds": 120,
            "monitoring": {
                # A few hundred flowers make a noisy histogram (PSI up to 0.3 on unshifted traffic
                # here); the shifted traffic scores far above 0.5.
                "drift": {"method": "psi", "threshold": 0.5, "interval": "5s", "window": "15s", "minSamples": 300},
                "retraining": {
                    "cooldown": "10m",
                    "triggers": [{"type": "Drift"}],
                    "template": {
                        "sklearn": {
                            "estimator": "sklearn.linear_model.LogisticRegression",
                            "params": {"max_iter": 500},
                            "dataset": {"uri": f"pvc://{STORE_CLAIM}/{SHIFTED_DATASET}"},
                            "targetColumn": "target",
                            "testSize": 0.3,
                            "randomSeed": 7,
                        },
                        "resources": {"cpu": "500m", "memory": "512Mi"},
                        "output": {"modelName": MODEL, "version": "0.0.0", "gates": GATES},
                    },
                },
            },
        },
    }
