"""ModelDeployment: serve a model and move it between versions progressively, with automatic rollback."""

from __future__ import annotations

import datetime
from enum import StrEnum
from typing import Annotated, Final, Literal

import cel
from pydantic import AfterValidator, Field, StrictBool, StrictFloat, StrictInt

from kiln.api import base, common, trainingjob


def _check_cel_expression(expression: str) -> str:
    try:
        cel.compile(expression)
    except ValueError as error:
        raise ValueError(f"{expression!r} is not a valid CEL expression: {error}") from error
    return expression


CelExpression = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(_check_cel_expression)]
"""A CEL expression over `result`, the measured value (a number, or a list for several series)."""


class VersionPolicy(StrEnum):
    PIN = "Pin"
    LATEST_VALIDATED = "LatestValidated"
    PRODUCTION = "Production"


class ServerSettings(base.KilnModel):
    """How the model server runs."""

    image: str | None = Field(default=None, max_length=512)
    """The server image; Kiln's own kiln-server when unset."""
    port: StrictInt = Field(default=8080, ge=1, le=65535)
    """The port the server listens on."""
    max_batch_size: StrictInt = Field(default=64, ge=1, le=65536)
    """The most rows one inference request may carry."""
    allow_pickle: StrictBool = False
    """Let the server load pickle/joblib artifacts, which can run code when loaded."""
    env: list[common.EnvVar] = Field(default_factory=list, max_length=128)
    """Extra environment variables for the server."""


class Autoscaling(base.KilnModel):
    """A HorizontalPodAutoscaler for the serving pods."""

    min_replicas: StrictInt = Field(default=1, ge=1)
    """Fewest serving pods."""
    max_replicas: StrictInt = Field(ge=1)
    """Most serving pods."""
    target_cpu_utilization_percentage: StrictInt | None = Field(
        default=None, alias="targetCPUUtilizationPercentage", ge=1, le=100
    )
    """Average CPU utilization to aim for."""
    target_requests_per_second: StrictFloat | None = Field(default=None, gt=0)
    """Average requests per second per pod to aim for."""

    cel_rules = (
        base.Rule(
            "self.minReplicas <= self.maxReplicas",
            "minReplicas must not be greater than maxReplicas",
            field_path=".minReplicas",
        ),
        base.Rule(
            "has(self.targetCPUUtilizationPercentage) || has(self.targetRequestsPerSecond)",
            "set targetCPUUtilizationPercentage or targetRequestsPerSecond",
        ),
    )


class AnalysisRef(base.KilnModel):
    """Which analysis metrics to run, by name."""

    metrics: list[base.DNSLabel] = Field(default_factory=list, max_length=16)
    """Names from spec.analysis.metrics; every metric there when empty."""


class Pause(base.KilnModel):
    """Hold the rollout."""

    duration: base.Duration | None = None
    """How long to hold; until resumed (`kiln resume`, or spec.paused set false) when unset."""


class CanaryStep(base.KilnModel):
    """One step of a canary: exactly one of setWeight, pause or analysis."""

    set_weight: StrictInt | None = Field(default=None, ge=0, le=100)
    """Send this percentage of traffic to the candidate."""
    pause: Pause | None = None
    """Hold at the current weight."""
    analysis: AnalysisRef | None = None
    """Run analysis and go on only if it succeeds; roll back if it fails."""

    cel_rules = (
        base.Rule(
            "[has(self.setWeight), has(self.pause), has(self.analysis)].filter(x, x).size() == 1",
            "a step must set exactly one of setWeight, pause or analysis",
        ),
    )


class BackgroundAnalysis(AnalysisRef):
    """Analysis that runs through the whole canary, from a given step on."""

    starting_step: StrictInt = Field(default=0, ge=0)
    """The step index from which the background analysis runs."""


class Canary(base.KilnModel):
    """Shift traffic to the candidate in steps, analysing as it goes."""

    steps: list[CanaryStep] = Field(default_factory=list, max_length=32)
    """The steps, in order; after the last one the candidate is promoted to stable."""
    analysis: BackgroundAnalysis | None = None
    """Analysis that runs in the background while the steps proceed."""
    scale_down_delay_seconds: StrictInt = Field(default=30, ge=0, le=86400)
    """How long the old stable version keeps running after a promotion, so `kiln rollback` can
    switch back to it at once."""


class BlueGreen(base.KilnModel):
    """Run the candidate beside the stable version, then switch all traffic at once."""

    preview_replicas: StrictInt | None = Field(default=None, ge=1)
    """Replicas of the candidate before promotion; spec.replicas when unset."""
    auto_promotion: StrictBool = True
    """Promote without a person once pre-promotion analysis passes."""
    auto_promotion_seconds: StrictInt = Field(default=0, ge=0)
    """Wait this long after the candidate is ready before promoting automatically."""
    pre_promotion_analysis: AnalysisRef | None = None
    """Analysis against the preview before traffic switches."""
    post_promotion_analysis: AnalysisRef | None = None
    """Analysis after the switch; a failure switches traffic back."""
    scale_down_delay_seconds: StrictInt = Field(default=30, ge=0)
    """How long the old version keeps running after the switch, for a fast switch back."""


class Comparison(base.KilnModel):
    """How the shadow's answers are compared with the stable version's."""

    max_disagreement: StrictFloat = Field(default=0.05, ge=0, le=1)
    """The largest share of mirrored requests whose prediction may differ from stable's."""
    max_latency_ratio: StrictFloat | None = Field(default=None, gt=0)
    """The shadow's p99 latency may be at most this multiple of stable's."""
    tolerance: StrictFloat = Field(default=0.0001, ge=0)
    """Numeric outputs agree when they differ by at most this much; class outputs must match exactly."""
    interval: base.Duration = "10s"
    """How often the running comparison in status is brought up to date."""


class Shadow(base.KilnModel):
    """Mirror live traffic to the candidate, compare its answers, and never serve them."""

    mirror_percent: StrictInt = Field(default=100, ge=0, le=100)
    """The percentage of requests copied to the candidate."""
    duration: base.Duration = "10m"
    """How long to shadow before deciding."""
    comparison: Comparison = Field(default_factory=Comparison)
    """How the candidate's answers are judged against stable's."""
    analysis: AnalysisRef | None = None
    """Analysis metrics run during the shadow period."""
    auto_promotion: StrictBool = False
    """After a passing shadow period, shift all traffic to the candidate; without it the rollout
    waits for `kiln promote`."""
    then: Canary | None = None
    """After a passing shadow period, go live through these canary steps instead of switching at once."""


class Strategy(base.KilnModel):
    """How a new version replaces the stable one: at most one of canary, blueGreen or shadow.
    With none, the new version takes all traffic once it is ready."""

    canary: Canary | None = None
    """Progressive traffic shifting."""
    blue_green: BlueGreen | None = None
    """Side-by-side deployment with a switch."""
    shadow: Shadow | None = None
    """Mirrored traffic with comparison."""

    cel_rules = (
        base.Rule(
            "[has(self.canary), has(self.blueGreen), has(self.shadow)].filter(x, x).size() <= 1",
            "set at most one of canary, blueGreen or shadow",
        ),
    )


class TrafficProviderName(StrEnum):
    ROUTER = "router"
    GATEWAY_API = "gatewayAPI"
    REPLICAS = "replicas"


class ParentRef(base.KilnModel):
    """A Gateway the HTTPRoute attaches to."""

    name: str = Field(min_length=1, max_length=253)
    """The Gateway's name."""
    namespace: str | None = Field(default=None, max_length=63)
    """The Gateway's namespace; the deployment's own when unset."""
    section_name: str | None = Field(default=None, max_length=253)
    """A listener of the Gateway."""


class GatewayAPI(base.KilnModel):
    """Traffic through a Gateway API HTTPRoute (backendRefs weights, RequestMirror)."""

    http_route: str | None = Field(default=None, alias="httpRoute", max_length=253)
    """An existing HTTPRoute Kiln manages the weights of; Kiln creates one when unset."""
    parent_refs: list[ParentRef] = Field(default_factory=list, max_length=16)
    """The Gateways a route Kiln creates attaches to."""
    hostnames: list[str] = Field(default_factory=list, max_length=16)
    """Hostnames of a route Kiln creates."""

    cel_rules = (
        base.Rule(
            "has(self.httpRoute) || (has(self.parentRefs) && self.parentRefs.size() > 0)",
            "name an existing httpRoute, or give parentRefs for the route Kiln creates",
        ),
    )


class RouterSettings(base.KilnModel):
    """Kiln's own traffic router (kiln-router)."""

    replicas: StrictInt = Field(default=1, ge=1, le=32)
    """Router pods."""


class Traffic(base.KilnModel):
    """Who splits traffic between the versions."""

    provider: TrafficProviderName = TrafficProviderName.ROUTER
    """`router` (Kiln's own proxy: weights, header match, mirroring), `gatewayAPI`
    (an HTTPRoute's backendRefs) or `replicas` (weight by replica ratio, no mirroring)."""
    router: RouterSettings | None = None
    """Settings of the router provider."""
    gateway_api: GatewayAPI | None = Field(default=None, alias="gatewayAPI")
    """Settings of the gatewayAPI provider."""

    cel_rules = (
        base.Rule(
            "self.provider != 'gatewayAPI' || has(self.gatewayAPI)",
            "gatewayAPI settings are required with provider gatewayAPI",
            field_path=".gatewayAPI",
            reason="FieldValueRequired",
        ),
    )


class MetricProviderName(StrEnum):
    PROMETHEUS = "prometheus"
    WEB = "web"


class PrometheusSource(base.KilnModel):
    """A Prometheus server."""

    address: str = Field(min_length=1, max_length=2048, pattern=r"^https?://.+$")
    """The server's base URL (`http://prometheus.monitoring:9090`)."""


class WebSource(base.KilnModel):
    """Any HTTP endpoint that answers JSON."""

    url: str = Field(min_length=1, max_length=2048, pattern=r"^https?://.+$")
    """The URL; the same variables as a query may be used."""
    json_path: str = Field(default="$", max_length=1024)
    """Where the value is in the answer, as a JSONPath (`$.data.errorRate`)."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Request headers."""
    timeout_seconds: StrictInt = Field(default=10, ge=1, le=300)
    """How long to wait for the answer."""


class AnalysisMetric(base.KilnModel):
    """One measured metric and how to judge it.

    Each measurement is Successful, Failed, Inconclusive (neither condition held)
    or Error (the provider could not answer). Errors never promote.
    """

    name: base.DNSLabel
    """The metric's name, referred to by steps."""
    provider: MetricProviderName
    """Where measurements come from: `prometheus` or `web`."""
    query: str | None = Field(default=None, max_length=8192)
    """The PromQL query, a template: `{{model}}`, `{{namespace}}`, `{{deployment}}`, `{{stable}}`
    and `{{candidate}}` are replaced before it runs."""
    prometheus: PrometheusSource | None = None
    """The Prometheus server; the operator's default (`--prometheus-url`) when unset."""
    web: WebSource | None = None
    """The endpoint, for provider web."""
    interval: base.Duration = "30s"
    """Time between measurements."""
    count: StrictInt = Field(default=3, ge=1, le=1000)
    """How many measurements make a run."""
    initial_delay: base.Duration = "0s"
    """Wait this long before the first measurement."""
    success_condition: CelExpression | None = None
    """A CEL expression over `result` that holds when the measurement is good (`result <= 0.01`)."""
    failure_condition: CelExpression | None = None
    """A CEL expression over `result` that holds when the measurement is bad (`result > 0.05`)."""
    failure_limit: StrictInt = Field(default=0, ge=0)
    """More failed measurements than this fail the analysis (and roll back)."""
    inconclusive_limit: StrictInt = Field(default=0, ge=0)
    """More inconclusive measurements than this make the analysis Inconclusive (and pause)."""
    consecutive_error_limit: StrictInt = Field(default=4, ge=0)
    """More provider errors in a row than this make the analysis Inconclusive (and pause)."""

    cel_rules = (
        base.Rule(
            "has(self.successCondition) || has(self.failureCondition)",
            "set successCondition, failureCondition or both",
        ),
        base.Rule(
            "self.provider != 'prometheus' || has(self.query)",
            "query is required with provider prometheus",
            field_path=".query",
            reason="FieldValueRequired",
        ),
        base.Rule(
            "self.provider != 'web' || has(self.web)",
            "web is required with provider web",
            field_path=".web",
            reason="FieldValueRequired",
        ),
    )


class Analysis(base.KilnModel):
    """The metrics a rollout is judged by."""

    metrics: list[AnalysisMetric] = Field(default_factory=list, max_length=16)
    """The metrics, each with its own query and conditions."""

    cel_rules = (
        base.Rule(
            "!has(self.metrics) || self.metrics.all(m, self.metrics.exists_one(n, n.name == m.name))",
            "metric names must be unique",
            field_path=".metrics",
        ),
    )


class DriftMethod(StrEnum):
    PSI = "psi"
    KS = "ks"


DEFAULT_DRIFT_THRESHOLDS: Final = {DriftMethod.PSI: 0.2, DriftMethod.KS: 0.1}
"""The threshold each statistic is judged by when spec.monitoring.drift.threshold is unset.

PSI 0.2 is the level Evidently (and the credit-scoring practice PSI comes from) calls a
"significant" shift; 0.1 is its "moderate" one. Kiln picks 0.2 because what a detection starts is
a retraining, which costs a training run and a rollout: a moderate shift is worth a look, not a new
model. KS 0.1 is a tenth of the population's cumulative share moved at some value, well above
the sampling noise of the default minSamples (1.36/sqrt(500) = 0.06, the 95% critical distance)."""


class Drift(base.KilnModel):
    """Drift detection: live feature distributions against the ModelVersion's baseline, and the live
    prediction distribution against the one the stable version began with."""

    method: DriftMethod = DriftMethod.PSI
    """The statistic per feature: population stability index (`psi`) or the Kolmogorov-Smirnov
    distance (`ks`), both on the baseline's bins."""
    threshold: StrictFloat | None = Field(default=None, gt=0)
    """A feature whose statistic exceeds this has drifted; 0.2 for psi (Evidently's "significant"),
    0.1 for ks when unset."""
    prediction_threshold: StrictFloat = Field(default=0.2, gt=0)
    """The PSI of the predicted classes' shares, against the shares when drift monitoring of the
    stable version began, above which the predictions have drifted."""
    interval: base.Duration = "5m"
    """How often drift is computed; the operator looks at a steady deployment every 15 s, so no more
    often than that."""
    window: base.Duration = "30m"
    """The live data each check compares (kiln-server's histograms, increase() over this window);
    drift is detected once the threshold has been exceeded at every check for a whole window."""
    min_samples: StrictInt = Field(default=500, ge=1)
    """Fewest live samples in the window before drift is judged."""
    prometheus: PrometheusSource | None = None
    """The Prometheus server; the operator's default (`--prometheus-url`) when unset."""

    def effective_threshold(self) -> float:
        return self.threshold if self.threshold is not None else DEFAULT_DRIFT_THRESHOLDS[self.method]


CRON_PATTERN = (
    r"^(@(yearly|annually|monthly|weekly|daily|hourly)"
    r"|([0-9*/,?LW#-]+|[A-Za-z]{3})(\s+([0-9*/,?LW#-]+|[A-Za-z]{3}(-[A-Za-z]{3})?)){4})$"
)


class TriggerType(StrEnum):
    DRIFT = "Drift"
    SCHEDULE = "Schedule"
    DATA_VOLUME = "DataVolume"
    QUALITY_DROP = "QualityDrop"


_LABELLED = 'kiln_server_feedback_predictions_total{namespace="{{namespace}}",model="{{model}}",version="{{version}}"'
DEFAULT_QUALITY_QUERY: Final = f'sum(increase({_LABELLED},outcome="correct"}}[1h])) / sum(increase({_LABELLED}}}[1h]))'
"""What a QualityDrop trigger measures when it names no query: the stable version's live accuracy over
the last hour, from the ground truth clients post to kiln-server (`/v2/models/{name}/feedback`)."""


class RetrainingTrigger(base.KilnModel):
    """When to start a retraining TrainingJob."""

    type: TriggerType
    """`Drift` (drift detected), `Schedule` (a cron schedule), `DataVolume` (a query's value reached
    threshold, new labelled rows say) or `QualityDrop` (a query's value, live accuracy say, fell
    below threshold)."""
    name: base.DNSLabel | None = None
    """The trigger's name in status and Events; its type when unset."""
    schedule: str | None = Field(default=None, max_length=128, pattern=CRON_PATTERN)
    """A cron schedule in UTC (`0 3 * * 0`, `@daily`) for type Schedule."""
    query: str | None = Field(default=None, min_length=1, max_length=8192)
    """The PromQL of a DataVolume or QualityDrop trigger, a template: `{{namespace}}`, `{{model}}`,
    `{{deployment}}`, `{{version}}` (the stable one) and `{{since}}` (the time since the last
    retraining, or since monitoring began, as a PromQL duration: `3600s`) are replaced. QualityDrop
    defaults to the stable version's live accuracy over the last hour (kiln-server's
    `kiln_server_feedback_predictions_total`, correct over all)."""
    threshold: StrictFloat | None = None
    """DataVolume fires when the query's value is at least this; QualityDrop when it is below."""
    interval: base.Duration = "5m"
    """How often a DataVolume or QualityDrop query runs."""
    prometheus: PrometheusSource | None = None
    """The Prometheus server; the operator's default (`--prometheus-url`) when unset."""

    cel_rules = (
        base.Rule(
            "self.type != 'Schedule' || has(self.schedule)",
            "schedule is required for a Schedule trigger",
            field_path=".schedule",
            reason="FieldValueRequired",
        ),
        base.Rule(
            "self.type == 'Schedule' || !has(self.schedule)",
            "schedule applies only to a Schedule trigger",
            field_path=".schedule",
        ),
        base.Rule(
            "self.type != 'DataVolume' || has(self.query)",
            "query is required for a DataVolume trigger",
            field_path=".query",
            reason="FieldValueRequired",
        ),
        base.Rule(
            "!(self.type == 'DataVolume' || self.type == 'QualityDrop') || has(self.threshold)",
            "threshold is required for DataVolume and QualityDrop triggers",
            field_path=".threshold",
            reason="FieldValueRequired",
        ),
        base.Rule(
            "self.type == 'DataVolume' || self.type == 'QualityDrop' || !(has(self.query) || has(self.threshold))",
            "query and threshold apply only to DataVolume and QualityDrop triggers",
            field_path=".query",
        ),
    )

    @property
    def key(self) -> str:
        """The trigger's name, or its type."""
        return self.name or self.type.value


MAX_RETRAININGS_PER_DAY: Final = 20
"""The most retrainings a day spec.monitoring.retraining.maxPerDay may allow, and status keeps."""


class Retraining(base.KilnModel):
    """Closing the loop: a TrainingJob started from a template when a trigger fires, or when
    `kiln retrain` asks."""

    template: trainingjob.TrainingJobSpec
    """The spec of the TrainingJobs to create. Its output.modelName and output.version are replaced:
    each retraining registers the deployment's model at the next patch version after its highest."""
    triggers: list[RetrainingTrigger] = Field(default_factory=list, max_length=8)
    """What starts a retraining besides `kiln retrain`."""
    cooldown: base.Duration = "1h"
    """The least time between the start of one retraining and the next a trigger starts."""
    max_per_day: StrictInt = Field(default=3, ge=1, le=MAX_RETRAININGS_PER_DAY)
    """The most retrainings triggers start in any 24 hours."""

    cel_rules = (
        base.Rule(
            "has(self.template.output)",
            "template.output is required: a retraining registers a version",
            field_path=".template.output",
            reason="FieldValueRequired",
        ),
        base.Rule(
            "!has(self.triggers) || self.triggers.all(t, self.triggers.exists_one(u,"
            " (has(u.name) ? u.name : u.type) == (has(t.name) ? t.name : t.type)))",
            "triggers must have distinct names (a trigger without one is named by its type)",
            field_path=".triggers",
        ),
    )


class Monitoring(base.KilnModel):
    """Watching production once the rollout is done."""

    drift: Drift | None = None
    """Drift detection."""
    retraining: Retraining | None = None
    """Retraining when a trigger fires."""

    cel_rules = (
        base.Rule(
            "has(self.drift) || !has(self.retraining) || !has(self.retraining.triggers)"
            " || !self.retraining.triggers.exists(t, t.type == 'Drift')",
            "a Drift trigger needs spec.monitoring.drift",
            field_path=".retraining.triggers",
        ),
    )


def _names_defined_metrics(ref: str, guard: str) -> str:
    """CEL: the AnalysisRef at `ref` (absent unless `guard` holds) names only defined metrics."""
    defined = "has(self.analysis) && has(self.analysis.metrics) && self.analysis.metrics.exists(d, d.name == m)"
    return f"!has(self.strategy) || !({guard}) || !has({ref}.metrics) || {ref}.metrics.all(m, {defined})"


_ANALYSIS_REFERENCES = (
    (
        "canary.analysis",
        "has(self.strategy.canary) && has(self.strategy.canary.analysis)",
        "self.strategy.canary.analysis",
        "canary.analysis",
    ),
    (
        "blueGreen.prePromotionAnalysis",
        "has(self.strategy.blueGreen) && has(self.strategy.blueGreen.prePromotionAnalysis)",
        "self.strategy.blueGreen.prePromotionAnalysis",
        "prePromotionAnalysis",
    ),
    (
        "blueGreen.postPromotionAnalysis",
        "has(self.strategy.blueGreen) && has(self.strategy.blueGreen.postPromotionAnalysis)",
        "self.strategy.blueGreen.postPromotionAnalysis",
        "postPromotionAnalysis",
    ),
    (
        "shadow.analysis",
        "has(self.strategy.shadow) && has(self.strategy.shadow.analysis)",
        "self.strategy.shadow.analysis",
        "shadow.analysis",
    ),
)


class ModelDeploymentSpec(base.KilnModel):
    """Which model to serve, how, and how to move to a new version."""

    model: base.DNSLabel
    """The model to serve (a ModelVersion's modelName)."""
    version: base.SemVer | None = None
    """The version to serve, with versionPolicy Pin."""
    version_policy: VersionPolicy | None = None
    """How the version is chosen: `Pin` (spec.version), `LatestValidated` (the highest Validated
    version) or `Production` (the version in stage Production). Pin when version is set, otherwise
    Production."""
    replicas: StrictInt = Field(default=1, ge=0, le=1000)
    """Serving pods of the stable version (with autoscaling, minReplicas is that number instead)."""
    resources: common.ComputeResources = Field(default_factory=common.ComputeResources)
    """CPU, memory and GPUs for each serving pod."""
    server: ServerSettings = Field(default_factory=ServerSettings)
    """Model server settings."""
    autoscaling: Autoscaling | None = None
    """Scale the serving pods with load instead of a fixed count: every serving version gets a
    HorizontalPodAutoscaler, whose floor is the pods the rollout gives that version (minReplicas
    at full size, a canary's share of it) and whose ceiling is maxReplicas."""
    strategy: Strategy = Field(default_factory=Strategy)
    """How a new version replaces the stable one."""
    traffic: Traffic = Field(default_factory=Traffic)
    """Who splits the traffic."""
    analysis: Analysis = Field(default_factory=Analysis)
    """The metrics that decide promotion and rollback."""
    paused: StrictBool = False
    """Hold the rollout where it is."""
    progress_deadline_seconds: StrictInt = Field(default=600, ge=1)
    """How long a step may wait for its pods to be ready before the rollout is rolled back."""
    monitoring: Monitoring | None = None
    """Drift monitoring and retraining."""

    @property
    def full_size(self) -> int:
        """The pods a version has at full size: replicas, or the autoscaler's minReplicas, above
        which it scales with load."""
        return self.autoscaling.min_replicas if self.autoscaling is not None else self.replicas

    cel_rules = (
        base.Rule(
            "!has(self.autoscaling) || !has(self.traffic) || self.traffic.provider != 'replicas'",
            "traffic provider replicas splits traffic by pod counts, which an autoscaler would change",
            field_path=".autoscaling",
        ),
        base.Rule(
            "!has(self.versionPolicy) || (self.versionPolicy == 'Pin') == has(self.version)",
            "version must be set with versionPolicy Pin and only then",
            field_path=".version",
        ),
        base.Rule(
            "!has(self.strategy) || !has(self.strategy.shadow) || !has(self.traffic)"
            " || self.traffic.provider != 'replicas'",
            "the shadow strategy mirrors traffic, which traffic provider replicas cannot do",
            field_path=".traffic.provider",
        ),
        base.Rule(
            "!has(self.strategy) || !has(self.strategy.blueGreen) || !has(self.traffic)"
            " || self.traffic.provider != 'replicas'",
            "the blueGreen strategy keeps the preview out of live traffic, which traffic provider replicas cannot do",
            field_path=".traffic.provider",
        ),
        base.Rule(
            "!has(self.strategy) || !has(self.strategy.shadow) || !has(self.traffic)"
            " || self.traffic.provider != 'gatewayAPI' || has(self.strategy.shadow.analysis)",
            "traffic provider gatewayAPI mirrors but cannot compare the mirrored answers (the Gateway discards"
            " them): a shadow over it needs strategy.shadow.analysis to judge the candidate",
            field_path=".traffic.provider",
        ),
        base.Rule(
            "!has(self.strategy) || !has(self.strategy.canary) || !has(self.strategy.canary.steps)"
            " || self.strategy.canary.steps.all(s, !has(s.analysis) || !has(s.analysis.metrics)"
            " || s.analysis.metrics.all(m, has(self.analysis) && has(self.analysis.metrics)"
            " && self.analysis.metrics.exists(d, d.name == m)))",
            "every metric a canary step names must be defined in spec.analysis.metrics",
            field_path=".strategy.canary.steps",
        ),
        *(
            base.Rule(
                _names_defined_metrics(ref, guard),
                f"every metric {where} names must be defined in spec.analysis.metrics",
                field_path=f".strategy.{path}",
            )
            for path, guard, ref, where in _ANALYSIS_REFERENCES
        ),
    )


class ModelDeploymentPhase(StrEnum):
    PENDING = "Pending"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    HEALTHY = "Healthy"
    DEGRADED = "Degraded"
    ROLLED_BACK = "RolledBack"


class Weights(base.KilnModel):
    """The traffic split as last applied."""

    stable: StrictInt = Field(default=100, ge=0, le=100)
    """Percentage of traffic served by the stable version."""
    canary: StrictInt = Field(default=0, ge=0, le=100)
    """Percentage of traffic served by the candidate."""
    mirror: StrictInt = Field(default=0, ge=0, le=100)
    """Percentage of traffic copied to the candidate (shadow)."""


class MeasurementPhase(StrEnum):
    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"
    ERROR = "Error"


class Measurement(base.KilnModel):
    """One measurement of an analysis metric."""

    phase: MeasurementPhase
    """Successful, Failed, Inconclusive or Error."""
    value: str | None = None
    """The measured value, as text."""
    error: str | None = None
    """Why the provider could not answer."""
    time: datetime.datetime
    """When it was taken."""


class AnalysisPhase(StrEnum):
    RUNNING = "Running"
    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"


class AnalysisResult(base.KilnModel):
    """The state of one metric's analysis in the current rollout."""

    metric: str
    """The metric's name."""
    step: StrictInt | None = None
    """The canary step that ran it; unset for background analysis."""
    phase: AnalysisPhase = AnalysisPhase.RUNNING
    """Running, Successful, Failed or Inconclusive."""
    started: datetime.datetime | None = None
    """When the analysis began; its first measurement comes initialDelay later."""
    successful: StrictInt = 0
    """Successful measurements."""
    failed: StrictInt = 0
    """Failed measurements."""
    inconclusive: StrictInt = 0
    """Inconclusive measurements."""
    errors: StrictInt = 0
    """Provider errors."""
    consecutive_errors: StrictInt = 0
    """Provider errors since the last answer."""
    measurements: list[Measurement] = Field(default_factory=list)
    """The latest measurements, bounded."""
    message: str | None = None
    """Why the analysis ended as it did."""


class FeatureDrift(base.KilnModel):
    """One feature's drift at the last check."""

    name: str
    """The feature, as the baseline names it."""
    score: StrictFloat
    """The statistic (spec.monitoring.drift.method) against the baseline's bins."""


class PredictionDrift(base.KilnModel):
    """The predicted classes' shares against those the stable version began with."""

    reference_time: datetime.datetime
    """The end of the window the reference shares were counted in: the first check of the stable
    version with minSamples."""
    score: StrictFloat | None = None
    """The PSI of the live shares against the reference's; unset until a later check."""


class DriftCheck(base.KilnModel):
    """One drift check, as status.drift.history keeps it."""

    time: datetime.datetime
    """When it ran."""
    score: StrictFloat | None = None
    """The largest statistic of any feature; unset when too few samples or no answer."""
    samples: StrictInt = 0
    """Live samples in the window."""
    drifted: StrictBool = False
    """Whether a feature or the predictions exceeded their threshold."""


DRIFT_HISTORY_LIMIT: Final = 20
"""Drift checks kept in status.drift.history, newest last."""


class DriftStatus(base.KilnModel):
    """The last drift computation, and the ones before it."""

    version: str | None = None
    """The stable version whose baseline and traffic were compared."""
    drifted: StrictBool = False
    """Whether a feature or the predictions exceeded their threshold at the last check."""
    score: StrictFloat | None = None
    """The largest statistic of any feature at the last check."""
    feature: str | None = None
    """The feature with that statistic."""
    threshold: StrictFloat | None = None
    """The threshold the features were judged by."""
    features: list[FeatureDrift] = Field(default_factory=list, max_length=1024)
    """The statistic per feature at the last check."""
    predictions: PredictionDrift | None = None
    """Drift of the predicted classes."""
    samples: StrictInt = 0
    """Live samples the statistics were computed from."""
    since: datetime.datetime | None = None
    """The first check of the current run of checks over a threshold; drift is detected one
    window after it."""
    last_checked: datetime.datetime | None = None
    """When drift was last computed."""
    message: str | None = None
    """What the last check found, or why it could not judge."""
    history: list[DriftCheck] = Field(default_factory=list, max_length=DRIFT_HISTORY_LIMIT)
    """The last checks, newest last."""


class RetrainingRun(base.KilnModel):
    """One retraining Kiln started."""

    training_job: str
    """The TrainingJob's name."""
    version: str
    """The version it registers."""
    trigger: str
    """The trigger that fired (`manual` for `kiln retrain`)."""
    reason: str
    """Why: the drift values, the schedule tick, the measured volume."""
    time: datetime.datetime
    """When it was started."""


class TriggerState(base.KilnModel):
    """What a trigger last saw."""

    trigger: str
    """The trigger's name (or type)."""
    since: datetime.datetime
    """When Kiln began watching it; a schedule's first tick is the first one after."""
    last_checked: datetime.datetime | None = None
    """When its query last ran (DataVolume, QualityDrop) or its schedule was last looked at."""
    last_tick: datetime.datetime | None = None
    """The last schedule tick handled (Schedule)."""
    value: StrictFloat | None = None
    """The query's last value."""
    message: str | None = None
    """What it last saw, or why it could not."""


class SkippedTrigger(base.KilnModel):
    """A trigger that fired but started nothing."""

    trigger: str
    """The trigger's name."""
    reason: str
    """RetrainingInFlight, Cooldown or DailyCap."""
    message: str
    """Why, for people."""
    time: datetime.datetime
    """When."""


class RetrainingStatus(base.KilnModel):
    """Retrainings Kiln started, what the triggers saw, and the last trigger skipped."""

    training_job: str | None = None
    """The last TrainingJob started."""
    reason: str | None = None
    """Why it was started."""
    time: datetime.datetime | None = None
    """When it was started."""
    runs: list[RetrainingRun] = Field(default_factory=list, max_length=MAX_RETRAININGS_PER_DAY)
    """The last retrainings, newest last (enough to count a day's against maxPerDay)."""
    triggers: list[TriggerState] = Field(default_factory=list, max_length=8)
    """Each trigger's last observation."""
    skipped: SkippedTrigger | None = None
    """The last trigger that fired but started nothing, and why."""
    handled_request: str | None = None
    """The id of the last retrain-request annotation handled."""


RETRAINING_FOR_LABEL: Final = f"{base.GROUP}/retraining-for"
"""The label on a TrainingJob a retraining started: the ModelDeployment it retrains for (not
kiln.dev/modeldeployment, which selects serving objects)."""
RETRAINING_TRIGGER_LABEL: Final = f"{base.GROUP}/retraining-trigger"
"""The label on a retraining TrainingJob: the trigger that started it (`manual` for `kiln retrain`)."""
RETRAINING_REASON_ANNOTATION: Final = f"{base.GROUP}/retraining-reason"
"""The annotation on a retraining TrainingJob: why it was started (drift values, schedule tick, volume)."""
RETRAINED_FROM_ANNOTATION: Final = f"{base.GROUP}/retrained-from"
"""The annotation on a retraining TrainingJob: the stable version it is to replace."""
MANUAL_TRIGGER: Final = "manual"
"""The trigger name of a retraining `kiln retrain` asked for."""

RETRAIN_REQUEST_ANNOTATION: Final = f"{base.GROUP}/retrain-request"
"""The annotation `kiln retrain` writes: a JSON RetrainRequest, handled once (status.retraining.handledRequest
records its id)."""


class RetrainRequest(base.KilnModel):
    """A person's request to retrain now, carried in the retrain-request annotation. It starts a
    retraining unless one is in flight; cooldown and maxPerDay hold back triggers, not people."""

    id: str = Field(min_length=1, max_length=64)
    """Unique per request, so a request is handled once."""
    user: str = Field(default="", max_length=256)
    """Who asked, as the API server authenticated them."""
    time: datetime.datetime
    """When it was asked."""
    reason: str = Field(default="", max_length=1024)
    """Why, in the asker's words."""


class RolloutOutcome(StrEnum):
    DEPLOYED = "Deployed"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    ABORTED = "Aborted"
    SUPERSEDED = "Superseded"
    REFUSED = "Refused"
    DISCARDED = "Discarded"


HISTORY_LIMIT = 20
"""Rollouts kept in status.history, newest last."""


class RolloutRecord(base.KilnModel):
    """One rollout: which version replaced which, when, and how it ended."""

    version: str
    """The version rolled out."""
    previous_version: str | None = None
    """The stable version it was to replace; unset for the first deployment."""
    start_time: datetime.datetime
    """When the rollout began."""
    end_time: datetime.datetime | None = None
    """When it ended; unset while it runs."""
    outcome: RolloutOutcome | None = None
    """Deployed, Promoted, RolledBack, Aborted, Superseded, Refused or Discarded (a shadow that did
    not pass); unset while it runs."""
    reason: str | None = None
    """Why it ended as it did."""


class RetiringVersion(base.KilnModel):
    """A former stable version kept running for a while after a promotion."""

    version: str
    """The version."""
    since: datetime.datetime
    """When it stopped serving; it is scaled down spec.strategy.canary.scaleDownDelaySeconds later."""


ROLLOUT_ACTION_ANNOTATION = f"{base.GROUP}/rollout-action"
"""The annotation `kiln promote`, `kiln abort`, `kiln resume` and `kiln rollback` write: a JSON
RolloutAction, handled once (status.handledAction records its id)."""


class RolloutActionName(StrEnum):
    PROMOTE = "promote"
    PROMOTE_FULL = "promote-full"
    ABORT = "abort"
    RESUME = "resume"
    ROLLBACK = "rollback"
    RETRY = "retry"


class RolloutAction(base.KilnModel):
    """A person's request to move a rollout, carried in the rollout-action annotation."""

    action: RolloutActionName
    """promote (skip the current step), promote-full (skip every remaining step), abort, resume,
    rollback (back to the previous stable version) or retry (roll a rolled-back version out again)."""
    id: str = Field(min_length=1, max_length=64)
    """Unique per request, so a request is handled once."""
    user: str = Field(default="", max_length=256)
    """Who asked, as the API server authenticated them."""
    time: datetime.datetime
    """When it was asked."""


class ShadowPhase(StrEnum):
    SHADOWING = "Shadowing"
    PASSED = "Passed"
    CANARY = "Canary"
    PROMOTING = "Promoting"


class ShadowStatus(base.KilnModel):
    """The running comparison of the shadow's answers with stable's."""

    phase: ShadowPhase = ShadowPhase.SHADOWING
    """Shadowing, Passed (waiting for promotion), Canary (going live by steps) or Promoting."""
    started: datetime.datetime | None = None
    """When mirroring began; the shadow period ends spec.strategy.shadow.duration later."""
    compared: StrictInt = 0
    """Mirrored requests whose answers were compared."""
    agreed: StrictInt = 0
    """Compared requests on which the shadow's prediction matched stable's."""
    disagreed: StrictInt = 0
    """Compared requests on which it did not."""
    errors: StrictInt = 0
    """Mirrored requests the shadow failed to answer."""
    dropped: StrictInt = 0
    """Mirrored requests dropped so that the live request was never slowed."""
    agreement: StrictFloat | None = None
    """agreed / compared."""
    latency_ratio: StrictFloat | None = None
    """The shadow's p99 latency over stable's, on the compared requests."""
    last_updated: datetime.datetime | None = None
    """When the figures were last read."""
    message: str | None = None
    """Why the comparison could not be read, when it could not."""


class ModelDeploymentStatus(base.KilnModel):
    """What the operator observed of the rollout."""

    phase: ModelDeploymentPhase = ModelDeploymentPhase.PENDING
    """Pending, Progressing, Paused, Healthy, Degraded or RolledBack."""
    message: str | None = None
    """Why the deployment is in its phase."""
    observed_generation: StrictInt | None = None
    """The metadata.generation this status reflects."""
    conditions: list[base.Condition] = Field(default_factory=list)
    """Ready, Progressing, Available, Paused."""
    stable_version: str | None = None
    """The version serving (most) traffic."""
    candidate_version: str | None = None
    """The version being rolled out, if any."""
    current_step_index: StrictInt | None = None
    """The canary step the rollout is at."""
    pause_start_time: datetime.datetime | None = None
    """When the current pause began."""
    weights: Weights = Field(default_factory=Weights)
    """The traffic split as last applied."""
    analysis: list[AnalysisResult] = Field(default_factory=list)
    """Analysis of the current rollout."""
    rolled_back_versions: list[str] = Field(default_factory=list)
    """Versions rolled back, which the version policy skips until spec changes."""
    rolled_back_for: str | None = None
    """The version selection (model, policy and version) rolledBackVersions applies to; a spec
    that selects differently clears the list."""
    step_start_time: datetime.datetime | None = None
    """When the current step (or the wait for the candidate's pods) began."""
    retiring: list[RetiringVersion] = Field(default_factory=list)
    """Former stable versions still running for a fast rollback."""
    history: list[RolloutRecord] = Field(default_factory=list, max_length=HISTORY_LIMIT)
    """The last rollouts, newest last: which version served when."""
    handled_action: str | None = None
    """The id of the last rollout-action annotation handled."""
    url: str | None = None
    """The address clients send inference requests to."""
    shadow: ShadowStatus | None = None
    """The shadow comparison of the current rollout (strategy shadow)."""
    direct_promotion: StrictBool = False
    """The current rollout goes straight to promotion whatever the strategy: a rollback to a
    previous version that no longer runs."""
    ready_replicas: StrictInt = 0
    """Serving pods ready across versions."""
    drift: DriftStatus | None = None
    """Drift of the stable version's live traffic from its baseline."""
    retraining: RetrainingStatus | None = None
    """Retrainings started and the triggers' state."""


class ModelDeployment(base.KilnModel):
    """Serves a model and rolls new versions out progressively."""

    api_version: Literal["kiln.dev/v1alpha1"] = base.API_VERSION
    kind: Literal["ModelDeployment"] = "ModelDeployment"
    metadata: base.ObjectMeta = Field(default_factory=base.ObjectMeta)
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus | None = None
